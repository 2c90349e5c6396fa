"""The model steps of an iteration (``oedal train``, ``oedal evaluate``), composed from the library: the
stores checked, a model trained (or, once the campaign has stopped, the previous one carried over) and
saved with its fitted uncertainty, its checkpoint removed; a model tested, with how it was trained and how
its uncertainty tracked the errors."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import NamedTuple

import numpy as np

from oedal.data.validate import check_store
from oedal.files import atomic_path

log = logging.getLogger(__name__)


class TrainOutcome(NamedTuple):
    trained: bool  # False: the campaign had stopped and the previous model was carried over
    best_epoch: int | None = None
    epochs: int | None = None


def train_step(train_path: str | Path, valid_path: str | Path, out: str | Path, model_settings, training_settings, *,
               warm_start: str | Path | None = None, checkpoint: Path | None = None, checkpoint_minutes: float = 5.0,
               restart: bool = False, uncertainty: bool = True, atom_uncertainty: bool = False,
               status: str | Path | None = None, carry_from: str | Path | None = None,
               min_distance: float | None = None) -> TrainOutcome:
    """Train a GM-NN on the stores ``train_path`` / ``valid_path`` and save it to ``out`` with its fitted
    uncertainty (oedal.oed.uncertainty), or, where ``status`` says the campaign has stopped, copy
    ``carry_from`` there instead. The stores are checked first; the checkpoint (resumed from if it exists)
    is removed once the model is saved. gmnn.training.TrainingInterrupted leaves the checkpoint for a rerun."""
    from oedal.campaign.merge import carry_over
    from oedal.data.store import read_store
    from oedal.data.validate import MIN_DISTANCE
    from oedal.gmnn.model import save_model
    from oedal.gmnn.training import train_model

    if status is not None and carry_over(status, carry_from, out):
        return TrainOutcome(False)
    for path in (train_path, valid_path):  # forces where the store has them; energies alone otherwise (QM9)
        check_store(path, labels=True, min_distance=MIN_DISTANCE if min_distance is None else min_distance)
    train, valid = read_store(train_path), read_store(valid_path)
    result = train_model(train, valid, model_settings, training_settings, warm_start=warm_start, checkpoint=checkpoint,
                         checkpoint_minutes=checkpoint_minutes, restart=restart)
    fitted = None
    if uncertainty and train.forces is None:
        log.info("no force labels: the model is saved without a fitted uncertainty (its error map is a force error)")
    elif uncertainty:
        from oedal.oed.uncertainty import fit_uncertainty

        fitted = fit_uncertainty(result.model, train, valid, atoms=atom_uncertainty).to_payload()
    save_model(result.model, out, history=result.history, best_epoch=result.best_epoch,
               best_valid_loss=result.best_valid_loss, stopped=result.stopped, seconds=result.seconds,
               epochs=result.epochs, epoch_budget=result.epoch_budget,
               training_settings=training_settings.model_dump(mode="json"), n_train=len(train.n_atoms),
               n_valid=len(valid.n_atoms), warm_start=str(warm_start) if warm_start else None, uncertainty=fitted)
    log.info("wrote %s (best epoch %d of %d)", out, result.best_epoch, result.epochs)
    if checkpoint is not None and Path(checkpoint).exists():
        Path(checkpoint).unlink()
        log.info("removed the checkpoint %s", checkpoint)
    return TrainOutcome(True, result.best_epoch, result.epochs)


def training_record(meta: dict) -> dict:
    """How the evaluated model was trained, from its file (metrics.json, the summary): epochs run, the
    budget, the best epoch, why it stopped (epochs | patience | time: the wall-clock limit bound), seconds."""
    history = meta.get("history") or []
    return {"training_epochs": int(meta.get("epochs", len(history))), "training_epoch_budget": meta.get("epoch_budget"),
            "training_best_epoch": meta.get("best_epoch"), "training_stopped": meta.get("stopped"),
            "training_seconds": meta.get("seconds"), "training_warm_start": bool(meta.get("warm_start"))}


def write_metrics(metrics: dict, path: str | Path) -> None:
    """A metrics file (JSON, indented), atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(metrics, indent=2))


def evaluate_step(model_path: str | Path, data_path: str | Path, out: str | Path, *, device="cpu",
                  batch_size: int = 1024, only_ids_of: str | Path | None = None, allow_empty: bool = False,
                  min_distance: float | None = None) -> dict:
    """Test-set errors of the model ``model_path`` on the labeled store ``data_path`` (optionally only the
    structures whose ids ``only_ids_of`` holds), how it was trained, and how its uncertainty tracks the
    errors; written to ``out``. ``allow_empty``: no structure gives ``{n_structures: 0}``, not an error."""
    from oedal.data.store import StoreReader, read_store
    from oedal.data.validate import MIN_DISTANCE
    from oedal.gmnn.evaluation import error_metrics
    from oedal.gmnn.model import load_model

    empty = {"n_structures": 0, "model": str(model_path), "data": str(data_path)}
    if allow_empty:
        with StoreReader(data_path) as reader:
            if len(reader) == 0:  # e.g. an iteration that labeled nothing
                return _nothing(empty, data_path, out)
    model = load_model(model_path, device=device)
    check_store(data_path, labels=True, known_numbers=model.species,
                min_distance=MIN_DISTANCE if min_distance is None else min_distance)
    data = read_store(data_path)
    if only_ids_of is not None:  # e.g. the selected frames among an iteration's labeled ones
        data = data.subset(np.flatnonzero(np.isin(data.ids, read_store(only_ids_of).ids)))
    if len(data) == 0 and allow_empty:
        return _nothing(empty, data_path, out)
    metrics = error_metrics(model, data, batch_size=batch_size)
    metrics.update(training_record(model.meta))
    if model.meta.get("uncertainty") is not None and data.forces is not None and len(data) > 2:  # does the uncertainty track the error?
        from oedal.oed.uncertainty import assess_on, model_head

        metrics["uncertainty"] = assess_on(model, model_head(model), data)
    metrics["model"], metrics["data"] = str(model_path), str(data_path)
    write_metrics(metrics, out)
    log.info("%senergy MAE %.4f kcal/mol -> %s", f"forces MAE {metrics['forces_mae_kcal/mol/A']:.4f} kcal/mol/Å, "
             if "forces_mae_kcal/mol/A" in metrics else "", metrics["energy_mae_kcal/mol"], out)
    return metrics


def _nothing(empty: dict, data_path, out) -> dict:
    write_metrics(empty, out)
    log.info("%s: no structure to evaluate -> %s", data_path, out)
    return empty
