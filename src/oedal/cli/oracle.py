"""`oedal label` (one shard through an oracle), `oedal sample` (an MD candidate pool) and `oedal baseline` (a
potential's errors on a labeled set)."""

from __future__ import annotations

import argparse
import os

from oedal.errors import OedalError
from oedal.files import check_outputs
from oedal.oracles.cache import JOURNALS
from oedal.oracles.registry import ORACLES


def register(sub: argparse._SubParsersAction) -> None:
    _register_label(sub)
    _register_sample(sub)
    _register_baseline(sub)


def _register_label(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "label",
        help="label one shard with an oracle",
        description="Label every structure of an unlabeled shard; write LABELED.h5 and FAILED.h5 (same ids). "
        "Every result is looked up first in, and stored at once to, the label cache (--cache), keyed by content "
        "and level of theory: no label is computed twice. Never overwrites LABELED.h5. Exits 2 (after writing "
        "both files) when every structure of a non-empty shard failed.",
    )
    p.add_argument("--oracle-settings", default=None, metavar="JSON",
                   help="oracle settings (with their kind: " + ", ".join(ORACLES) + ") as a JSON string or file "
                   "(default kind: replay, which needs source)")
    p.add_argument("--in", dest="input", required=True, metavar="SHARD.h5", help="unlabeled structure store")
    p.add_argument("--out", required=True, metavar="LABELED.h5")
    p.add_argument("--failed", required=True, metavar="FAILED.h5", help="structures that failed, with reasons")
    p.add_argument("--cache", default=None, metavar="LABELS.sqlite",
                   help="label cache to read and extend, shared by any number of jobs (default: a private one "
                   "beside LABELED.h5, the checkpoint of a killed run, removed at the end)")
    p.add_argument("--cache-journal", choices=JOURNALS, default="wal",
                   help="wal: jobs on one machine (default); delete: jobs on several nodes sharing a network "
                   "filesystem with working POSIX locks")
    p.add_argument("--retry-failed", action="store_true",
                   help="compute again the structures whose cached result is a failure (default: reuse it)")
    p.add_argument("--max-attempts", type=int, default=None, help="tries per structure (overrides the settings)")
    p.add_argument("--threads", type=int, default=None, help="threads for the oracle (overrides the settings)")
    p.set_defaults(func=run_label)


def _register_sample(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "sample",
        help="Langevin MD → a candidate pool",
        description="Langevin MD (default GFN2-xTB ethanol, 1000 K, 0.5 fs, friction 0.01/fs, a frame "
        "every 10 steps); writes a store with ids 0..N-1, unlabeled unless --labels.",
    )
    p.add_argument("--settings", default=None, metavar="JSON", help="SamplingSettings (flags below override)")
    p.add_argument("--molecule", default=None, help="'ethanol', an ase.build.molecule name or a geometry file")
    p.add_argument("--temperature", type=float, default=None, help="K (default 1000)")
    p.add_argument("--n-frames", type=int, default=None, help="default 5000")
    p.add_argument("--interval", type=int, default=None, help="MD steps between frames (default 10)")
    p.add_argument("--timestep", type=float, default=None, help="fs (default 0.5)")
    p.add_argument("--friction", type=float, default=None, help="1/fs (default 0.01)")
    p.add_argument("--equilibration-steps", type=int, default=None, help="default 1000")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--out", required=True, metavar="POOL.h5")
    p.add_argument("--labels", action="store_true", help="keep the MD potential's energies and forces")
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--threads", type=int, default=None)
    p.set_defaults(func=run_sample)


def _register_baseline(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "baseline", help="errors of a potential (CHGNet, any oracle) on a labeled store",
        description="The error metrics of `oedal evaluate` (energies, forces, per atom and stress for cells) for a "
        "potential instead of a trained model, e.g. a universal potential every trained model should beat: "
        "oedal baseline --oracle-settings '{\"kind\": \"chgnet\"}' --data test.h5 --out baseline.json")
    p.add_argument("--oracle-settings", required=True, metavar="JSON", help="the potential, as an oracle's settings")
    p.add_argument("--data", required=True, metavar="TEST.h5", help="labeled structure store")
    p.add_argument("--out", required=True, metavar="BASELINE.json")
    p.add_argument("--no-align", dest="align", action="store_false",
                   help="compare its raw energies (default: shifted first by per-element constants fitted on the set, "
                   "oedal.oracles.baseline.element_offsets: a universal potential's energy zero is not the oracle's)")
    p.add_argument("--threads", type=int, default=None)
    p.set_defaults(func=run_baseline)


def _set_threads(threads: int | None) -> None:
    """OpenMP reads OMP_NUM_THREADS once, when the oracle library starts: set it before importing."""
    if threads:
        os.environ["OMP_NUM_THREADS"] = str(threads)


def run_label(args: argparse.Namespace) -> int:
    _set_threads(args.threads)
    from oedal.oracles import OracleSettings, label_store
    from oedal.settings import load_settings, settings_data

    check_outputs(args.out, args.failed)
    data = settings_data(args.oracle_settings)
    data.setdefault("kind", "replay")
    settings = load_settings(OracleSettings, data, threads=args.threads, max_attempts=args.max_attempts)
    report = label_store(args.input, args.out, args.failed, settings, cache=args.cache,
                         retry_failed=args.retry_failed, journal=args.cache_journal)
    if report.n_structures and not report.n_labeled:
        raise OedalError(f"every structure of {args.input} failed ({report.n_structures}); reasons in "
                         f"{args.failed}; the first: {report.first_failure}")
    return 0


def run_sample(args: argparse.Namespace) -> int:
    _set_threads(args.threads)
    from oedal.campaign.sampling import sample_pool
    from oedal.campaign.settings import SamplingSettings
    from oedal.settings import load_settings

    settings = load_settings(
        SamplingSettings,
        args.settings,
        molecule=args.molecule,
        temperature=args.temperature,
        n_frames=args.n_frames,
        interval=args.interval,
        timestep=args.timestep,
        friction=args.friction,
        equilibration_steps=args.equilibration_steps,
        seed=args.seed,
    )
    if args.threads:
        settings.potential.threads = args.threads
    check_outputs(args.out)
    sample_pool(settings, args.out, labels=args.labels, overwrite=args.overwrite)
    return 0


def run_baseline(args: argparse.Namespace) -> int:
    _set_threads(args.threads)
    from oedal.data.store import read_store
    from oedal.data.validate import check_store
    import json

    from oedal.files import atomic_path
    from oedal.oracles import OracleSettings
    from oedal.oracles.baseline import baseline_metrics
    from oedal.oracles.registry import get_oracle
    from oedal.settings import load_settings, settings_data

    check_outputs(args.out)
    check_store(args.data, labels=True)
    settings = load_settings(OracleSettings, settings_data(args.oracle_settings), threads=args.threads)
    metrics = baseline_metrics(get_oracle(settings), read_store(args.data), align=args.align)
    with atomic_path(args.out) as tmp:
        tmp.write_text(json.dumps(metrics, indent=2))
    return 0
