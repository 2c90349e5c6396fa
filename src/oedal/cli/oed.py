"""``oedal score`` and ``oedal select``: thin wrappers around oedal.oed.scoring."""

from __future__ import annotations

import argparse
import logging

from oedal.cli import add_min_distance
from oedal.data.validate import check_store
from oedal.files import check_outputs
from oedal.oed.scorers import SCORERS, QS2Settings, QS3Settings, ScoreSettings, ScoreSettingsBase
from oedal.settings import SelectSettings, choices, describe, load_settings, settings_data

log = logging.getLogger("oedal.cli.oed")


def _score(args: argparse.Namespace) -> int:
    from oedal.device import set_threads
    from oedal.gmnn.model import read_model_file
    from oedal.oed.scoring import score_pool

    data = settings_data(args.settings)
    data.setdefault("kind", args.strategy or "qs1")
    settings = load_settings(ScoreSettings, data, kind=args.strategy, beta=args.beta, threshold=args.threshold,
                             reduction=args.reduction, device=args.device, chunk_size=args.chunk_size,
                             projections=False if args.no_projections else None)
    check_outputs(args.out)
    known = set.intersection(*(set(read_model_file(path)["species"]) for path in args.model))
    for path in (args.train, args.pool):
        check_store(path, known_numbers=known, min_distance=args.min_distance)
    set_threads(args.threads)
    summary = score_pool(args.model, args.train, args.pool, args.out, settings,
                         save_sensitivities=args.save_sensitivities)
    log.info("%s: threshold %.6g, %d of %d pool structures informative (I > 1)", summary.strategy,
             summary.threshold, summary.n_informative, summary.n_pool)
    return 0


def _select(args: argparse.Namespace) -> int:
    from oedal.oed.batch import select_batch

    check_outputs(args.out)
    check_store(args.pool, min_distance=args.min_distance)
    overrides = {"method": args.method, "seed": args.seed}
    if args.n is not None:
        overrides.update(n=args.n, fraction=None)
    elif args.fraction is not None:
        overrides.update(fraction=args.fraction)
    settings = load_settings(SelectSettings, args.settings, **overrides)
    if args.n is not None:
        settings = settings.model_copy(update={"fraction": None})
    select_batch(args.scores, args.pool, args.out, settings, n_train=args.n_train, exclude=args.exclude or ())
    return 0


def register(sub) -> None:
    p = sub.add_parser("score", help="score a pool with an OED (qs1|qs2|qs3) or QbC strategy")
    p.add_argument("--model", action="append", required=True, help="model file (repeat for qbc: K ≥ 2)")
    p.add_argument("--train", required=True, help="training structure store (HDF5)")
    p.add_argument("--pool", required=True, help="pool structure store (HDF5)")
    p.add_argument("--out", required=True, help="scores file to write (HDF5)")
    p.add_argument("--strategy", "--kind", dest="strategy", choices=list(SCORERS), default=None,
                   help="the score (default qs1): " + "; ".join(f"{k}: {c.__doc__.splitlines()[0]}" for k, c in SCORERS.items()))
    p.add_argument("--beta", type=float, default=None, help=describe(QS3Settings, "beta"))
    p.add_argument("--threshold", choices=choices(ScoreSettingsBase, "threshold"), default=None,
                   help=describe(ScoreSettingsBase, "threshold"))
    p.add_argument("--reduction", choices=choices(QS2Settings, "reduction"), default=None,
                   help=describe(QS2Settings, "reduction"))
    p.add_argument("--save-sensitivities", action="store_true", help="also store g_train and g_pool (QS1)")
    p.add_argument("--no-projections", action="store_true",
                   help="do not store u_energy / u_forces (only greedy selection reads them; QS2 rows are large)")
    p.add_argument("--settings", default=None, help="score settings (with their kind) as JSON string or file")
    p.add_argument("--chunk-size", type=int, default=None, help=describe(ScoreSettingsBase, "chunk_size"))
    p.add_argument("--device", default=None)
    p.add_argument("--threads", type=int, default=None)
    add_min_distance(p)
    p.set_defaults(func=_score)

    p = sub.add_parser("select", help="select a batch of pool structures from a scores file")
    p.add_argument("--scores", default=None,
                   help="scores file (oedal score); optional for --method random (then give --exclude TRAIN.h5)")
    p.add_argument("--pool", required=True)
    p.add_argument("--out", required=True, help="selected (unlabeled) structures, HDF5 store")
    p.add_argument("--method", choices=choices(SelectSettings, "method"), default=None,
                   help=describe(SelectSettings, "method"))
    g = p.add_mutually_exclusive_group()
    g.add_argument("--n", type=int, default=None, help="number to select")
    g.add_argument("--fraction", type=float, default=None, help="m = fraction · N_train")
    p.add_argument("--n-train", type=int, default=None,
                   help="N_train for --fraction (default: the scores file's n_train; needed without --scores)")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--exclude", action="append", help="store whose ids may not be picked (repeatable)")
    p.add_argument("--settings", default=None, help="SelectSettings as JSON string or file")
    add_min_distance(p)
    p.set_defaults(func=_select)
