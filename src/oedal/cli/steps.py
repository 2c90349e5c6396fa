"""``oedal split|shard|gather|merge|summary|schema``: the workflow's glue steps (oedal.campaign: split, scatter, gather, merge, summary)."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from oedal.errors import InputError
from oedal.files import check_outputs

log = logging.getLogger("oedal.cli.steps")


def _split(args: argparse.Namespace) -> int:
    from oedal.campaign.settings import SplitSettings
    from oedal.settings import load_settings
    from oedal.campaign.split import split_dataset

    settings = load_settings(SplitSettings, args.settings)
    check_outputs(args.test, folders=(args.out_dir,))
    if args.test_source:
        from oedal.campaign.split import split_explore

        split_explore(args.source, args.test_source, args.out_dir, args.test, settings, args.seed)
    else:
        split_dataset(args.source, args.out_dir, args.test, settings, args.seed)
    return 0


def _shard(args: argparse.Namespace) -> int:
    from oedal.campaign.settings import StopSettings
    from oedal.settings import load_settings
    from oedal.campaign.scatter import shard_selection

    stop = load_settings(StopSettings, args.stop)
    check_outputs(args.request, *args.out)
    shard_selection(
        args.selected, args.pool, args.status, args.out, args.request,
        metrics=args.metrics, scores=args.scores, n_valid=args.n_valid, seed=args.seed,
        target_metric=stop.target_metric, target=stop.target, informative=stop.informative, explore=args.explore,
    )
    return 0


def _gather(args: argparse.Namespace) -> int:
    from oedal.campaign.gather import gather_failed, gather_stores

    check_outputs(args.out, args.failed_out)
    n = gather_stores(args.labeled, args.out)
    n_failed = gather_failed(args.failed, args.failed_out) if args.failed else 0
    log.info("gathered %d labeled and %d failed structures from %d shards", n, n_failed, len(args.labeled))
    return 0


def _merge(args: argparse.Namespace) -> int:
    from oedal.campaign.merge import merge_labels

    check_outputs(folders=(args.out_dir,))
    merge_labels(args.prev_dir, args.out_dir, redraw_valid=args.redraw_valid, keep_pool=not args.no_pool,
                 valid_share=args.valid_share)
    return 0


def _summary(args: argparse.Namespace) -> int:
    from oedal.campaign.summary import write_summary

    runs = []
    for spec in args.run:
        strategy, seed, path = spec.split(":", 2)
        runs.append((strategy, int(seed), Path(path)))
    check_outputs(*(p for p in (args.out, args.comparison, args.verdict) if p))
    for path in args.potentials or []:
        if not Path(path).is_file():
            raise InputError(f"--potentials {path}: no such file (made by `oedal baseline`)")
    extra = dict(spec.split(":", 1) for spec in args.metrics or [])
    rows = write_summary(runs, args.iterations, args.out, comparison=args.comparison, verdict=args.verdict,
                         baseline=args.baseline, extra=extra, members=args.training_seeds,
                         potentials=args.potentials or [], md_pool=args.md_pool)
    log.info("summary: %d rows -> %s", len(rows), args.out)
    return 0


def _schema(args: argparse.Namespace) -> int:
    from oedal.campaign.settings import CampaignSettings

    schema = {"$schema": "https://json-schema.org/draft/2020-12/schema", **CampaignSettings.model_json_schema()}
    check_outputs(args.out)
    text = json.dumps(schema, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
    if args.out:
        Path(args.out).write_text(text)
    else:
        print(text, end="")
    return 0


def register(subparsers) -> None:
    _register_loop(subparsers)
    _register_summary(subparsers)


def _register_loop(subparsers) -> None:
    """The steps of one iteration: split, shard, gather, merge."""
    p = subparsers.add_parser("split", help="iteration 0: train/valid/pool(unlabeled)/test from a labeled store")
    p.add_argument("--source", required=True, help="labeled structure store (.h5)")
    p.add_argument("--out-dir", required=True, help="iteration-0 directory (train.h5 valid.h5 pool.h5 status.json)")
    p.add_argument("--test", required=True, help="test-set store to write")
    p.add_argument("--settings", default=None, help="SplitSettings as JSON (string or file)")
    p.add_argument("--seed", type=int, required=True)
    p.add_argument("--test-source", default=None,
                   help="exploration: train/valid from --source (labeled starts), the test set from this labeled "
                   "store; no pool is written")
    p.set_defaults(func=_split)

    p = subparsers.add_parser("shard", help="decide whether to stop; scatter the structures to label over shards")
    p.add_argument("--selected", required=True, help="selected.h5 of this iteration")
    p.add_argument("--pool", required=True, help="pool.h5 of this iteration")
    p.add_argument("--status", required=True, help="status.json of this iteration")
    p.add_argument("--metrics", default=None, help="metrics.json (for stop.target)")
    p.add_argument("--scores", default=None, help="scores.h5 (for the I ≤ 1 stop)")
    p.add_argument("--stop", default=None, help="StopSettings as JSON")
    p.add_argument("--explore", default=None, help="explore.json of this iteration's walkers (convergence stop)")
    p.add_argument("--n-valid", type=int, default=0, help="validation structures to redraw from the pool (0: keep)")
    p.add_argument("--seed", type=int, default=0, help="seed of the validation redraw")
    p.add_argument("--request", required=True, help="request.json to write")
    p.add_argument("--out", nargs="+", required=True, help="shard files to write (a fixed number)")
    p.set_defaults(func=_shard)

    p = subparsers.add_parser("gather", help="join labeled (and failed) shards")
    p.add_argument("--labeled", nargs="+", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--failed", nargs="*", default=[])
    p.add_argument("--failed-out", default=None)
    p.set_defaults(func=_gather)

    p = subparsers.add_parser("merge", help="next iteration's train/valid/pool/status from the labeled batch")
    p.add_argument("--prev-dir", required=True, help="iteration i-1 directory")
    p.add_argument("--out-dir", required=True, help="iteration i directory")
    p.add_argument("--redraw-valid", action="store_true", help="the labeled redraw becomes the validation set")
    p.add_argument("--no-pool", action="store_true", help="exploration: write no pool.h5 (the walkers make it)")
    p.add_argument("--valid-share", type=float, default=0.0,
                   help="share of the labeled selection that joins the validation set (every 1/share-th pick)")
    p.set_defaults(func=_merge)


def _register_summary(subparsers) -> None:
    """The campaign's summary and the config's schema."""
    p = subparsers.add_parser("summary", help="campaign summary table (CSV)")
    p.add_argument("--run", nargs="+", required=True, help="STRATEGY:SEED:RUN_DIR")
    p.add_argument("--iterations", type=int, required=True, help="last iteration index")
    p.add_argument("--out", required=True, help="summary table (CSV)")
    p.add_argument("--comparison", default=None,
                   help="paired comparison with the baseline: ratios with intervals over seeds (CSV)")
    p.add_argument("--verdict", default=None, help="the verdict sentences and warnings (text)")
    p.add_argument("--baseline", default="random", help="the strategy every other is compared with")
    p.add_argument("--metrics", action="append", default=None, metavar="PREFIX:FILE",
                   help="another metrics file of every iteration (e.g. a transfer test set), as PREFIX_ columns")
    p.add_argument("--training-seeds", type=int, default=1,
                   help="models per iteration trained on the same set (metrics.json, metrics_k1.json, ...): "
                   "their geometric mean and spread as seeds_* columns, compared instead of one model's errors")
    p.add_argument("--potentials", nargs="*", default=None, metavar="BASELINE.json",
                   help="reference potentials' errors on the test sets (`oedal baseline`), one line each in the verdict")
    p.add_argument("--md-pool", default=None, metavar="MD_POOL.h5",
                   help="the random run's MD pool (explore.random_pool md): what it cost, a line in the verdict")
    p.set_defaults(func=_summary)

    p = subparsers.add_parser("schema", help="JSON schema of the workflow config (CampaignSettings)")
    p.add_argument("--out", default=None, help="file to write (default: stdout)")
    p.set_defaults(func=_schema)
