"""Training a GM-NN on energies and forces (DESIGN §5).

Loss, eq. (4) of the paper, per structure and averaged over the batch:
    ℓ = w_E ΔE² + w_F/(3 N_at) Σ_i |ΔF_i|²
with AMSGrad, lr 1e-3, batch 32; early stopping on the validation loss with ``patience`` epochs,
the best weights restored; optional wall-clock limit and warm start from a model file.
"""

from __future__ import annotations

import copy
import logging
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from oedal.batching import Batch, BatchLoader
from oedal.device import resolve_device, set_threads
from oedal.errors import InputError
from oedal.model import GMNN, load_model
from oedal.settings import ModelSettings, TrainingSettings

log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    model: GMNN
    history: list[dict] = field(default_factory=list)
    best_epoch: int = 0
    best_valid_loss: float = math.inf
    epochs: int = 0  # epochs run
    seconds: float = 0.0
    stopped: str = "epochs"  # epochs | patience | time


def structure_loss(batch: Batch, energy: torch.Tensor, forces: torch.Tensor, w_e: float, w_f: float) -> torch.Tensor:
    """Eq. (4) per structure: w_E ΔE² + w_F/(3N) Σ|ΔF|² (n_structures,) float64 (eV², Å² weights)."""
    de2 = (energy - batch.energy) ** 2
    df2 = ((forces - batch.forces) ** 2).sum(dim=1).to(torch.float64)
    per_struct = df2.new_zeros(batch.n_structures).index_add(0, batch.structure, df2)
    n = torch.bincount(batch.structure, minlength=batch.n_structures).to(torch.float64)
    return w_e * de2 + (w_f / 3.0) * per_struct / n


def batch_loss(model: GMNN, batch: Batch, w_e: float, w_f: float) -> torch.Tensor:
    """Mean eq.-4 loss of a batch, forces by ``torch.func.grad`` (so ``torch.compile`` can trace it)."""

    def total(d):
        energy = model._total(batch, d)
        return energy.sum(), energy

    disp = batch.displacements().to(model.dtype)
    grad, energy = torch.func.grad(total, has_aux=True)(disp)
    idx = torch.cat([batch.pair_i, batch.pair_j])
    forces = grad.new_zeros((batch.species.shape[0], 3)).index_add(0, idx, torch.cat([grad, -grad]))
    return structure_loss(batch, energy, forces, w_e, w_f).mean()


def _species_of(*sets) -> list[int]:
    return sorted(set(np.concatenate([np.unique(np.asarray(s.numbers)) for s in sets]).tolist()))


def _check_labels(structures, name: str) -> None:
    if getattr(structures, "energy", None) is None or getattr(structures, "forces", None) is None:
        raise InputError(f"{name} structures have no energy/force labels")
    if len(structures.n_atoms) == 0:
        raise InputError(f"{name} set is empty")


def validate(model: GMNN, loader: BatchLoader, w_e: float, w_f: float) -> dict:
    """Mean eq.-4 loss and energy/force MAE (eV, eV/Å) over a loader."""
    loss = e_abs = f_abs = 0.0
    n_s = n_c = 0
    for batch in loader:
        energy, forces = model.energy_and_forces(batch)
        with torch.no_grad():
            loss += float(structure_loss(batch, energy, forces, w_e, w_f).sum())
            e_abs += float((energy - batch.energy).abs().sum())
            f_abs += float((forces - batch.forces).abs().sum())
        n_s += batch.n_structures
        n_c += forces.numel()
    return {"valid_loss": loss / n_s, "valid_energy_mae": e_abs / n_s, "valid_force_mae": f_abs / n_c}


def _make_model(train, valid, model_settings: ModelSettings, warm_start) -> GMNN:
    species = _species_of(train, valid)
    if warm_start is None:
        model = GMNN(model_settings, species)
        model.init_scale_shift(train.numbers, train.n_atoms, train.energy)
        return model
    model = warm_start if isinstance(warm_start, GMNN) else load_model(warm_start, settings=model_settings)
    missing = sorted(set(species) - set(model.species))
    if missing:
        raise InputError(f"warm start {warm_start}: model does not know elements Z={missing} of the training data")
    return model


def train_model(train, valid, model_settings: ModelSettings | None = None,
                training_settings: TrainingSettings | None = None, warm_start: str | Path | GMNN | None = None,
                progress: bool | None = None) -> TrainResult:
    """Train a GM-NN on ``train`` with early stopping on ``valid`` (both Structures with labels)."""
    ms = model_settings or ModelSettings()
    ts = training_settings or TrainingSettings()
    _check_labels(train, "training")
    _check_labels(valid, "validation")
    set_threads(ts.threads)
    device = resolve_device(ts.device)
    torch.manual_seed(ts.seed)
    model = _make_model(train, valid, ms, warm_start).to(device)
    dtype = model.dtype
    cutoff = model.cutoff
    train_loader = BatchLoader(train, cutoff, model.species, ts.batch_size, shuffle=True, seed=ts.seed,
                               device=device, dtype=dtype, source="training set")
    valid_loader = BatchLoader(valid, cutoff, model.species, max(ts.batch_size, 256), device=device, dtype=dtype,
                               source="validation set")
    loss_fn = batch_loss
    if ts.compile:  # compiles in minutes on a small CPU; pays off only for long trainings (bench_model.py)
        loss_fn = torch.compile(batch_loss, dynamic=True)
    optimizer = torch.optim.Adam(model.parameters(), lr=ts.learning_rate, amsgrad=True)
    w_e, w_f = ts.weight_energy, ts.weight_forces
    result = TrainResult(model=model)
    best_state = copy.deepcopy(model.state_dict())
    best = validate(model, valid_loader, w_e, w_f)
    result.best_valid_loss = best["valid_loss"]
    start = time.perf_counter()
    deadline = start + 60.0 * ts.max_minutes if ts.max_minutes else math.inf
    show = sys.stderr.isatty() if progress is None else progress
    bar = None
    if show:
        from tqdm.auto import tqdm

        bar = tqdm(total=ts.epochs, desc="train", unit="epoch", leave=False)
    since_best = 0
    for epoch in range(1, ts.epochs + 1):
        model.train()
        total, n = 0.0, 0
        for batch in train_loader:
            loss = loss_fn(model, batch, w_e, w_f)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += float(loss.detach()) * batch.n_structures
            n += batch.n_structures
            if time.perf_counter() > deadline:
                break
        model.eval()
        metrics = validate(model, valid_loader, w_e, w_f)
        row = {"epoch": epoch, "train_loss": total / max(n, 1), **metrics,
               "seconds": round(time.perf_counter() - start, 3)}
        result.history.append(row)
        result.epochs = epoch
        improved = metrics["valid_loss"] < result.best_valid_loss
        if improved:
            result.best_valid_loss, result.best_epoch = metrics["valid_loss"], epoch
            best_state = copy.deepcopy(model.state_dict())
            since_best = 0
        else:
            since_best += 1
        log.info("epoch %d train_loss %.4g valid E_MAE %.4g eV F_MAE %.4g eV/Å%s", epoch, row["train_loss"],
                 metrics["valid_energy_mae"], metrics["valid_force_mae"], " *" if improved else "")
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{row['train_loss']:.3g}", f_mae=f"{metrics['valid_force_mae']:.3g}")
        if since_best >= ts.patience:
            result.stopped = "patience"
            break
        if time.perf_counter() > deadline:
            result.stopped = "time"
            break
    if bar is not None:
        bar.close()
    model.load_state_dict(best_state)
    result.seconds = time.perf_counter() - start
    log.info("training stopped (%s) after %d epochs, %.1f s; best epoch %d, valid loss %.4g", result.stopped,
             result.epochs, result.seconds, result.best_epoch, result.best_valid_loss)
    return result
