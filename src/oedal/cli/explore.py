"""``oedal explore``: one shard of MD walkers with the model, judged by its uncertainty (oedal.campaign.explore)."""

from __future__ import annotations

import argparse
import logging

from oedal.files import check_outputs

log = logging.getLogger("oedal.cli.explore")


def _explore(args: argparse.Namespace) -> int:
    from oedal.campaign.explore.shard import explore_shard
    from oedal.campaign.settings import ExploreSettings
    from oedal.device import set_threads
    from oedal.settings import load_settings

    settings = load_settings(ExploreSettings, args.settings)
    check_outputs(args.candidates, args.walkers)
    if not 0 <= args.shard < args.shards:
        raise ValueError(f"--shard {args.shard} is not in 0..{args.shards - 1}")
    set_threads(args.threads)
    explore_shard(args.model, settings, shard=args.shard, shards=args.shards, seed=args.seed, iteration=args.iteration,
                  out_candidates=args.candidates, out_walkers=args.walkers, previous=args.previous or (),
                  status=args.status, device=args.device)
    return 0


def _initial(args: argparse.Namespace) -> int:
    from oedal.campaign.explore.starts import write_initial_structures
    from oedal.campaign.settings import ExploreSettings, SamplingSettings
    from oedal.settings import load_settings

    settings = load_settings(ExploreSettings, args.settings)
    sampling = load_settings(SamplingSettings, args.sampling)
    check_outputs(args.out)
    write_initial_structures(settings, sampling, args.n, args.seed, args.out)
    return 0


def _md_pool(args: argparse.Namespace) -> int:
    from oedal.campaign.explore.starts import write_md_pool
    from oedal.campaign.settings import ExploreSettings, SamplingSettings
    from oedal.settings import load_settings

    settings = load_settings(ExploreSettings, args.settings)
    sampling = load_settings(SamplingSettings, args.sampling)
    check_outputs(args.out)
    write_md_pool(settings, sampling, args.seed, args.out)
    return 0


def _gather(args: argparse.Namespace) -> int:
    from oedal.campaign.explore.shard import gather_candidates

    check_outputs(args.out, args.summary)
    counts = gather_candidates(args.candidates, args.walkers, args.converged, args.out, args.summary)
    log.info("exploration: %d candidates; %d of %d walkers clean (%.0f%%), %d stopped%s", counts.candidates,
             counts.clean, counts.walkers, 100 * counts.clean_share, counts.stopped,
             " — converged" if counts.converged else "")
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
    p.add_argument("--device", default="cpu", help="where the model and the walkers' step loop run: cpu | cuda | "
                   "cuda:N | auto (a GPU asked for where there is none: one warning, the CPU)")
    p.add_argument("--status", default=None, help="the iteration's status.json: once the campaign has stopped, no MD")
    p.set_defaults(func=_explore)

    p = sub.add_parser("initial", aliases=["rattle"], help="the exploration campaign's initial structures "
                       "(unlabeled): rattled copies of the starts, or a short MD of them (explore.initial)")
    p.add_argument("--settings", default=None, help="ExploreSettings as JSON text or file (starts, initial, rattle)")
    p.add_argument("--sampling", default=None, help="SamplingSettings as JSON text or file (the MD's potential)")
    p.add_argument("--n", type=int, required=True, help="number of structures")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, help="unlabeled store to write (.h5)")
    p.set_defaults(func=_initial)

    p = sub.add_parser("md-pool", help="the random baseline's pool of an exploration campaign (unlabeled): MD of "
                       "the starts at every walker temperature with the sampling potential (explore.random_pool md)")
    p.add_argument("--settings", default=None, help="ExploreSettings as JSON text or file (starts, temperatures, "
                   "pool_frames)")
    p.add_argument("--sampling", default=None, help="SamplingSettings as JSON text or file (the MD: potential, time "
                   "step, friction, interval, equilibration_steps)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, help="unlabeled store to write (.h5)")
    p.set_defaults(func=_md_pool)

    p = sub.add_parser("gather-candidates", help="one pool from every walker shard's candidates, and the counts")
    p.add_argument("--candidates", nargs="+", required=True, help="candidate stores of the shards")
    p.add_argument("--walkers", nargs="+", required=True, help="walker files of the shards")
    p.add_argument("--converged", type=float, required=True, help="share of clean walkers that ends exploration")
    p.add_argument("--out", required=True, help="the iteration's pool (.h5)")
    p.add_argument("--summary", required=True, help="counts accurate / candidate / stopped (explore.json)")
    p.set_defaults(func=_gather)
