"""`oedal cache info|export`: what the label cache holds, and its labels as extxyz (oedal.oracles.cache)."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


def _when(seconds: float | None) -> str:
    return "-" if seconds is None else time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(seconds))


def run_info(args: argparse.Namespace) -> int:
    from oedal.oracles.cache import LabelCache

    if not Path(args.cache).is_file():
        raise FileNotFoundError(f"{args.cache}: no such label cache")
    with LabelCache(args.cache, journal=None) as db:
        levels = db.summary()
    if args.json:
        print(json.dumps({"path": str(args.cache), "levels": levels}, indent=2))
        return 0
    print(f"{args.cache}: {len(levels)} level(s) of theory, {Path(args.cache).stat().st_size / 1e6:.1f} MB")
    for lev in levels:
        print(f"level {lev['level'][:16]}  {lev['kind']}  {lev['labeled']} labeled, {lev['failed']} failed  "
              f"({_when(lev['first'])} .. {_when(lev['last'])})")
        print(f"  settings: {json.dumps(lev['settings'], sort_keys=True)}")
        for reason, count in lev["failure_reasons"].items():
            print(f"  failure x{count}: {reason}")
    return 0


def run_export(args: argparse.Namespace) -> int:
    from oedal.oracles.cache import export_labels

    export_labels(args.cache, args.out, level=args.level)
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("cache", help="the label cache: info, export",
                       description="The label cache holds every oracle result once, keyed by (content hash of the "
                       "structure, level of theory); labeling jobs look there first.")
    commands = p.add_subparsers(dest="cache_command", required=True, metavar="{info,export}")
    q = commands.add_parser("info", help="levels of theory, labels and failures in a cache")
    q.add_argument("cache", help="label cache (e.g. results/labels.sqlite)")
    q.add_argument("--json", action="store_true", help="print JSON")
    q.set_defaults(func=run_info)
    q = commands.add_parser("export", help="every label as extxyz, with its level of theory in each frame's header")
    q.add_argument("cache", help="label cache (e.g. results/labels.sqlite)")
    q.add_argument("--out", required=True, help="extxyz file to write")
    q.add_argument("--level", default=None, help="only this level of theory (its key, or a unique prefix, as `oedal cache info` shows)")
    q.set_defaults(func=run_export)
