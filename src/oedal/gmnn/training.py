"""Training a GM-NN on energies and forces, or on energies alone (DESIGN §5, §11).

Loss, eq. (4) of the paper, per structure and averaged over the batch:
    ℓ = w_E ΔE² + w_F/(3 N_at) Σ_i |ΔF_i|²
with AMSGrad, batch 32, and a learning rate set before every step by :class:`LearningRate`: by
default a cosine decay from 1e-2 to 1e-5 over the epoch budget (the paper: a constant 1e-3; at equal
epochs the cosine reaches a 1.6× lower test force MAE, benchmarks/bench_training.py). Early stopping
on the validation loss with ``patience`` epochs, the best weights restored; a warm start from a model
file trains a shorter budget from a lower peak (``TrainingSettings.budget``); optional wall-clock
safety limit.

Checkpoints (``checkpoint=PATH``; ``oedal train`` uses OUT.ckpt beside the model): every
``checkpoint_minutes`` (checked after every batch and at the end of every epoch; 0 = at the end of
every epoch) and on SIGTERM (Slurm sends it before killing a job at its time limit) the whole training
state is written atomically: weights, optimizer (AMSGrad) state, epoch and position in the epoch, best
weights/epoch/loss, patience counter, history, shuffling and torch RNG states, seconds trained. On
SIGTERM training then stops with :class:`TrainingInterrupted`. A later call with the same checkpoint
resumes where it stopped and, on CPU, ends with the same model as an uninterrupted run. The checkpoint
holds a fingerprint of the model settings, the training settings (except epochs, max_minutes, threads
and device, which may change between runs), the initial model (seed or warm start) and both data sets
(ids and a hash of numbers/positions/cells/energies/forces); a checkpoint of another training is
refused (:class:`CheckpointMismatch`) unless ``restart=True``, which removes it and starts afresh.
``max_minutes`` counts the seconds trained before the resume too. The checkpoint is left in place when
training ends; the caller removes it once the model is saved.
"""

from __future__ import annotations

import copy
import hashlib
import logging
import math
import time
from typing import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from ase import units

from oedal.gmnn.batching import Batch, BatchLoader
from oedal.device import resolve_device, set_threads
from oedal.errors import InputError, OedalError
from oedal.interrupt import StopOnSigterm
from oedal.gmnn.model import GMNN, load_data_file, load_model, pair_virial, write_torch_file
from oedal.progress import progress_bar
from oedal.settings import ModelSettings, TrainingSettings

log = logging.getLogger(__name__)
CHECKPOINT_FORMAT = "oedal-train-checkpoint-1"
# runtime knobs that may change between a run and its resume; everything else must match
_RESUMABLE_SETTINGS = {"epochs", "warm_epochs", "max_minutes", "threads", "device"}


class CheckpointMismatch(OedalError):
    """The checkpoint file belongs to another training (settings, data or initial model differ)."""


class TrainingDiverged(OedalError):
    """A training or validation loss turned NaN or inf (the message names the epoch and batch)."""


class TrainingInterrupted(Exception):
    """Training stopped on SIGTERM after writing its checkpoint; rerun with the same checkpoint to resume."""

    def __init__(self, checkpoint: Path, epoch: int):
        super().__init__(f"training interrupted by SIGTERM in epoch {epoch}; state saved in {checkpoint} "
                         "(rerun the same command to resume)")
        self.checkpoint = checkpoint
        self.epoch = epoch


@dataclass
class TrainResult:
    model: GMNN
    history: list[dict] = field(default_factory=list)
    best_epoch: int = 0
    best_valid_loss: float = math.inf
    epochs: int = 0  # epochs run
    seconds: float = 0.0
    stopped: str = "epochs"  # epochs (the budget ran out) | patience | time (max_minutes: not comparable)
    epoch_budget: int = 0  # the epochs it was given (TrainingSettings.budget)


def structure_loss(batch: Batch, energy: torch.Tensor, forces: torch.Tensor | None, w_e: float,
                   w_f: float, per_atom: bool = False, virial: torch.Tensor | None = None,
                   w_s: float = 0.0) -> torch.Tensor:
    """Eq. (4) per structure: w_E ΔE² + w_F/(3N_F) Σ|ΔF|² (n_structures,) float64 (eV², Å² weights).

    ``per_atom`` (``training.energy_loss: per_atom``, DESIGN §11): the energy term is w_E (ΔE/N)², so that in a
    set whose sizes differ by orders of magnitude a 257-atom cell does not outweigh a 4-atom one by 257²/4² at
    the same error per atom.

    ``virial`` (n_structures, 3, 3) eV and ``w_s`` (DESIGN §12): the stress term w_S/9 Σ_ab (V Δσ_ab / N)², the
    virial error per atom (eV, the units of the per-atom energy term; 0.1 GPa in a cell of 20 Å³/atom is 12 meV),
    for the structures with a stress label (others: 0).

    Energy-only data (DESIGN §11): without force labels (``batch.forces`` None, e.g. QM9) the loss is the
    energy term alone (w_F = 0); in a mixed set a structure whose force rows are NaN contributes its energy
    only (N_F counts the atoms with forces, so such a structure's force term is 0, not NaN)."""
    de = energy - batch.energy  # (n_structures,) eV
    de2 = w_e * (de / batch.n_atoms if per_atom else de) ** 2
    if virial is not None and batch.stress is not None and w_s > 0.0:
        de2 = de2 + stress_term(batch, virial, w_s)
    if forces is None or batch.forces is None or w_f == 0.0:
        return de2
    have = ~torch.isnan(batch.forces[:, 0])  # (n_atoms,) atoms with a force label
    df2 = torch.where(have, ((forces - torch.nan_to_num(batch.forces)) ** 2).sum(dim=1), 0.0).to(torch.float64)
    per_struct = df2.new_zeros(batch.n_structures).index_add(0, batch.structure, df2)
    n = df2.new_zeros(batch.n_structures).index_add(0, batch.structure, have.to(torch.float64))
    return de2 + (w_f / 3.0) * per_struct / n.clamp(min=1.0)


def stress_term(batch: Batch, virial: torch.Tensor, w_s: float) -> torch.Tensor:
    """w_S/9 Σ_ab (V Δσ_ab / N)² per structure (n_structures,) float64 eV²; 0 without a stress label. The
    label enters as V σ (eV), so a structure that is not a 3-D cell (V NaN) never reaches the gradient."""
    have = ~torch.isnan(batch.stress[:, 0, 0])  # (n_structures,)
    volume = torch.where(have, batch.volume, 1.0)[:, None, None]  # Å³
    label = torch.nan_to_num(batch.stress) * volume  # (n_structures, 3, 3) eV
    dw = torch.where(have[:, None, None], virial.to(torch.float64) - label, 0.0)
    return (w_s / 9.0) * ((dw / batch.n_atoms[:, None, None]) ** 2).sum(dim=(1, 2))


def batch_loss(model: GMNN, batch: Batch, w_e: float, w_f: float, per_atom: bool = False,
               w_s: float = 0.0) -> torch.Tensor:
    """Mean eq.-4 loss of a batch, forces (and virials when ``w_s`` > 0 and the batch has stress labels) by
    ``torch.func.grad`` (so ``torch.compile`` can trace it); a batch without force labels costs one forward
    pass (no derivative in the positions)."""
    with_stress = batch.stress is not None and w_s > 0.0
    if (batch.forces is None or w_f == 0.0) and not with_stress:
        return structure_loss(batch, model.energy(batch), None, w_e, 0.0, per_atom).mean()

    def total(d):
        energy = model._total(batch, d)
        return energy.sum(), energy

    disp = batch.displacements().to(model.dtype)
    grad, energy = torch.func.grad(total, has_aux=True)(disp)
    idx = torch.cat([batch.pair_i, batch.pair_j])
    forces = grad.new_zeros((batch.species.shape[0], 3)).index_add(0, idx, torch.cat([grad, -grad]))
    virial = pair_virial(batch, grad, disp) if with_stress else None
    return structure_loss(batch, energy, forces if batch.forces is not None else None, w_e, w_f, per_atom, virial,
                          w_s).mean()


def _species_of(*sets) -> list[int]:
    return sorted(set(np.concatenate([np.unique(np.asarray(s.numbers)) for s in sets]).tolist()))


def _check_labels(structures, name: str) -> None:
    if getattr(structures, "energy", None) is None:
        raise InputError(f"{name} structures have no energy labels")
    if len(structures.n_atoms) == 0:
        raise InputError(f"{name} set is empty")


def _check_same_labels(train, valid) -> None:
    """Training and validation sets both with force labels or both without (energy-only, DESIGN §11)."""
    if (train.forces is None) != (valid.forces is None):
        have, lack = ("training", "validation") if train.forces is not None else ("validation", "training")
        raise InputError(f"the {have} set has force labels and the {lack} set has none: train both with forces or "
                         "both on energies alone")


def _predict_for_loss(model: GMNN, batch: Batch, w_s: float):
    """(energy, forces or None, virial or None) of a batch: what its loss needs, at the cost it needs (a forward
    pass alone without force labels and stress term)."""
    with_stress = batch.stress is not None and w_s > 0.0
    if with_stress:
        ev = model.evaluate(batch, stress=True)
        return ev.energy, ev.forces if batch.forces is not None else None, ev.virial
    if batch.forces is None:
        with torch.inference_mode():
            return model.energy(batch), None, None
    return (*model.energy_and_forces(batch), None)


def validate(model: GMNN, loader: BatchLoader, w_e: float, w_f: float, per_atom: bool = False,
             w_s: float = 0.0) -> dict:
    """Mean eq.-4 loss and energy/force MAE (eV, eV/Å) over a loader; the force MAE is None without
    force labels (the energies then come from a forward pass alone); the stress MAE (GPa) where the loss
    has a stress term."""
    loss = e_abs = f_abs = s_abs = 0.0
    n_s = n_c = n_sigma = 0
    for batch in loader:
        energy, forces, virial = _predict_for_loss(model, batch, w_s)
        with torch.no_grad():
            loss += float(structure_loss(batch, energy, forces, w_e, w_f, per_atom, virial, w_s).sum())
            if virial is not None:
                have = ~torch.isnan(batch.stress[:, 0, 0])
                sigma = virial[have] / batch.volume[have, None, None]  # eV/Å³
                s_abs += float((sigma - batch.stress[have]).abs().sum()) / units.GPa
                n_sigma += 9 * int(have.sum())
            e_abs += float((energy - batch.energy).abs().sum())
            if forces is not None:
                have = ~torch.isnan(batch.forces)
                if bool(have.all()):
                    f_abs += float((forces - batch.forces).abs().sum())
                    n_c += forces.numel()
                else:  # a mixed set: the atoms with force labels
                    f_abs += float((forces - batch.forces).abs()[have].sum())
                    n_c += int(have.sum())
        n_s += batch.n_structures
    out = {"valid_loss": loss / n_s, "valid_energy_mae": e_abs / n_s, "valid_force_mae": f_abs / n_c if n_c else None}
    if n_sigma:
        out["valid_stress_mae"] = s_abs / n_sigma  # GPa
    return out


def _hash_arrays(*arrays) -> str:
    h = hashlib.sha256()
    for a in arrays:
        if a is None:
            h.update(b"none")
            continue
        a = np.ascontiguousarray(a)
        h.update(f"{a.dtype.str}{a.shape}".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def _data_fingerprint(structures) -> dict:
    return {"n": int(len(structures.n_atoms)), "ids": _hash_arrays(np.asarray(structures.ids)),
            "values": _hash_arrays(structures.numbers, structures.n_atoms, structures.positions, structures.cell,
                                   structures.pbc, structures.energy, structures.forces)}


def _fingerprint(ms: ModelSettings, ts: TrainingSettings, train, valid, model: GMNN) -> dict:
    """What a checkpoint must match to be resumed (DESIGN: resume gives the same model)."""
    state = model.state_dict()
    return {
        "model settings": ms.model_dump(mode="json"),
        "training settings": {k: v for k, v in ts.model_dump(mode="json").items() if k not in _RESUMABLE_SETTINGS
                              and k not in ts.unset_options()},  # as before these options existed while unset
        "initial model": _hash_arrays(*(state[k].detach().cpu().numpy() for k in sorted(state))),
        "training data": _data_fingerprint(train),
        "validation data": _data_fingerprint(valid),
    }


def _cpu(state: dict) -> dict:
    return {k: v.detach().cpu().clone() for k, v in state.items()}


def _load_checkpoint(path: Path, fingerprint: dict) -> dict:
    """The checkpoint's payload, loaded as data (a file that would run code is refused unread)."""
    try:
        payload = load_data_file(path, "training checkpoint")
    except InputError as err:
        raise CheckpointMismatch(f"{err}; remove it or restart (oedal train --restart)") from None
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointMismatch(f"{path}: not an oedal training checkpoint; remove it or restart "
                                 "(oedal train --restart)")
    stored = payload.get("fingerprint", {})
    differ = [k for k in fingerprint if stored.get(k) != fingerprint[k]]
    if differ:
        raise CheckpointMismatch(f"checkpoint {path} belongs to another training ({', '.join(differ)} differ); "
                                 "remove it or restart from scratch (oedal train --restart)")
    return payload


def _make_model(train, valid, model_settings: ModelSettings, warm_start) -> GMNN:
    from ase.data import atomic_numbers

    try:
        extra = [atomic_numbers[symbol] for symbol in model_settings.species]
    except KeyError as err:
        raise InputError(f"model.species: unknown element symbol {err}") from None
    species = sorted(set(_species_of(train, valid)) | set(extra))
    if warm_start is None:
        model = GMNN(model_settings, species)
        model.init_scale_shift(train.numbers, train.n_atoms, train.energy)
        return model
    model = warm_start if isinstance(warm_start, GMNN) else load_model(warm_start, settings=model_settings)
    missing = sorted(set(species) - set(model.species))
    if missing:
        raise InputError(f"warm start {warm_start}: model does not know elements Z={missing} of the training data")
    return model


def shrink_perturb(model: GMNN, shrink: float, perturb: float, seed: int) -> None:
    """Shrink and perturb (Ash & Adams, "On warm-starting neural network training", NeurIPS 2020): every
    weight and bias of the MLP and the output layer θ ← λ θ + s θ₀, θ₀ those of a fresh initialisation
    (torch seed ``seed``). A warm start keeps what it learned but leaves the basin of the smaller set; the
    descriptor's β and the per-species σ_Z, μ_Z (the energy scale) are kept as they are. In place."""
    torch.manual_seed(seed)
    fresh = GMNN(model.settings, model.species).to(model.device)
    with torch.no_grad():
        for mine, new in ((model.mlp, fresh.mlp), (model.output, fresh.output)):
            for p, q in zip(mine.parameters(), new.parameters()):
                p.mul_(shrink).add_(q, alpha=perturb)


@dataclass(frozen=True)
class LearningRate:
    """The learning rate before every optimizer step: ``constant`` (the paper's), ``cosine`` from
    ``peak`` to ``final`` over ``epochs`` × ``steps`` steps, η(x) = η_f + ½(η_p − η_f)(1 + cos πx),
    x = step / total, or ``plateau`` (the state's current rate, decayed on validation plateaus).
    A function of the step index (and, for plateau, of the state): a resumed training gets the same rates."""

    kind: str
    peak: float
    final: float
    epochs: int
    steps: int  # optimizer steps per epoch

    def at(self, epoch: int, batch: int, plateau: float) -> float:
        """Rate of batch ``batch`` (0-based) of epoch ``epoch`` (1-based)."""
        if self.kind == "constant":
            return self.peak
        if self.kind == "plateau":
            return plateau
        x = min(1.0, ((epoch - 1) * self.steps + batch) / max(1, self.epochs * self.steps))
        return self.final + 0.5 * (self.peak - self.final) * (1.0 + math.cos(math.pi * x))


@dataclass
class TrainingState:
    """Everything a resumed training needs; what a checkpoint holds (:meth:`to_checkpoint`).

    ``model`` and ``optimizer`` (AMSGrad moments) carry the current weights; ``best_state`` the
    weights of ``best_epoch`` (lowest validation loss, restored at the end); ``since_best`` counts the
    epochs without improvement (patience); ``history`` has one row per finished epoch; ``partial``
    (shuffled order, position, loss sum and structures so far) is set for an epoch in progress;
    ``seconds`` were trained before this run. The shuffling RNG (``loader``'s) and torch's RNGs are
    saved and restored with them.
    """

    model: GMNN
    optimizer: torch.optim.Optimizer
    loader: BatchLoader
    best_state: dict[str, torch.Tensor]
    best_epoch: int = 0
    best_valid_loss: float = math.inf
    since_best: int = 0
    history: list[dict] = field(default_factory=list)
    partial: dict | None = None
    seconds: float = 0.0
    plateau_lr: float = 0.0  # the current rate of the plateau schedule
    plateau_wait: int = 0  # epochs without improvement since its last decay

    @property
    def epochs(self) -> int:
        """Epochs finished."""
        return len(self.history)

    def record(self, row: dict) -> bool:
        """Append a finished epoch's row; keep its weights when the validation loss improved."""
        self.history.append(row)
        self.partial = None
        improved = row["valid_loss"] < self.best_valid_loss
        if improved:
            self.best_valid_loss, self.best_epoch = row["valid_loss"], row["epoch"]
            self.best_state = copy.deepcopy(self.model.state_dict())
            self.since_best = 0
        else:
            self.since_best += 1
        return improved

    def decay_on_plateau(self, improved: bool, ts: TrainingSettings) -> None:
        """Plateau schedule: multiply the rate by ``plateau_factor`` after ``plateau_patience`` epochs
        without improvement (not below ``final_learning_rate``)."""
        self.plateau_wait = 0 if improved else self.plateau_wait + 1
        if self.plateau_wait >= ts.plateau_patience:
            self.plateau_lr = max(ts.final_learning_rate, self.plateau_lr * ts.plateau_factor)
            self.plateau_wait = 0

    def to_checkpoint(self, fingerprint: dict | None, seconds: float) -> dict:
        """The checkpoint payload (format CHECKPOINT_FORMAT); tensors on the CPU."""
        cuda = next(self.model.parameters()).device.type == "cuda"
        return {
            "format": CHECKPOINT_FORMAT,
            "fingerprint": fingerprint,
            # the epoch in progress when ``partial`` is set, else the last one finished
            "epoch": self.epochs + (1 if self.partial is not None else 0),
            "partial": _partial_as_data(self.partial),
            "model": _cpu(self.model.state_dict()),
            "optimizer": self.optimizer.state_dict(),
            "best_state": _cpu(self.best_state),
            "best_epoch": self.best_epoch,
            "best_valid_loss": self.best_valid_loss,
            "since_best": self.since_best,
            "history": self.history,
            "shuffle_rng": self.loader._rng.bit_generator.state,
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if cuda else None,
            "seconds": seconds,
            "plateau": [self.plateau_lr, self.plateau_wait],
            "time": time.time(),
        }

    @classmethod
    def from_checkpoint(cls, payload: dict, model: GMNN, optimizer: torch.optim.Optimizer,
                        loader: BatchLoader) -> "TrainingState":
        """Load a checkpoint payload into ``model``, ``optimizer``, ``loader`` and torch's RNGs."""
        model.load_state_dict(payload["model"])
        optimizer.load_state_dict(payload["optimizer"])
        device = next(model.parameters()).device
        loader._rng.bit_generator.state = payload["shuffle_rng"]
        torch.set_rng_state(payload["torch_rng"])
        if payload.get("cuda_rng") is not None and device.type == "cuda":
            torch.cuda.set_rng_state_all(payload["cuda_rng"])
        plateau_lr, plateau_wait = payload.get("plateau", [optimizer.param_groups[0]["lr"], 0])
        return cls(model, optimizer, loader, {k: v.to(device) for k, v in payload["best_state"].items()},
                   best_epoch=payload["best_epoch"], best_valid_loss=payload["best_valid_loss"],
                   since_best=payload["since_best"], history=list(payload["history"]),
                   partial=_partial_from_data(payload["partial"]),
                   seconds=payload["seconds"], plateau_lr=plateau_lr, plateau_wait=plateau_wait)


def _partial_as_data(partial: dict | None) -> dict | None:
    """The epoch in progress with its shuffled order as a tensor: a checkpoint holds tensors and plain
    data only, so it loads with ``weights_only=True``."""
    return None if partial is None else {**partial, "order": torch.as_tensor(partial["order"])}


def _partial_from_data(partial: dict | None) -> dict | None:
    return None if partial is None else {**partial, "order": np.asarray(partial["order"], dtype=np.int64)}


class _Checkpoints:
    """Writes the state to ``path`` when due: every ``minutes`` (0: after every epoch) and on SIGTERM,
    after which :class:`TrainingInterrupted` stops the training. Without a path, never due."""

    def __init__(self, path: Path | None, fingerprint: dict | None, minutes: float, term: StopOnSigterm):
        self.path, self.fingerprint, self.term = path, fingerprint, term
        self.interval = 60.0 * minutes
        self.last = time.perf_counter()

    def due(self, epoch_end: bool) -> bool:
        if self.path is None:
            return False
        if self.term.requested:
            return True
        return (epoch_end or self.interval > 0) and time.perf_counter() - self.last >= self.interval

    def save(self, state: TrainingState, seconds: float) -> None:
        payload = state.to_checkpoint(self.fingerprint, seconds)
        write_torch_file(payload, self.path, fsync=True)
        self.last = time.perf_counter()
        log.debug("checkpoint %s written (epoch %d%s)", self.path, payload["epoch"],
                  ", mid-epoch" if state.partial else "")
        if self.term.requested:
            raise TrainingInterrupted(self.path, payload["epoch"])


@dataclass
class _Run:
    """What an epoch needs beside the state: the data, the loss, the settings, the clock (``start``:
    when the seconds trained would have been 0) and the checkpoints."""

    train: BatchLoader
    valid: BatchLoader
    loss_fn: Callable
    settings: TrainingSettings
    checkpoints: _Checkpoints
    start: float
    lr: LearningRate

    @property
    def deadline(self) -> float:
        """``max_minutes`` after the start, counting the seconds trained before a resume."""
        return self.start + 60.0 * self.settings.max_minutes if self.settings.max_minutes else math.inf

    def seconds(self) -> float:
        return time.perf_counter() - self.start


def train_model(train, valid, model_settings: ModelSettings | None = None,
                training_settings: TrainingSettings | None = None, warm_start: str | Path | GMNN | None = None,
                progress: bool | None = None, checkpoint: str | Path | None = None,
                checkpoint_minutes: float = 5.0, restart: bool = False,
                callback: Callable[[dict], None] | None = None) -> TrainResult:
    """Train a GM-NN on ``train`` with early stopping on ``valid`` (both Structures with labels).

    ``checkpoint``: file for the training state (see the module docstring): resumed from when it exists
    and matches this training (else :class:`CheckpointMismatch`, or with ``restart=True`` removed and
    ignored); written every ``checkpoint_minutes`` (0: at the end of every epoch) and on SIGTERM, after
    which :class:`TrainingInterrupted` is raised. ``callback(row)`` is called after every epoch with
    its history row (after that epoch's checkpoint, if any).
    """
    ms = model_settings or ModelSettings()
    ts = training_settings or TrainingSettings()
    _check_labels(train, "training")
    _check_labels(valid, "validation")
    _check_same_labels(train, valid)
    if train.forces is None:
        log.info("no force labels: training on the energy term alone (w_F = 0, DESIGN §11)")
    set_threads(ts.threads)
    device = resolve_device(ts.device)
    torch.manual_seed(ts.seed)
    model = _make_model(train, valid, ms, warm_start).to(device)
    if warm_start is not None and ts.warm_shrink is not None:
        shrink_perturb(model, ts.warm_shrink, ts.warm_perturb, ts.seed)
    train_loader = model.loader(train, ts.batch_size, shuffle=True, seed=ts.seed, source="training set")
    valid_loader = model.loader(valid, max(ts.batch_size, 256), source="validation set")
    # compiles in minutes on a small CPU; pays off only for long trainings (bench_model.py)
    loss_fn = torch.compile(batch_loss, dynamic=True) if ts.compile else batch_loss
    epochs, peak = ts.budget(warm=warm_start is not None)
    lr = LearningRate(ts.schedule, peak, ts.final_learning_rate, epochs, len(train_loader))
    optimizer = torch.optim.Adam(model.parameters(), lr=peak, amsgrad=True)
    ckpt = Path(checkpoint) if checkpoint is not None else None
    fingerprint = _fingerprint(ms, ts, train, valid, model) if ckpt is not None else None
    state = _initial_state(ckpt, fingerprint, restart, model, optimizer, train_loader, valid_loader, ts)
    with StopOnSigterm(active=ckpt is not None) as term:
        run = _Run(train_loader, valid_loader, loss_fn, ts, _Checkpoints(ckpt, fingerprint, checkpoint_minutes, term),
                   start=time.perf_counter() - state.seconds, lr=lr)
        stopped = _train_epochs(state, run, callback, progress)
    model.load_state_dict(state.best_state)
    result = TrainResult(model=model, history=state.history, best_epoch=state.best_epoch,
                         best_valid_loss=state.best_valid_loss, epochs=state.epochs, seconds=run.seconds(),
                         stopped=stopped, epoch_budget=epochs)
    log.info("training stopped (%s) after %d epochs, %.1f s; best epoch %d, valid loss %.4g", result.stopped,
             result.epochs, result.seconds, result.best_epoch, result.best_valid_loss)
    return result


def _initial_state(ckpt: Path | None, fingerprint: dict | None, restart: bool, model: GMNN, optimizer,
                   train_loader: BatchLoader, valid_loader: BatchLoader, ts: TrainingSettings) -> TrainingState:
    """The state read from ``ckpt`` when it exists (unless ``restart``), else a fresh one."""
    if ckpt is not None and ckpt.exists():
        if restart:
            log.warning("restart: ignoring and removing the checkpoint %s", ckpt)
            ckpt.unlink()
        else:
            payload = _load_checkpoint(ckpt, fingerprint)
            state = TrainingState.from_checkpoint(payload, model, optimizer, train_loader)
            where = (f"inside epoch {payload['epoch']} (batch {state.partial['position'] // ts.batch_size + 1})"
                     if state.partial is not None else f"after epoch {payload['epoch']}")
            log.info("RESUMING training from checkpoint %s: %s, %.1f s trained before, best epoch %d "
                     "(valid loss %.4g)", ckpt, where, state.seconds, state.best_epoch, state.best_valid_loss)
            return state
    best_state = copy.deepcopy(model.state_dict())
    best = validate(model, valid_loader, *ts.loss_weights)
    _finite(best["valid_loss"], "validation loss before the first epoch")
    return TrainingState(model, optimizer, train_loader, best_state, best_valid_loss=best["valid_loss"],
                         plateau_lr=optimizer.param_groups[0]["lr"])


def _train_epochs(state: TrainingState, run: _Run, callback: Callable[[dict], None] | None,
                  progress: bool | None) -> str:
    """Epochs until the last one, the patience or the time limit; returns why training stopped
    (epochs | patience | time). A checkpoint is written after an epoch when one is due."""
    ts, epochs = run.settings, run.lr.epochs
    bar = progress_bar(total=epochs, initial=min(state.epochs, epochs), desc="train", unit="epoch",
                       enabled=progress)
    try:
        for epoch in range(state.epochs + 1, epochs + 1):
            row = run_epoch(state, epoch, run)
            bar.update(1)
            f_mae = row["valid_force_mae"]
            bar.set_postfix(loss=f"{row['train_loss']:.3g}", **({} if f_mae is None else {"f_mae": f"{f_mae:.3g}"}))
            stopped = None
            if state.since_best >= ts.patience:
                stopped = "patience"
            elif time.perf_counter() > run.deadline:
                stopped = "time"
            elif epoch < epochs and run.checkpoints.due(epoch_end=True):
                run.checkpoints.save(state, run.seconds())
            if callback is not None:
                callback(row)
            if stopped is not None:
                return stopped
    finally:
        bar.close()
    return "epochs"


def _finite(loss: float, what: str) -> float:
    """``loss``, or :class:`TrainingDiverged` the moment it is NaN or inf."""
    if not math.isfinite(loss):
        raise TrainingDiverged(f"{what} is {loss}: training stopped (learning rate too high, or labels far "
                               "out of range?)")
    return loss


def run_epoch(state: TrainingState, epoch: int, run: _Run) -> dict:
    """Epoch ``epoch``: AMSGrad steps on the eq.-4 loss over the shuffled training set (or over the
    rest of an epoch interrupted by a checkpoint), then the validation metrics; returns the history
    row (also recorded in ``state``). Writes a mid-epoch checkpoint when one is due."""
    loader, bs, ts = run.train, run.settings.batch_size, run.settings
    loss_weights = ts.loss_weights
    if state.partial is not None:
        p = state.partial
        order, pos, total, n = p["order"], p["position"], p["loss_sum"], p["n"]
    else:
        order, pos, total, n = loader.order(), 0, 0.0, 0
    state.model.train()
    while pos < loader.n_structures:
        batch = loader.batch(order[pos : pos + bs])
        rate = run.lr.at(epoch, pos // bs, state.plateau_lr)
        for group in state.optimizer.param_groups:
            group["lr"] = rate
        loss = run.loss_fn(state.model, batch, *loss_weights)
        state.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        state.optimizer.step()
        value = _finite(float(loss.detach()), f"training loss in epoch {epoch}, batch {pos // bs + 1} of "
                        f"{-(-loader.n_structures // bs)}")
        total += value * batch.n_structures
        n += batch.n_structures
        pos += bs
        if time.perf_counter() > run.deadline:
            break
        if pos < loader.n_structures and run.checkpoints.due(epoch_end=False):
            state.partial = {"order": order, "position": pos, "loss_sum": total, "n": n}
            run.checkpoints.save(state, run.seconds())
    state.model.eval()
    metrics = validate(state.model, run.valid, *loss_weights)
    _finite(metrics["valid_loss"], f"validation loss after epoch {epoch}")
    row = {"epoch": epoch, "train_loss": total / max(n, 1), **metrics, "seconds": round(run.seconds(), 3),
           "lr": state.optimizer.param_groups[0]["lr"]}
    improved = state.record(row)
    if run.lr.kind == "plateau":
        state.decay_on_plateau(improved, run.settings)
    f_mae = metrics["valid_force_mae"]
    log.info("epoch %d train_loss %.4g valid E_MAE %.4g eV%s%s", epoch, row["train_loss"], metrics["valid_energy_mae"],
             "" if f_mae is None else f" F_MAE {f_mae:.4g} eV/Å", " *" if improved else "")
    return row
