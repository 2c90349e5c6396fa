"""``oedal train`` and ``oedal evaluate``: thin wrappers around oedal.gmnn.training / oedal.gmnn.evaluation."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import numpy as np

from oedal.cli import add_min_distance
from oedal.data.validate import check_store
from oedal.files import atomic_path, check_outputs

log = logging.getLogger("oedal.cli.model")
DEVICE_HELP = "auto | cpu | cuda | cuda:N (cuda without a CUDA device: a warning, then the CPU)"


def _train(args: argparse.Namespace) -> int:
    from oedal.campaign.steps import carry_over
    from oedal.data.store import read_store
    from oedal.gmnn.model import save_model
    from oedal.settings import ModelSettings, TrainingSettings, load_settings
    from oedal.gmnn.training import TrainingInterrupted, train_model

    ts = load_settings(TrainingSettings, args.settings, epochs=args.epochs, seed=args.seed, device=args.device,
                       threads=args.threads)
    ms = load_settings(ModelSettings, args.model_settings)
    if args.carry_from is not None and args.status is None:
        raise ValueError("--carry-from needs --status (the status.json that says whether the campaign has stopped)")
    ckpt = None if args.no_checkpoint else (args.checkpoint or args.out.with_name(args.out.name + ".ckpt"))
    check_outputs(args.out, ckpt)
    if args.status is not None and carry_over(args.status, args.carry_from, args.out):
        return 0  # the campaign has stopped: the previous model was copied, nothing trained
    for path in (args.train, args.valid):
        check_store(path, labels=True, forces=True, min_distance=args.min_distance)
    train = read_store(args.train)
    valid = read_store(args.valid)
    try:
        result = train_model(train, valid, ms, ts, warm_start=args.warm_start, checkpoint=ckpt,
                             checkpoint_minutes=args.checkpoint_minutes, restart=args.restart)
    except TrainingInterrupted as err:
        log.warning("%s", err)
        return 128 + 15  # as if killed by SIGTERM: the job failed, the checkpoint stays for the rerun
    save_model(result.model, args.out, history=result.history, best_epoch=result.best_epoch,
               best_valid_loss=result.best_valid_loss, stopped=result.stopped, seconds=result.seconds,
               epochs=result.epochs, epoch_budget=result.epoch_budget,
               training_settings=ts.model_dump(mode="json"), n_train=len(train.n_atoms),
               n_valid=len(valid.n_atoms), warm_start=str(args.warm_start) if args.warm_start else None,
               uncertainty=None if args.no_uncertainty else _uncertainty(result.model, train, valid, args))
    log.info("wrote %s (best epoch %d of %d)", args.out, result.best_epoch, result.epochs)
    if ckpt is not None and ckpt.exists():
        ckpt.unlink()
        log.info("removed the checkpoint %s", ckpt)
    return 0


def _uncertainty(model, train, valid, args: argparse.Namespace) -> dict:
    """The model's fitted uncertainty (oedal.oed.uncertainty), stored in its file for the calculator."""
    from oedal.oed.uncertainty import fit_uncertainty

    return fit_uncertainty(model, train, valid, atoms=args.atom_uncertainty).to_payload()


def training_record(meta: dict) -> dict:
    """How the evaluated model was trained, from its file (metrics.json, the summary): epochs run, the
    budget, the best epoch, why it stopped (epochs | patience | time: the wall-clock limit bound), seconds."""
    history = meta.get("history") or []
    return {"training_epochs": int(meta.get("epochs", len(history))), "training_epoch_budget": meta.get("epoch_budget"),
            "training_best_epoch": meta.get("best_epoch"), "training_stopped": meta.get("stopped"),
            "training_seconds": meta.get("seconds"), "training_warm_start": bool(meta.get("warm_start"))}


def _write_json_atomic(data: dict, path: Path) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2))


def _store_size(path) -> int:
    from oedal.data.store import StoreReader

    with StoreReader(path) as reader:
        return len(reader)


def _nothing_to_evaluate(args: argparse.Namespace) -> int:
    """``--allow-empty`` and no structure to evaluate: metrics that say so."""
    _write_json_atomic({"n_structures": 0, "model": str(args.model), "data": str(args.data)}, Path(args.out))
    log.info("%s: no structure to evaluate -> %s", args.data, args.out)
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from oedal.data.store import read_store
    from oedal.device import resolve_device, set_threads
    from oedal.gmnn.evaluation import error_metrics
    from oedal.gmnn.model import load_model

    check_outputs(args.out)
    if args.allow_empty and _store_size(args.data) == 0:  # e.g. an iteration that labeled nothing
        return _nothing_to_evaluate(args)
    set_threads(args.threads)
    model = load_model(args.model, device=resolve_device(args.device))
    check_store(args.data, labels=True, forces=True, known_numbers=model.species, min_distance=args.min_distance)
    data = read_store(args.data)
    if args.only_ids_of is not None:  # e.g. the selected frames among an iteration's labeled ones
        data = data.subset(np.flatnonzero(np.isin(data.ids, read_store(args.only_ids_of).ids)))
    if len(data) == 0 and args.allow_empty:
        return _nothing_to_evaluate(args)
    metrics = error_metrics(model, data, batch_size=args.batch_size)
    metrics.update(training_record(model.meta))
    if model.meta.get("uncertainty") is not None and len(data) > 2:  # does the uncertainty track the error?
        from oedal.oed.uncertainty import assess_on, model_head

        metrics["uncertainty"] = assess_on(model, model_head(model), data)
    metrics["model"] = str(args.model)
    metrics["data"] = str(args.data)
    _write_json_atomic(metrics, Path(args.out))
    log.info("forces MAE %.4f kcal/mol/Å, energy MAE %.4f kcal/mol -> %s",
             metrics["forces_mae_kcal/mol/A"], metrics["energy_mae_kcal/mol"], args.out)
    return 0


def register(sub) -> None:
    p = sub.add_parser("train", help="train a GM-NN on a labeled store (early stopping on a validation store)")
    p.add_argument("--train", required=True, type=Path, help="labeled training store (.h5)")
    p.add_argument("--valid", required=True, type=Path, help="labeled validation store (.h5)")
    p.add_argument("--out", required=True, type=Path, help="model file to write (.pt)")
    p.add_argument("--epochs", type=int)
    p.add_argument("--seed", type=int)
    p.add_argument("--settings", help="TrainingSettings as JSON text or a JSON file (flags override)")
    p.add_argument("--model-settings", help="ModelSettings as JSON text or a JSON file")
    p.add_argument("--warm-start", type=Path, help="start from this model file (same model settings)")
    p.add_argument("--device", help=DEVICE_HELP)
    p.add_argument("--threads", type=int, help="torch CPU threads")
    p.add_argument("--checkpoint", type=Path,
                   help="training-state file, resumed from if it exists (default: OUT.ckpt; removed at the end)")
    p.add_argument("--no-checkpoint", action="store_true", help="write no checkpoint, resume from none")
    p.add_argument("--no-uncertainty", action="store_true",
                   help="store no fitted uncertainty (QS1 prior, σ_th, score-to-force-error map) in the model file")
    p.add_argument("--atom-uncertainty", action="store_true",
                   help="also fit the per-atom force uncertainty (QS2 per atom) for the calculator")
    p.add_argument("--checkpoint-minutes", type=float, default=5.0, metavar="M",
                   help="write the checkpoint every M minutes (0: after every epoch) and on SIGTERM (default 5)")
    p.add_argument("--restart", action="store_true",
                   help="ignore and remove an existing checkpoint (needed when it belongs to other settings/data)")
    p.add_argument("--status", type=Path, metavar="STATUS.json",
                   help="the iteration's status.json: once the campaign has stopped, train nothing and copy the "
                        "--carry-from model to OUT instead")
    p.add_argument("--carry-from", type=Path, metavar="PREV_MODEL",
                   help="with --status: the previous iteration's model, copied when the campaign has stopped")
    add_min_distance(p)
    p.set_defaults(func=_train)

    p = sub.add_parser("evaluate", help="error metrics of a model on a labeled store")
    p.add_argument("--model", required=True, type=Path)
    p.add_argument("--data", required=True, type=Path, help="labeled store (.h5)")
    p.add_argument("--out", required=True, type=Path, help="metrics JSON to write")
    p.add_argument("--batch-size", type=int, default=1024)
    p.add_argument("--device", default="cpu", help=DEVICE_HELP + " (default: cpu)")
    p.add_argument("--threads", type=int)
    p.add_argument("--allow-empty", action="store_true", help="an empty store gives {n_structures: 0}, not an error")
    p.add_argument("--only-ids-of", type=Path, default=None, help="evaluate only the structures whose ids this "
                   "store holds (e.g. an iteration's selected.h5 within its labeled.h5)")
    add_min_distance(p)
    p.set_defaults(func=_evaluate)
