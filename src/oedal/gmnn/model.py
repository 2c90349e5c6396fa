"""The Gaussian-moment neural network (GM-NN; DESIGN §4; Zaverkin & Kästner 2020, 2021).

E_i = σ_{Z_i} (w · h_i + b) + μ_{Z_i},  E = Σ_i E_i,  F = −∂E/∂R (autograd).

h_i is the last hidden layer of an MLP on the Gaussian moments of atom i; ``output`` is the
linear layer (w, b) whose weights are the OED parameters (DESIGN §6). σ and μ are per species,
initialised by least squares on the training energies (:meth:`GMNN.init_scale_shift`) and
trained with the rest. Per-atom quantities use the model dtype (float32 by default); μ and the
totals are float64, so a total of 10⁴ eV keeps the digits that finite differences need.
"""

from __future__ import annotations

import io
import logging
import pickle
import re
from pathlib import Path
from typing import Callable, NamedTuple, Sequence

import numpy as np
import torch
from torch import nn

from oedal import __version__
from oedal.data.structures import element_counts
from oedal.gmnn.batching import Batch, BatchLoader
from oedal.gmnn.descriptors import GaussianMoments
from oedal.errors import InputError, SettingsError
from oedal.files import atomic_path
from oedal.settings import ModelSettings

log = logging.getLogger(__name__)
MODEL_FORMAT = "oedal-gmnn-1"
_DTYPES = {"float32": torch.float32, "float64": torch.float64}
_ACT = {"silu": nn.SiLU, "tanh": nn.Tanh}


def _silu_grad(z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(z·s, s·(1 + z·(1 − s))) with s = sigmoid(z): SiLU and its derivative."""
    s = torch.sigmoid(z)
    return z * s, s * (1.0 + z * (1.0 - s))


def _tanh_grad(z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(tanh z, 1 − tanh² z)."""
    t = torch.tanh(z)
    return t, 1.0 - t * t


_ACT_GRAD = {"silu": _silu_grad, "tanh": _tanh_grad}


class Readout(NamedTuple):
    """What the output-layer sensitivities (QS1, QS2; DESIGN §6) need of the model.

    h_i = a(W_L a(⋯ a(W_1 D_i + b_1) ⋯) + b_L) with the same activation a after every linear
    layer, and E_i = σ_{Z_i} (w·h_i + b) + μ_{Z_i}: the OED parameters are w (d,). σ per atom is
    :meth:`GMNN.atomic_scale`; ∂h/∂D is the chain of W_k and a'(z_k), with a' in closed form
    (:meth:`act_grad`)."""

    layers: tuple[nn.Linear, ...]  # W_k (out, in), b_k in the model dtype, in order; each followed by a
    activation: str  # "silu" | "tanh"
    d: int  # width of h: the number of OED parameters

    def act_grad(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(a(z), a'(z)), both shaped as z."""
        return _ACT_GRAD[self.activation](z)


class Evaluation(NamedTuple):
    """What :meth:`GMNN.evaluate` returns for a batch."""

    energy: torch.Tensor  # (n_structures,) float64 eV
    forces: torch.Tensor  # (n_atoms, 3) eV/Å, model dtype
    virial: torch.Tensor | None  # (n_structures, 3, 3) float64 eV: ∂E/∂ε (stress = virial / volume)
    sensitivities: torch.Tensor | None  # (n_structures, d) model dtype: g = Σ_i σ_i h_i (QS1)
    bias: "BiasTerms | None" = None  # the bias's own terms, when one was given (not in energy, forces, virial)


class BiasTerms(NamedTuple):
    """A bias energy's part of an :meth:`GMNN.evaluate` (apart from the model's)."""

    energy: torch.Tensor  # (n_structures,) float64 eV
    forces: torch.Tensor  # (n_atoms, 3) eV/Å, model dtype: −∂E_bias/∂R
    virial: torch.Tensor | None  # (n_structures, 3, 3) float64 eV: ∂E_bias/∂ε


class GMNN(nn.Module):
    """GM-sNN of DESIGN §4; the contract is in docs/interfaces.md."""

    def __init__(self, settings: ModelSettings, species: Sequence[int]):
        super().__init__()
        self.settings = settings
        self.species = sorted(int(z) for z in species)
        if len(set(self.species)) != len(self.species) or not self.species:
            raise InputError(f"model species must be distinct and non-empty, got {list(species)}")
        self.dtype = _DTYPES[settings.dtype]
        self.cutoff = settings.descriptor.r_cut
        n_spec = len(self.species)
        self.descriptor = GaussianMoments(settings.descriptor, n_spec, self.dtype)
        layers: list[nn.Module] = []
        width = self.descriptor.n_features
        for h in settings.hidden:
            lin = nn.Linear(width, h, dtype=self.dtype)
            nn.init.normal_(lin.weight, std=1.0 / width**0.5)
            nn.init.zeros_(lin.bias)
            layers += [lin, _ACT[settings.activation]()]
            width = h
        self.mlp = nn.Sequential(*layers)
        self.d = width
        self.output = nn.Linear(self.d, 1, dtype=self.dtype)
        nn.init.normal_(self.output.weight, std=1.0 / self.d**0.5)
        nn.init.zeros_(self.output.bias)
        self.scale = nn.Parameter(torch.ones(n_spec, dtype=self.dtype))  # σ_Z (eV)
        self.shift = nn.Parameter(torch.zeros(n_spec, dtype=torch.float64))  # μ_Z (eV), float64

    # ---- batches of structures for this model ----------------------------------------------------
    @property
    def device(self) -> torch.device:
        """Where the model's weights are (its batches are made there)."""
        return self.shift.device

    def loader(self, structures, batch_size: int, *, shuffle: bool = False, seed: int = 0,
               dtype: torch.dtype | None = None, source: str = "structures") -> BatchLoader:
        """Batches of ``structures`` for this model: its cutoff and species, on its device, positions in its
        dtype (or ``dtype``); neighbour lists computed once (oedal.gmnn.batching.BatchLoader)."""
        return BatchLoader(structures, self.cutoff, self.species, batch_size, shuffle=shuffle, seed=seed,
                           device=self.device, dtype=dtype or self.dtype, source=source)

    def batch(self, structures, dtype: torch.dtype | None = None) -> Batch:
        """All of ``structures`` as one batch for this model (:meth:`loader`)."""
        loader = self.loader(structures, max(1, len(structures.n_atoms)), dtype=dtype)
        return loader.batch(np.arange(loader.n_structures))

    # ---- the contract -----------------------------------------------------------------------
    def atomic_features(self, batch: Batch, displacements: torch.Tensor | None = None) -> torch.Tensor:
        """h (n_atoms, d): last hidden layer. Pure in ``displacements (n_pairs, 3)`` Å (jvp/vmap-safe)."""
        if displacements is None:
            displacements = batch.displacements()
        g = self.descriptor(displacements.to(self.dtype), batch.species, batch.pair_i, batch.pair_j,
                            batch.species.shape[0])
        return self.mlp(g)

    def predict_features(self, batch: Batch) -> torch.Tensor:
        """h (n_atoms, d) as :meth:`atomic_features`, without derivatives: the descriptor's fastest
        route (GaussianMoments.inference_features: the numba kernel on a CPU)."""
        with torch.no_grad():
            g = self.descriptor.inference_features(batch.displacements(), batch.species, batch.pair_i, batch.pair_j,
                                                   batch.species.shape[0])
            return self.mlp(g)

    def readout(self) -> Readout:
        """The MLP as QS2 sees it (:class:`Readout`)."""
        layers = tuple(layer for layer in self.mlp if isinstance(layer, nn.Linear))
        return Readout(layers, self.settings.activation, self.d)

    def atomic_scale(self, batch: Batch) -> torch.Tensor:
        """σ_{Z_i} (n_atoms,)."""
        return self.scale[batch.species]

    def atomic_energies(self, batch: Batch, displacements: torch.Tensor | None = None) -> torch.Tensor:
        """E_i = σ_Z (w·h_i + b) + μ_Z, (n_atoms,) float64 eV."""
        out = self.output(self.atomic_features(batch, displacements))[:, 0]
        return (self.atomic_scale(batch) * out).to(torch.float64) + self.shift[batch.species]

    def _total(self, batch: Batch, displacements: torch.Tensor | None) -> torch.Tensor:
        e_i = self.atomic_energies(batch, displacements)
        return e_i.new_zeros(batch.n_structures).index_add(0, batch.structure, e_i)

    def energy(self, batch: Batch) -> torch.Tensor:
        """Total energies (n_structures,) float64 eV."""
        return self._total(batch, None)

    def energy_and_forces(self, batch: Batch, create_graph: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """(energy (n_structures,) float64 eV, forces (n_atoms, 3) eV/Å in the model dtype)."""
        disp = batch.displacements().detach().to(self.dtype).requires_grad_(True)
        self.descriptor.first_order_only = not create_graph
        try:
            with torch.enable_grad():
                energy = self._total(batch, disp)
                (grad,) = torch.autograd.grad(energy.sum(), disp, create_graph=create_graph)
        finally:
            self.descriptor.first_order_only = False
        return energy, pair_forces(batch, grad)

    def evaluate(self, batch: Batch, *, stress: bool = False, sensitivities: bool = False,
                 bias: Callable[[torch.Tensor], torch.Tensor] | None = None) -> "Evaluation":
        """Energies and forces, and on request the virials and the QS1 sensitivities, from one forward
        and one backward pass (what MD with uncertainty needs per step; :class:`Evaluation`).

        Virial W_ab = Σ_p (∂E/∂r_p)_a (r_p)_b over the structure's pairs = ∂E/∂ε_ab for a homogeneous
        strain r → (1 + ε) r (cell and shifts strain with the positions); the stress is W / V.
        Sensitivities g = ∂E/∂w = Σ_i σ_{Z_i} h_i (DESIGN §6, QS1: free with the forward pass).
        ``bias``: a differentiable function of g (n_structures, d) float64 → an extra energy (n_structures,) eV
        (oedal.oed.bias); its energy, forces and virials come apart from the model's, from a second backward pass."""
        disp = batch.displacements().detach().to(self.dtype).requires_grad_(True)
        self.descriptor.first_order_only = True
        try:
            with torch.enable_grad():
                h = self.atomic_features(batch, disp)  # (n_atoms, d)
                sigma = self.atomic_scale(batch)  # (n_atoms,)
                e_i = (sigma * self.output(h)[:, 0]).to(torch.float64) + self.shift[batch.species]
                energy = e_i.new_zeros(batch.n_structures).index_add(0, batch.structure, e_i)
                g = None
                if sensitivities or bias is not None:
                    y = sigma[:, None] * h
                    g = y.new_zeros((batch.n_structures, self.d)).index_add(0, batch.structure, y)  # (n, d)
                e_bias = None if bias is None else bias(g.to(torch.float64))  # (n,) eV
                (grad,) = torch.autograd.grad(energy.sum(), disp, retain_graph=bias is not None)  # (n_pairs, 3) eV/Å
                grad_bias = None if bias is None else torch.autograd.grad(e_bias.sum(), disp)[0]
        finally:
            self.descriptor.first_order_only = False
        terms = None
        if bias is not None:
            terms = BiasTerms(e_bias.detach(), pair_forces(batch, grad_bias),
                              pair_virial(batch, grad_bias, disp.detach()) if stress else None)
        virial = pair_virial(batch, grad, disp.detach()) if stress else None
        return Evaluation(energy.detach(), pair_forces(batch, grad), virial, g.detach() if sensitivities else None,
                          terms)

    def forward(self, batch: Batch) -> torch.Tensor:
        return self.energy(batch)

    # ---- initialisation ---------------------------------------------------------------------
    @torch.no_grad()
    def init_scale_shift(self, numbers: np.ndarray, n_atoms: np.ndarray, energy: np.ndarray) -> None:
        """μ by least squares E ≈ Σ_Z count_Z · μ_Z; σ (all species) = std of the residual per atom."""
        from oedal.gmnn.batching import species_index

        n_atoms = np.asarray(n_atoms, np.int64)
        counts = element_counts(species_index(numbers, self.species, n_atoms), n_atoms, len(self.species))
        energy = np.asarray(energy, np.float64)
        mu, *_ = np.linalg.lstsq(counts, energy, rcond=None)
        resid = (energy - counts @ mu) / n_atoms
        sigma = float(np.std(resid)) if len(resid) > 1 else 1.0
        sigma = sigma if sigma > 1e-6 else 1.0
        self.shift.copy_(torch.as_tensor(mu, dtype=torch.float64))
        self.scale.fill_(sigma)
        log.debug("init scale/shift: mu=%s sigma=%.4g eV", mu, sigma)


def pair_forces(batch: Batch, grad: torch.Tensor) -> torch.Tensor:
    """Per-atom sums (n_atoms, 3, ...) of pair derivatives ``grad`` (n_pairs, 3, ...) = ∂X/∂r_p: r_ij = R_j − R_i,
    so −∂X/∂R_i = Σ_j ∂X/∂r_ij and the partner j takes −∂X/∂r_ij. X = E: the forces (eV/Å); trailing axes carry
    the derivatives of further quantities (e.g. the d output-layer sensitivities, oedal.oed.sensitivities)."""
    idx = torch.cat([batch.pair_i, batch.pair_j])
    return grad.new_zeros((batch.species.shape[0],) + grad.shape[1:]).index_add(0, idx, torch.cat([grad, -grad]))


def pair_virial(batch: Batch, grad: torch.Tensor, disp: torch.Tensor) -> torch.Tensor:
    """W_ab = Σ_p (∂X/∂r_p)_a (r_p)_b over each structure's pairs: (n_structures, 3, 3, ...) float64, from ``grad``
    (n_pairs, 3, ...) and ``disp`` (n_pairs, 3) Å. X = E: ∂E/∂ε for a homogeneous strain r → (1 + ε) r (eV; stress
    σ = W / V); trailing axes as in :func:`pair_forces`. Differentiable (the training loss's stress term)."""
    shape = (disp.shape[0], 1, 3) + (1,) * (grad.dim() - 2)
    per_pair = (grad[:, :, None] * disp.reshape(shape)).to(torch.float64)  # (n_pairs, 3, 3, ...)
    return per_pair.new_zeros((batch.n_structures,) + per_pair.shape[1:]).index_add(
        0, batch.structure[batch.pair_i], per_pair)


# ---- files -------------------------------------------------------------------------------------
def save_model(model: GMNN, path: str | Path, **meta) -> None:
    """Write the model atomically (temp + rename): settings, package version, species, weights, meta."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "format": MODEL_FORMAT,
        "version": __version__,
        "settings": model.settings.model_dump(mode="json"),
        "species": list(model.species),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "meta": meta,
    }
    write_torch_file(payload, path)


def write_torch_file(payload: dict, path: str | Path, *, fsync: bool = False) -> None:
    """``torch.save`` into memory, then one plain atomic write of the bytes: a full disk is an ordinary
    OSError and leaves any previous file at ``path`` as it was (torch's own writer reports it as an
    unrelated RuntimeError, from inside its zip container)."""
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    with atomic_path(path, fsync=fsync) as tmp:
        tmp.write_bytes(buffer.getbuffer())


class UnsafeFile(InputError):
    """A model or checkpoint file that names Python objects beyond tensors and plain data: refused
    unread, since unpickling such a file can run code."""


def load_data_file(path: Path, what: str) -> object:
    """``torch.load(path, weights_only=True)``: tensors and plain data (dicts, lists, numbers, strings)
    only. A file that names any other Python object (a class, a function: unpickling it could run
    code) raises :class:`UnsafeFile` before anything in it runs; an unreadable one InputError."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        named = re.search(r"GLOBAL (\S+) was not an allowed global", str(err))
        obj = f"the Python object {named.group(1)}" if named else "Python objects other than tensors and plain data"
        raise UnsafeFile(f"{path}: refused, not loaded: this {what} names {obj}, which could run code "
                         f"({what}s written by oedal hold tensors and plain data only)") from None
    except Exception as err:  # noqa: BLE001
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise InputError(f"{path}: not a readable {what} ({reason})") from None


def read_model_file(path: str | Path) -> dict:
    """The raw payload of a model file (settings, species, version, state_dict, meta), loaded as data
    (:func:`load_data_file`: a file that would run code is refused unread)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"model file {path} does not exist")
    payload = load_data_file(path, "oedal model file")
    if not isinstance(payload, dict) or payload.get("format") != MODEL_FORMAT:
        raise InputError(f"{path}: not an oedal model file (format {MODEL_FORMAT})")
    return payload


def settings_difference(a: ModelSettings, b: ModelSettings) -> list[str]:
    """Keys (dotted) where two model settings differ, with both values."""
    da, db = a.model_dump(mode="json"), b.model_dump(mode="json")
    out: list[str] = []

    def walk(x, y, prefix):
        for k in sorted(set(x) | set(y)):
            vx, vy = x.get(k), y.get(k)
            if isinstance(vx, dict) and isinstance(vy, dict):
                walk(vx, vy, f"{prefix}{k}.")
            elif vx != vy:
                out.append(f"{prefix}{k}: file {vx!r} vs requested {vy!r}")

    walk(da, db, "")
    return out


def load_model(path: str | Path, device="cpu", settings: ModelSettings | None = None) -> GMNN:
    """Load a model file. With ``settings``, a file made with different settings raises SettingsError."""
    payload = read_model_file(path)
    stored = ModelSettings.model_validate(payload["settings"])
    if settings is not None:
        diff = settings_difference(stored, settings)
        if diff:
            raise SettingsError(f"{path}: model was made with different settings: " + "; ".join(diff))
    if payload.get("version") != __version__:
        log.warning("%s was written by oedal %s, this is %s", path, payload.get("version"), __version__)
    model = GMNN(stored, payload["species"])
    _load_weights(model, payload.get("state_dict"), path)
    model.meta = payload.get("meta", {})
    return model.to(device)


def _load_weights(model: GMNN, state: object, path: str | Path) -> None:
    """The file's weights into ``model``: InputError naming the file when they do not fit its settings
    (missing or extra tensors, other shapes) or are not finite (a training that diverged)."""
    if not isinstance(state, dict):
        raise InputError(f"{path}: not an oedal model file (no weights)")
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        first = next((line.strip() for line in str(err).splitlines()[1:] if line.strip()), str(err))
        raise InputError(f"{path}: its weights do not fit the model settings stored with them ({first}); "
                         "the file was changed or written by another program") from None
    bad = [name for name, value in state.items() if torch.is_tensor(value) and value.is_floating_point()
           and not bool(torch.isfinite(value).all())]
    if bad:
        raise InputError(f"{path}: weights not finite (NaN or inf) in {', '.join(bad[:3])}"
                         f"{' ...' if len(bad) > 3 else ''}: a training that diverged? train the model again")
