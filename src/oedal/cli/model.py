"""``oedal train`` and ``oedal evaluate``: thin wrappers around oedal.gmnn.training / oedal.gmnn.evaluation."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from oedal.cli import add_min_distance
from oedal.files import check_outputs

log = logging.getLogger("oedal.cli.model")
DEVICE_HELP = "auto | cpu | cuda | cuda:N (cuda without a CUDA device: a warning, then the CPU)"


def _train(args: argparse.Namespace) -> int:
    from oedal.campaign.model_steps import train_step
    from oedal.gmnn.training import TrainingInterrupted
    from oedal.settings import ModelSettings, TrainingSettings, load_settings

    ts = load_settings(TrainingSettings, args.settings, epochs=args.epochs, seed=args.seed, device=args.device,
                       threads=args.threads)
    ms = load_settings(ModelSettings, args.model_settings)
    if args.carry_from is not None and args.status is None:
        raise ValueError("--carry-from needs --status (the status.json that says whether the campaign has stopped)")
    ckpt = None if args.no_checkpoint else (args.checkpoint or args.out.with_name(args.out.name + ".ckpt"))
    check_outputs(args.out, ckpt)
    try:
        train_step(args.train, args.valid, args.out, ms, ts, warm_start=args.warm_start, checkpoint=ckpt,
                   checkpoint_minutes=args.checkpoint_minutes, restart=args.restart,
                   uncertainty=not args.no_uncertainty, atom_uncertainty=args.atom_uncertainty, status=args.status,
                   carry_from=args.carry_from, min_distance=args.min_distance)
    except TrainingInterrupted as err:
        log.warning("%s", err)
        return 128 + 15  # as if killed by SIGTERM: the job failed, the checkpoint stays for the rerun
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from oedal.campaign.model_steps import evaluate_step
    from oedal.device import resolve_device, set_threads

    check_outputs(args.out)
    set_threads(args.threads)
    evaluate_step(args.model, args.data, args.out, device=resolve_device(args.device), batch_size=args.batch_size,
                  only_ids_of=args.only_ids_of, allow_empty=args.allow_empty, min_distance=args.min_distance)
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
