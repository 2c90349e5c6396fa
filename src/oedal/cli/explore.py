"""``oedal explore``: one shard of MD walkers with the model, judged by its uncertainty (oedal.campaign.explore)."""

from __future__ import annotations

import argparse
import logging

from oedal.files import check_outputs

log = logging.getLogger("oedal.cli.explore")


def _explore(args: argparse.Namespace) -> int:
    from oedal.campaign.explore import explore_shard
    from oedal.campaign.settings import ExploreSettings
    from oedal.device import set_threads
    from oedal.settings import load_settings

    settings = load_settings(ExploreSettings, args.settings)
    check_outputs(args.candidates, args.walkers)
    if not 0 <= args.shard < args.shards:
        raise ValueError(f"--shard {args.shard} is not in 0..{args.shards - 1}")
    set_threads(args.threads)
    explore_shard(args.model, settings, shard=args.shard, shards=args.shards, seed=args.seed, iteration=args.iteration,
                  out_candidates=args.candidates, out_walkers=args.walkers, previous=args.previous or ())
    return 0


def register(sub) -> None:
    p = sub.add_parser("explore", help="run one shard of MD walkers with a model; write its candidates",
                       description="Langevin MD walkers driven by the model (which must carry its uncertainty: "
                       "oedal train stores it); every check_every steps a frame is accurate, a candidate, or the "
                       "walker stops. A killed run resumes from CANDIDATES' walker checkpoint.")
    p.add_argument("--model", required=True, help="model file (.pt) with its fitted uncertainty")
    p.add_argument("--settings", default=None, help="ExploreSettings as JSON text or file (the campaign's `explore`)")
    p.add_argument("--previous", nargs="*", default=None,
                   help="walker files of the previous iteration to resume from (default: start from settings.starts)")
    p.add_argument("--shard", type=int, default=0)
    p.add_argument("--shards", type=int, default=1)
    p.add_argument("--seed", type=int, default=0, help="seed of the walkers' random streams (iteration 0)")
    p.add_argument("--iteration", type=int, default=0, help="the campaign iteration (candidate ids)")
    p.add_argument("--candidates", required=True, help="candidates to write (unlabeled store, .h5)")
    p.add_argument("--walkers", required=True, help="walker states to write (.json)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (one is fastest for small molecules)")
    p.set_defaults(func=_explore)
