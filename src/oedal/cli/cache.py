"""`oedal cache info|export|check|quarantine|add`: what the label cache holds, its labels as extxyz, a check of
every entry, moving an entry aside, and refilling a cache from labeled stores (oedal.oracles.cache)."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from oedal.errors import OedalError
from oedal.files import check_outputs


def _when(seconds: float | None) -> str:
    return "-" if seconds is None else time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(seconds))


def run_info(args: argparse.Namespace) -> int:
    from oedal.oracles.cache import LabelCache

    with LabelCache(args.cache, journal=None, create=False) as db:
        levels = db.summary()
    if args.json:
        print(json.dumps({"path": str(args.cache), "levels": levels}, indent=2))
        return 0
    print(f"{args.cache}: {len(levels)} level(s) of theory, {Path(args.cache).stat().st_size / 1e6:.1f} MB")
    for lev in levels:
        print(f"level {lev['level'][:16]}  {lev['kind']}  {lev['labeled']} labeled, {lev['failed']} failed, "
              f"{lev['quarantined']} in quarantine  ({_when(lev['first'])} .. {_when(lev['last'])})")
        print(f"  settings: {json.dumps(lev['settings'], sort_keys=True)}")
        for reason, count in lev["failure_reasons"].items():
            print(f"  failure x{count}: {reason}")
    return 0


def run_export(args: argparse.Namespace) -> int:
    from oedal.oracles.cache import export_labels

    check_outputs(args.out)
    export_labels(args.cache, args.out, level=args.level)
    return 0


def run_check(args: argparse.Namespace) -> int:
    from oedal.oracles.cache import check_cache
    from oedal.oracles.cache.entries import describe

    n, bad = check_cache(args.cache, quarantine=args.quarantine)
    for problem in bad:
        print(f"{describe(problem.entry, args.cache)}: {problem.why}")
    moved = " (moved to the quarantine)" if args.quarantine else " (oedal cache check --quarantine moves them aside)"
    print(f"{args.cache}: {n} entries checked, {len(bad)} bad{moved if bad else ''}")
    return 2 if bad and not args.quarantine else 0


def run_quarantine(args: argparse.Namespace) -> int:
    from oedal.oracles.cache import LabelCache

    with LabelCache(args.cache, journal=None, create=False) as db:
        level = db.level_key(args.level) if args.level else None
        rows = [e.row for e in db.entries(level, successes_only=False)
                if e.row in set(args.row) or any(e.structure.startswith(s) for s in args.structure)]
        if not rows:
            raise OedalError(f"{args.cache}: no entry matches (rows {args.row}, structures {args.structure}); "
                             "oedal cache check lists entry rows")
        moved = db.quarantine(rows, f"by hand: {args.why}")
    print(f"{args.cache}: {moved} entr{'y' if moved == 1 else 'ies'} moved to the quarantine (rows "
          f"{', '.join(map(str, rows))}); their structures are computed again when next labeled")
    return 0


def run_add(args: argparse.Namespace) -> int:
    from oedal.oracles.cache import add_stores

    added = add_stores(args.cache, args.stores)
    print(f"{args.cache}: {added.labels} labels added from {added.stores} stores ({added.known} already there)")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("cache", help="the label cache: info, export, check, quarantine, add",
                       description="The label cache holds every oracle result once, keyed by (content hash of the "
                       "structure, level of theory); labeling jobs look there first, and check every entry they read.")
    commands = p.add_subparsers(dest="cache_command", required=True, metavar="{info,export,check,quarantine,add}")
    q = commands.add_parser("info", help="levels of theory, labels, failures and quarantined entries in a cache")
    q.add_argument("cache", help="label cache (e.g. results/labels.sqlite)")
    q.add_argument("--json", action="store_true", help="print JSON")
    q.set_defaults(func=run_info)
    q = commands.add_parser("export", help="every label as extxyz, with its level of theory in each frame's header")
    q.add_argument("cache", help="label cache (e.g. results/labels.sqlite)")
    q.add_argument("--out", required=True, help="extxyz file to write")
    q.add_argument("--level", default=None, help="only this level of theory (its key, or a unique prefix, as `oedal cache info` shows)")
    q.set_defaults(func=run_export)
    q = commands.add_parser("check", help="check every entry (identity from its geometry, finite values of the right "
                            "shape); exits 2 when one is bad")
    q.add_argument("cache")
    q.add_argument("--quarantine", action="store_true", help="move the bad entries to the quarantine")
    q.set_defaults(func=run_check)
    q = commands.add_parser("quarantine", help="move entries aside (kept, never used again: computed anew when next "
                            "asked), e.g. a label you know is wrong")
    q.add_argument("cache")
    q.add_argument("--row", type=int, action="append", default=[], help="entry row (oedal cache check names them)")
    q.add_argument("--structure", action="append", default=[], help="content hash, or a prefix of it")
    q.add_argument("--level", default=None, help="only entries of this level of theory (key or unique prefix)")
    q.add_argument("--why", required=True, help="recorded beside the entry")
    q.set_defaults(func=run_quarantine)
    q = commands.add_parser("add", help="store the labels of labeled stores (labeled.h5, or folders of them) in a "
                            "cache: refill a fresh cache after a damaged one was moved aside")
    q.add_argument("cache", help="label cache to fill (created when missing)")
    q.add_argument("stores", nargs="+", help="labeled stores, or folders searched for labeled*.h5")
    q.set_defaults(func=run_add)
