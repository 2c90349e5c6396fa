"""Output-layer sensitivities of a GM-NN (DESIGN §6; paper eqs. 17 and 19).

With E_i = σ_{Z_i} (w·h_i + b) + μ_{Z_i} only the output weights w (d = model.d) enter the scores:

* QS1, energy:  g(x) = ∂E/∂w = Σ_i σ_{Z_i} h_i — one d-vector per structure, free with the forward pass.
* QS2, forces:  g_jk(x) = ∂F_jk/∂w = −∂(Σ_i σ_{Z_i} h_i)/∂R_jk — a d × 3N Jacobian per structure.

The Jacobian is computed for a whole batch at once. h_i depends on the displacements r_p of atom
i's own pairs only, so pairs get a *slot* (their rank among the pairs with the same centre atom),
and the derivatives ∂(σ_i h_i)/∂(r_p)_k are scattered to Cartesian atoms at the end
(r_p = R_j − R_i + shift: +to j, −to i). Three modes give the same numbers (tests/test_sensitivities.py):

* ``structured`` (the default): closed-form feature tangents (GaussianMoments.tangents(): partner tensors
  of the contractions, each pair moved along its own frame), three rows per pair, then the GEMMs
  through the MLP. The GEMMs are the floor: ≈ 3·(neighbours) rows per atom against one for QS1.
  On a CPU (numba) the rows are packed per atom and the three rotational modes of every atom are
  not computed but rebuilt after the MLP (3n − 3 rows for n neighbours: the descriptor is
  rotation invariant, gmnn.kernels.tangents "QS2 in packed rows"), in chunks of CHUNK_ROWS rows
  that stay in cache; elsewhere (GPU, or the torch kernel backend) the pure-torch route pads every
  atom to the same number of slots.
* ``forward``: one generic forward-mode tangent (slot t, component k) — δr_p = e_k for every pair
  with slot t — vmapped through ``torch.func.jvp`` of the whole model (≈6× slower; the reference).
* ``reverse``: d vmapped VJPs; ``auto`` takes it when 3·max_slots ≥ d (large neighbourhoods).

QS1 alone (energy_sensitivities_batch) uses the fused CPU descriptor kernel (GMNN.predict_features).
The model is read through its public interfaces only: GMNN.readout() (the MLP, a'), atomic_scale (σ),
the descriptor's pair terms, contract() and tangents(), and the kernel backend (gmnn.kernels).
"""

from __future__ import annotations

import collections
import contextlib
import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Literal, NamedTuple

import numpy as np
import torch

from oedal.gmnn.batching import Batch, BatchLoader
from oedal.gmnn.descriptors import FULL_INDEX, UNIQUE_INDEX, grouped_by_atom
from oedal.gmnn.kernels import backend
from oedal.gmnn.model import GMNN, Readout
from oedal.gmnn.tangents import local_frames

log = logging.getLogger(__name__)

Mode = Literal["auto", "structured", "forward", "reverse"]
TANGENT_BUDGET = 128 * 2**20  # bytes per vmapped intermediate (tangents × atoms × widest layer)
ENERGY_BATCH = 1024  # structures per forward pass for QS1


class BatchSensitivities(NamedTuple):
    energy: torch.Tensor  # (n_structures, d): g = Σ_i σ_i h_i
    forces: torch.Tensor | None  # (n_atoms, 3, d): ∂F_jk/∂w = −∂(Σ_i σ_i h_i)/∂R_jk


def pair_slots(pair_i: torch.Tensor, n_atoms: int) -> tuple[torch.Tensor, int]:
    """Rank of every pair among the pairs with the same centre atom → (slot (n_pairs,), max_slots)."""
    if pair_i.numel() == 0:
        return pair_i.clone(), 0
    order = torch.argsort(pair_i, stable=True)
    counts = torch.bincount(pair_i, minlength=n_atoms)
    first = torch.cumsum(counts, 0) - counts  # (n_atoms,) index of the atom's first pair in ``order``
    slot = torch.empty_like(pair_i)
    slot[order] = torch.arange(pair_i.numel(), device=pair_i.device) - first[pair_i[order]]
    return slot, int(counts.max())


def energy_sensitivities_batch(model: GMNN, batch: Batch) -> torch.Tensor:
    """g = ∂E/∂w = Σ_i σ_{Z_i} h_i per structure: (n_structures, d) in the model dtype."""
    with torch.no_grad():
        y = model.atomic_scale(batch)[:, None] * model.predict_features(batch)  # (n_atoms, d)
        return y.new_zeros((batch.n_structures, y.shape[1])).index_add_(0, batch.structure, y)


def _scatter_pairs(c: torch.Tensor, batch: Batch, n_atoms: int) -> torch.Tensor:
    """Pair derivatives c (n_pairs, 3, d) of Σσh wrt r_p → force sensitivities (n_atoms, 3, d)."""
    out = c.new_zeros((n_atoms,) + c.shape[1:])  # F = −∂E/∂R, and ∂r_p/∂R_j = +1, ∂r_p/∂R_i = −1
    out.index_add_(0, batch.pair_i, c)
    out.index_add_(0, batch.pair_j, c, alpha=-1)
    return out


def force_sensitivities_batch(model: GMNN, batch: Batch, mode: Mode = "auto",
                              out: np.ndarray | None = None) -> BatchSensitivities:
    """Energy and force sensitivities of one batch (exact Jacobian; structured, forward or reverse mode).

    ``out``: a zeroed float64 array (n_atoms, 3, d) to write the force sensitivities into (the CPU
    kernel writes float64 directly); ``forces`` of the result is then a view of it."""
    res = _force_sensitivities_batch(model, batch, mode, out)
    if out is None:
        return res._replace(forces=res.forces.to(model.dtype))
    if res.forces.data_ptr() != out.ctypes.data:
        out[...] = res.forces.double().cpu().numpy()
        res = res._replace(forces=torch.from_numpy(out))
    return res


def _force_sensitivities_batch(model: GMNN, batch: Batch, mode: Mode, out: np.ndarray | None) -> BatchSensitivities:
    n_atoms = batch.species.shape[0]
    disp = batch.displacements().detach().to(model.dtype)  # (n_pairs, 3) Å
    sigma = model.atomic_scale(batch).detach()[:, None]  # (n_atoms, 1)
    d = model.d
    n_slots = int(torch.bincount(batch.pair_i, minlength=n_atoms).max()) if disp.shape[0] else 0
    if mode == "auto":
        mode = "structured" if 3 * n_slots < d else "reverse"

    def f(dr: torch.Tensor) -> torch.Tensor:
        return sigma * model.atomic_features(batch, dr)  # (n_atoms, d)

    with torch.no_grad():
        if disp.shape[0] == 0:
            y = f(disp)
            return BatchSensitivities(_per_structure(y, batch), y.new_zeros((n_atoms, 3, d)))
        if mode == "structured":
            with _frozen(model):
                packed = _structured_packed(model, batch, disp, sigma, out)
                y, forces = packed if packed is not None else _structured(model, batch, disp, sigma)
            return BatchSensitivities(_per_structure(y, batch), forces)
        elif mode == "forward":
            slot, n_slots = pair_slots(batch.pair_i, n_atoms)
            tangents = torch.zeros((n_slots, 3, disp.shape[0], 3), dtype=disp.dtype, device=disp.device)
            pairs = torch.arange(disp.shape[0], device=disp.device)
            for k in range(3):
                tangents[slot, k, pairs, k] = 1.0
            tangents = tangents.reshape(3 * n_slots, disp.shape[0], 3)

            def jvp(t: torch.Tensor):
                return torch.func.jvp(f, (disp,), (t,))

            with _frozen(model):
                y, dy = torch.func.vmap(jvp, out_dims=(None, 0))(tangents)  # y (A, d); dy (3S, A, d)
            c = dy.reshape(n_slots, 3, n_atoms, d)[slot, :, batch.pair_i, :]  # (n_pairs, 3, d)
        else:
            eye = torch.eye(d, dtype=disp.dtype, device=disp.device)
            with torch.enable_grad(), _frozen(model):
                y, vjp = torch.func.vjp(f, disp)
                (gr,) = torch.func.vmap(vjp)(eye[:, None, :].expand(d, n_atoms, d))  # (d, n_pairs, 3)
            c = gr.permute(1, 2, 0)  # (n_pairs, 3, d)
        return BatchSensitivities(_per_structure(y, batch), _scatter_pairs(c, batch, n_atoms))


def _structured(model: GMNN, batch: Batch, disp: torch.Tensor, sigma: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(σh (A, d), force sensitivities −∂(Σσh)/∂R (A, 3, d)) from closed-form feature tangents.

    Each pair p is displaced along its own frame (r̂, e1, e2): along r̂ only R_s(r) changes, across
    it only r̂^{⊗L}, so each of the three tangent rows is one product v ⊗ y of a radial and an
    angular factor (closed-form derivatives of the radial and angular terms, all pairs at once). The rows are
    laid out (atom, slot, axis); GaussianMoments.tangents() gives ∂D/∂r_p in x, y, z, and the MLP carries
    the 3·slots rows of every atom as two GEMMs with act'(z) of the atom in between.
    """
    desc = model.descriptor
    n_atoms, n_pairs = batch.species.shape[0], disp.shape[0]
    slot, n_slots = pair_slots(batch.pair_i, n_atoms)
    frames = local_frames(disp)  # (P, 3, 3)

    r = torch.linalg.vector_norm(disp, dim=-1)  # (P,) Å
    pair_type = desc.pair_types(batch.species, batch.pair_i, batch.pair_j)
    rad, drad = desc.radial_derivative(r, pair_type)  # R, ∂R/∂r
    ang = desc.angular(frames[:, 0])  # r̂^{⊗L}
    # across r̂ along a unit e ⊥ r̂: ∂r̂ = e / r
    dang = [desc.angular_derivative(frames[:, 0], frames[:, e] / r[:, None]) for e in (1, 2)]
    dense = n_pairs == n_atoms * n_slots  # pairs grouped by atom, every atom with n_slots of them
    where = None if dense else batch.pair_i * n_slots + slot  # (P,) flat (atom, slot)

    def slots(x: torch.Tensor) -> torch.Tensor:  # (P, ...) → (A, S, ...), zero rows for empty slots
        if dense:
            return x.reshape(n_atoms, n_slots, *x.shape[1:])
        full = x.new_zeros((n_atoms * n_slots, *x.shape[1:]))
        full[where] = x
        return full.reshape(n_atoms, n_slots, *x.shape[1:])

    v = slots(torch.stack([drad, rad, rad], 2))  # (A, S, n_radial, 3): ∂R/∂r along r̂; R across
    y = slots(torch.stack([ang, dang[0], dang[1]], 2))  # (A, S, 20, 3): r̂^{⊗L} along r̂; ∂_e r̂^{⊗L} across
    psi = torch.bmm(v[..., 1].transpose(1, 2).contiguous(), y[..., 0].contiguous())  # (A, n_radial, 20) moments
    v = v.permute(0, 2, 1, 3).reshape(n_atoms, -1, 3 * n_slots)  # (A, n_radial, 3S)
    y = y.permute(0, 2, 1, 3).reshape(n_atoms, 20, 3 * n_slots)  # (A, 20, 3S)
    x = desc.contract(psi)  # (A, F)
    rows = n_atoms * 3 * n_slots
    dx = desc.tangents()(psi, v, y, slots(frames), out=_WORK.get("features", (n_atoms, n_slots, 3, x.shape[1]), x))
    dx = dx.reshape(rows, -1)  # (A·S·3, F): row (atom, slot, x/y/z)
    readout = model.readout()
    for k, layer in enumerate(readout.layers):
        x = layer(x)
        dx = torch.mm(dx, layer.weight.T, out=_WORK.get(f"layer{k}", (rows, layer.out_features), dx))
        x, g = readout.act_grad(x)  # (A, width)
        if k == len(readout.layers) - 1:
            g = g * sigma  # σ_i folded into the last act'
        dx.reshape(n_atoms, 3 * n_slots, -1).mul_(g[:, None, :])
    # scatter to atoms (F = −∂E/∂R, r_p = R_j − R_i + shift): +c to the centre atom i, a sum over its
    # slots; −c to the neighbour j. Empty slots hold exact zeros, so their rows may go to atom 0.
    c = dx.reshape(n_atoms, n_slots, 3, -1)
    forces = c.sum(1)  # (A, 3, d)
    j_of_slot = batch.pair_j if dense else batch.pair_j.new_zeros(n_atoms * n_slots).index_put_((where,), batch.pair_j)
    forces.index_add_(0, j_of_slot, c.reshape(n_atoms * n_slots, 3, -1), alpha=-1)
    return sigma * x, forces


def _structured_packed(model: GMNN, batch: Batch, disp: torch.Tensor, sigma: torch.Tensor,
                       out: np.ndarray | None) -> tuple[torch.Tensor, torch.Tensor] | None:
    """``_structured`` on a CPU with the numba kernels, in packed rows: (σh (A, d), forces (A, 3, d)
    float64), or None where the kernels do not apply (no numba, not a CPU, pairs not grouped by atom).

    Only 3·n_i − 3 rows of atom i go through the MLP: the three rotational modes follow from the
    others (oedal.gmnn.kernels, "QS2 in packed rows"). Rows stay in the pairs' frames until after the
    MLP, so the rotation to x, y, z, the σ·act' of the last layer and the scatter to atoms are one
    pass over d-wide rows (kernels.scatter_rows), written straight into float64.
    """
    pair_i = batch.pair_i
    if backend().tangents is None or disp.device.type != "cpu" or not grouped_by_atom(pair_i):
        return None
    n_atoms = batch.species.shape[0]
    pair_start = np.zeros(n_atoms + 1, np.int64)
    np.cumsum(torch.bincount(pair_i, minlength=n_atoms).numpy(), out=pair_start[1:])
    atom_start = np.zeros(batch.n_structures + 1, np.int64)
    np.cumsum(batch.n_atoms.numpy(), out=atom_start[1:])
    pairs = _PackedPairs(model, batch, disp, pair_start, atom_start)
    readout = model.readout()
    h, acts, last = _primal(readout, pairs.features, sigma)
    if out is None:
        out = np.zeros((n_atoms, 3, model.d))
    struct_rows = pairs.row_start[atom_start]  # (n_structures + 1,) first row of every structure
    chunks = _chunks(struct_rows, CHUNK_ROWS)
    max_rows = max(int(struct_rows[s1] - struct_rows[s0]) for s0, s1 in chunks)
    pairs.reserve(readout, model.descriptor.n_features, max_rows)
    for s0, s1 in chunks:
        pairs.push_through(acts, last, s0, s1, out)
    return sigma * h, torch.from_numpy(out)


class _PackedPairs:
    """One batch's pair terms and packed rows for ``_structured_packed`` (numpy arrays for the kernels).

    frames (P, 3, 3), r (P,), v (P, 3, n_radial), y (P, 3, 20): kernels.pairs.pair_rows; features
    (A, F) and partners [(A, K_L, unique)]: kernels.tangents.features_partners; drop (A, 3),
    row_start (A + 1,): the rows not computed per atom (rotation_drops) and where each atom's rows start."""

    def __init__(self, model: GMNN, batch: Batch, disp: torch.Tensor, pair_start: np.ndarray, atom_start: np.ndarray):
        kernels, desc = backend(), model.descriptor
        self.ft = desc.tangents()
        disp = disp.contiguous().numpy()
        n_pairs, n_atoms, dtype = disp.shape[0], batch.species.shape[0], disp.dtype
        self.pair_start, self.atom_start = pair_start, atom_start
        self.pair_j = batch.pair_j.numpy()
        self.max_pairs = int(np.max(np.diff(pair_start)))
        self.frames, self.r = np.empty((n_pairs, 3, 3), dtype), np.empty(n_pairs, dtype)
        self.v = np.empty((n_pairs, 3, desc.n_radial), dtype)  # ∂R/∂r along r̂; R across
        self.y = np.empty((n_pairs, 3, 20), dtype)  # r̂^{⊗L} along r̂; ∂_e r̂^{⊗L} across
        kernels.pairs.pair_rows(disp, desc.pair_types(batch.species, batch.pair_i, batch.pair_j).numpy(),
                                desc.radial_basis(torch.float64), UNIQUE_INDEX, self.frames, self.r, self.v, self.y)
        self.features = torch.empty((n_atoms, desc.n_features), dtype=model.dtype)
        self.partners = tuple(np.empty((n_atoms, k, n), dtype) for k, n in zip(self.ft.n_partners, (3, 6, 10)))
        kernels.tangents.features_partners((self.v, self.y), pair_start, (self.ft.rads_np, self.ft.cols_np),
                                           self.ft.family_flags, FULL_INDEX, self.features.numpy(), *self.partners)
        self.drop, counts = np.empty((n_atoms, 3), np.int64), np.empty(n_atoms, np.int64)
        kernels.tangents.rotation_drops(self.frames, self.r, pair_start, ROTATION_TAU, self.drop, counts)
        self.row_start = np.zeros(n_atoms + 1, np.int64)
        np.cumsum(counts, out=self.row_start[1:])
        self.layout = (pair_start, self.row_start, self.drop, self.max_pairs)  # of kernels.tangents

    def push_through(self, acts: list[np.ndarray], last: np.ndarray, s0: int, s1: int, out: np.ndarray) -> None:
        """Tangent rows of structures s0..s1−1 through the MLP, and their force sensitivities into ``out``."""
        kernels, ft = backend().tangents, self.ft
        a0, a1 = int(self.atom_start[s0]), int(self.atom_start[s1])
        rows = int(self.row_start[a1] - self.row_start[a0])
        dx = self.buffers[0][:rows]
        kernels.tangent_rows((self.v, self.y), self.partners, (ft.rads_np, ft.cols_np), self.layout, a0, a1, dx.numpy())
        for k, (weight, buffer) in enumerate(zip(self.weights, self.buffers[1:])):
            dx = torch.mm(dx, weight, out=buffer[:rows])
            if k < len(acts):  # act'(z) of the row's atom; the last layer's in scatter_rows
                kernels.scale_rows(dx.numpy(), acts[k], self.row_start, a0, a1)
        kernels.scatter_rows(dx.numpy(), last, (self.frames, self.r, self.pair_j), self.layout, self.atom_start, s0, s1,
                             out)

    def reserve(self, readout: Readout, n_features: int, max_rows: int) -> None:
        """Buffers for chunks of up to ``max_rows`` rows, and the MLP's weights (once per batch)."""
        like = torch.from_numpy(self.v[:0])
        self.weights = [layer.weight.T for layer in readout.layers]
        self.buffers = [_WORK.get("features", (max_rows, n_features), like)]
        self.buffers += [_WORK.get(f"layer{k}", (max_rows, layer.out_features), like)
                         for k, layer in enumerate(readout.layers)]


def _primal(readout: Readout, x: torch.Tensor,
            sigma: torch.Tensor) -> tuple[torch.Tensor, list[np.ndarray], np.ndarray]:
    """The MLP on the features x (A, F): (h (A, d), act'(z) (A, width) of every layer but the last,
    and σ·act'(z) of the last layer (A, d))."""
    acts = []
    for layer in readout.layers:
        x, act = readout.act_grad(layer(x))
        acts.append(act)
    last = acts.pop() * sigma  # σ_i folded into the last act'
    return x, [act.contiguous().numpy() for act in acts], last.contiguous().numpy()


def _chunks(struct_rows: np.ndarray, size: int) -> list[tuple[int, int]]:
    """Ranges (s0, s1) of whole structures of ≈ ``size`` rows (at least one structure each), from
    the first row of every structure and the end (n_structures + 1,): GEMM operands that stay in cache."""
    bounds = [0]
    n = len(struct_rows) - 1
    while bounds[-1] < n:
        s1 = int(np.searchsorted(struct_rows, struct_rows[bounds[-1]] + size, side="right")) - 1
        bounds.append(min(max(s1, bounds[-1] + 1), n))
    return list(zip(bounds[:-1], bounds[1:]))


CHUNK_ROWS = 1024  # tangent rows per GEMM on one thread: (1024, F) and (1024, width) stay in its core's cache
ROTATION_TAU = 0.05  # a third row is dropped only if its rotational coefficient is ≥ 0.05·r (kernels.rotation_drops)


class _Workspace(threading.local):
    """Reusable CPU buffers, one set per thread for the per-batch GEMM outputs: fresh multi-MB tensors cost page
    faults on every batch (measured 1.25× on the MLP step). A buffer is only read before the next
    batch asks for it again, and what callers keep is copied out of it (scatter, float64)."""

    def __init__(self):
        self.buffers: dict[str, torch.Tensor] = {}

    def get(self, name: str, shape: tuple[int, ...], like: torch.Tensor) -> torch.Tensor | None:
        """A (shape) view of buffer ``name`` with the dtype of ``like``; None off the CPU."""
        if like.device.type != "cpu":
            return None
        n = int(np.prod(shape))
        buf = self.buffers.get(name)
        if buf is None or buf.numel() < n or buf.dtype != like.dtype:
            buf = self.buffers[name] = like.new_empty(n)
        return buf[:n].view(shape)


_WORK = _Workspace()


class _frozen:
    """Context manager: parameters excluded from autograd while torch.func transforms run."""

    def __init__(self, model: GMNN):
        self.model = model

    def __enter__(self):
        self.flags = {k: p.requires_grad for k, p in self.model.named_parameters()}
        for p in self.model.parameters():
            p.requires_grad_(False)
        return self

    def __exit__(self, *exc):
        for k, p in self.model.named_parameters():
            p.requires_grad_(self.flags[k])


def _per_structure(y: torch.Tensor, batch: Batch) -> torch.Tensor:
    return y.new_zeros((batch.n_structures, y.shape[1])).index_add_(0, batch.structure, y)


def _loader(model: GMNN, structures, batch_size: int) -> BatchLoader:
    device = next(model.parameters()).device
    return BatchLoader(structures, model.cutoff, model.species, batch_size, device=device, dtype=model.dtype)


def energy_sensitivities(model: GMNN, structures, batch_size: int | None = None) -> np.ndarray:
    """QS1 sensitivities of every structure, in order: (n, d) float64."""
    return all_sensitivities(model, structures, forces=False, batch_size=batch_size)[0]


def _structures_per_batch(model: GMNN, loader: BatchLoader) -> int:
    """Batch size (structures) keeping one vmapped intermediate under TANGENT_BUDGET."""
    width = max([model.descriptor.n_features, *model.settings.hidden])
    mean_atoms = max(1.0, float(np.mean(loader.n_atoms))) if loader.n_structures else 1.0
    max_slots = max(1, int(np.max(loader.n_pairs / np.maximum(loader.n_atoms, 1), initial=1)) * 2)
    per_structure = mean_atoms * min(3 * max_slots, model.d) * width * 4
    return max(1, int(TANGENT_BUDGET // per_structure))


def all_sensitivities(
    model: GMNN, structures, *, forces: bool = True, mode: Mode = "auto", batch_size: int | None = None
) -> tuple[np.ndarray, np.ndarray | None]:
    """(QS1 g (n, d), QS2 rows (3·n_atoms_total, d) or None) in float64, rows atom-major then x/y/z.

    On a CPU, groups of GROUP structures run in parallel, one thread each (``batch_threads``):
    the group's neighbour lists, then its batches."""
    model.eval()
    workers, n = batch_workers(model), len(structures.n_atoms)
    first_atom = np.concatenate([[0], np.cumsum(structures.n_atoms)]).astype(np.int64)
    g_f = np.zeros((int(first_atom[-1]), 3, model.d)) if forces else None
    if forces:
        model.descriptor.tangents()  # built once, before the threads

    def group(s0: int, s1: int) -> list[np.ndarray]:
        loader = _loader(model, structures if (s0, s1) == (0, n) else structures.subset(np.arange(s0, s1)), 1)
        loader.batch_size = batch_size or _batch_size(model, loader, forces)
        out, a0 = [], int(first_atom[s0])
        for b in loader:
            if forces:
                n_atoms = b.species.shape[0]
                sens = force_sensitivities_batch(model, b, mode, out=g_f[a0:a0 + n_atoms])
                a0 += n_atoms
            else:
                sens = BatchSensitivities(energy_sensitivities_batch(model, b), None)
            out.append(sens.energy.double().cpu().numpy())
        return out

    groups = [(0, n)] if workers == 1 else [(s0, min(n, s0 + GROUP)) for s0 in range(0, n, GROUP)]
    with _frozen(model), batch_threads(workers) as run:
        g_e = [e for part in run(group, groups) for e in part]
    e = np.concatenate(g_e) if g_e else np.zeros((0, model.d))
    return e, (g_f.reshape(-1, model.d) if forces else None)


GROUP = 256  # structures per work item of one thread (neighbour lists and batches): QM9 has 511, ethanol 20


def _batch_size(model: GMNN, loader: BatchLoader, forces: bool) -> int:
    """Structures per batch: ENERGY_BATCH for QS1; for QS2 under TANGENT_BUDGET, as even as it can be."""
    if not forces:
        return ENERGY_BATCH
    most = _structures_per_batch(model, loader)
    n_batches = max(1, -(-loader.n_structures // most))
    return max(1, -(-loader.n_structures // n_batches))


def batch_workers(model: GMNN) -> int:
    """Threads that each run whole batches: torch's thread count on a CPU, one elsewhere (a GPU
    parallelises within the batch)."""
    return torch.get_num_threads() if next(model.parameters()).device.type == "cpu" else 1


@contextlib.contextmanager
def batch_threads(workers: int):
    """``run(fn, items)`` → [fn(*item) in order], on ``workers`` threads that each run whole
    items (groups of structures), with torch and the numba kernels single-threaded inside them
    (restored after).

    One thread per group beats two threads per operation here: the neighbour lists of one group
    overlap the other's arithmetic, the tangent rows, both GEMMs and the scatter stay in one
    core's cache, and the fork-joins around every kernel and GEMM disappear (benchmarks/bench_oed.py).
    At most 2·workers + 1 items are in flight, so memory stays bounded."""
    if workers <= 1:
        yield lambda fn, items: [fn(*item) for item in items]
        return
    kernels = backend()  # resolved on this thread, so that numba follows torch's thread count here (gmnn.kernels)
    n_torch = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with ThreadPoolExecutor(workers, initializer=kernels.single_thread) as pool:
            def run(fn, items):
                pending, done = collections.deque(), []
                for item in items:
                    pending.append(pool.submit(fn, *item))
                    while len(pending) > 2 * workers:
                        done.append(pending.popleft().result())
                return done + [f.result() for f in pending]
            yield run
    finally:
        torch.set_num_threads(n_torch)


def force_sensitivities(model: GMNN, structures, mode: Mode = "auto", batch_size: int | None = None) -> np.ndarray:
    """QS2 sensitivities ∂F_jk/∂w of every atom component: (3·n_atoms_total, d) float64."""
    return all_sensitivities(model, structures, forces=True, mode=mode, batch_size=batch_size)[1]
