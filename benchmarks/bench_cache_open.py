"""Simultaneous first openers of a brand-new label cache: how many opens fail. Not a test (the test is
tests/test_cache_trust.py::test_simultaneous_first_openers_all_open_a_new_cache).

    python benchmarks/bench_cache_open.py --rounds 50 --procs 8
    PYTHONPATH=../old/src python benchmarks/bench_cache_open.py      # another checkout's cache

Each round forks ``procs`` processes that wait on one barrier and then open the same new cache file and
register a level of theory.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import tempfile

from oedal.oracles import LabelCache, level_of, oracle_settings

LEVEL = level_of(oracle_settings(kind="emt"))


def _open(path: str, barrier, errors) -> None:
    try:
        barrier.wait(timeout=30)
        with LabelCache(path) as db:
            db.register(LEVEL)
    except Exception as err:  # noqa: BLE001 — counted
        errors.put(f"{type(err).__name__}: {err}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=50)
    parser.add_argument("--procs", type=int, default=8)
    args = parser.parse_args()
    ctx, folder = multiprocessing.get_context("fork"), tempfile.mkdtemp()
    errors = ctx.Queue()
    for r in range(args.rounds):
        barrier, path = ctx.Barrier(args.procs), os.path.join(folder, f"labels{r}.sqlite")
        procs = [ctx.Process(target=_open, args=(path, barrier, errors)) for _ in range(args.procs)]
        for p in procs:
            p.start()
        for p in procs:
            p.join()
    failed = []
    while not errors.empty():
        failed.append(errors.get())
    print(f"{len(failed)} of {args.rounds * args.procs} opens failed" + (f"; first: {failed[0]}" if failed else ""))


if __name__ == "__main__":
    main()
