"""Old code against new, on the same inputs, alternating: the check that a refactoring changed no number
and no speed. Not a test.

    # a checkout of the old revision beside this one (git worktree add ../old REV)
    python benchmarks/compare_trees.py scores --old ../old --data qm9 --limit 20000
    python benchmarks/compare_trees.py bench  --old ../old --rounds 3 -- benchmarks/bench_model.py --steps 40

``scores``: one model, training set and pool (GM-NN ethanol, or QM9 from qm9pack), written once;
``oedal score`` of each tree on them (qs1, qs2, qs3 with projections), every dataset compared for
bit-identity. ``bench``: a benchmark script run alternately from each tree (its own copy of the
script, with PYTHONPATH=<tree>/src), every number of every output line paired by position; prints
old and new medians and the ratio new/old.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import h5py
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
NUMBER = re.compile(r"[-+]?\d[\d,]*\.?\d*(?:[eE][-+]?\d+)?")


def run_in(tree: Path, args: list[str], cwd: Path) -> str:
    env = {**os.environ, "PYTHONPATH": str(tree / "src"), "OMP_WAIT_POLICY": "PASSIVE"}
    proc = subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(f"{tree}: {' '.join(args)} failed:\n{proc.stderr[-3000:]}")
    return proc.stdout


def _inputs(data: str, limit: int | None, tmp: Path) -> list[str]:
    """Write m.pt, train.h5, pool.h5 (with the new tree) and return the kinds to compare."""
    from oedal.data import load_dataset
    from oedal.data.store import write_store
    from oedal.gmnn.model import save_model
    from oedal.gmnn.training import train_model
    from oedal.settings import ModelSettings, TrainingSettings

    if data == "qm9":
        from oedal.data.importers import read_qm9

        s = read_qm9(limit=limit)
        s = s.__class__(**{**s.__dict__, "forces": np.zeros_like(s.positions)})
        r_cut, w_f, kinds = 3.0, 0.0, ["qs1", "qs2"]  # QS2 without its 3.6 GB of projected rows (--no-projections)
    else:
        s = load_dataset("ethanol_1000K", data_dir=SHARED / "gmnn_ethanol", limit=limit)
        r_cut, w_f, kinds = 4.0, 100.0, ["qs1", "qs2", "qs3"]
    perm = np.random.default_rng(0).permutation(len(s))
    train, valid, pool = s.subset(perm[:200]), s.subset(perm[200:300]), s.subset(np.sort(perm[300:]))
    ms = ModelSettings.model_validate({"descriptor": {"r_cut": r_cut}})
    ts = TrainingSettings(epochs=3, batch_size=32, weight_forces=w_f, device="cpu")
    save_model(train_model(train, valid, ms, ts, progress=False).model, tmp / "m.pt")
    write_store(tmp / "train.h5", train)
    write_store(tmp / "pool.h5", pool.without_labels())
    return kinds


def compare_scores(a) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        kinds = _inputs(a.data, a.limit, tmp)
        for kind in kinds:
            files = {}
            for name, tree in (("old", a.old), ("new", ROOT)):
                files[name] = tmp / f"{kind}_{name}.h5"
                run_in(tree, ["-m", "oedal", "score", "--model", str(tmp / "m.pt"), "--train", str(tmp / "train.h5"),
                              "--pool", str(tmp / "pool.h5"), "--out", str(files[name]), "--strategy", kind,
                              "--threads", str(a.threads), *(["--no-projections"] if (a.data, kind) == ("qm9", "qs2") else [])],
                       cwd=tmp)
            with h5py.File(files["old"], "r") as old, h5py.File(files["new"], "r") as new:
                names = sorted(set(old) | set(new))
                same = [n for n in names if n in old and n in new and np.array_equal(old[n][()], new[n][()])]
                print(f"{a.data} {kind}: {len(same)} of {len(names)} datasets bit-identical "
                      f"({', '.join(f'{n} {old[n].shape}' for n in same)})"
                      + ("" if len(same) == len(names) else f"; DIFFERENT: {sorted(set(names) - set(same))}"))


def _numbers_by_line(lines: list[str]) -> dict[tuple[str, int], tuple[str, list[float]]]:
    """(the line with its numbers blanked, occurrence) → (the line, its numbers): lines pair up by their text."""
    out: dict[tuple[str, int], tuple[str, list[float]]] = {}
    seen: dict[str, int] = {}
    for line in lines:
        skeleton = NUMBER.sub("#", line)
        k = seen[skeleton] = seen.get(skeleton, -1) + 1
        out[(skeleton, k)] = (line, [float(x.replace(",", "")) for x in NUMBER.findall(line)])
    return out


def compare_bench(a) -> None:
    """Run the benchmark ABBA-alternating from both trees; print new's lines with old→new medians."""
    outputs: dict[str, list[list[str]]] = {"old": [], "new": []}
    for r in range(a.rounds):
        for name, tree in (("old", a.old), ("new", ROOT)) if r % 2 == 0 else (("new", ROOT), ("old", a.old)):
            outputs[name].append(run_in(tree, a.command, cwd=tree).splitlines())
    parsed = {name: [_numbers_by_line(run) for run in runs] for name, runs in outputs.items()}
    for key, (line, _) in parsed["new"][0].items():
        print(line)
        old_vals = [run[key][1] for run in parsed["old"] if key in run]
        new_vals = [run[key][1] for run in parsed["new"] if key in run]
        if not old_vals or not new_vals[0]:
            continue
        cells = []
        for j in range(len(new_vals[0])):
            o = statistics.median(v[j] for v in old_vals)
            n = statistics.median(v[j] for v in new_vals)
            cells.append(f"{o:g}→{n:g} (×{n / o:.3f})" if o else f"{o:g}→{n:g}")
        print(f"    old→new, median of {a.rounds} runs each:", "; ".join(cells))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="what", required=True)
    s = sub.add_parser("scores")
    s.add_argument("--old", type=Path, required=True, help="root of the old checkout")
    s.add_argument("--data", choices=["ethanol", "qm9"], default="ethanol")
    s.add_argument("--limit", type=int, default=None)
    s.add_argument("--threads", type=int, default=2)
    b = sub.add_parser("bench")
    b.add_argument("--old", type=Path, required=True, help="root of the old checkout")
    b.add_argument("--rounds", type=int, default=3)
    b.add_argument("command", nargs=argparse.REMAINDER, help="-- SCRIPT ARGS (relative to each root)")
    a = p.parse_args()
    if a.what == "bench":
        a.command = [c for c in a.command if c != "--"]
        compare_bench(a)
    else:
        compare_scores(a)


if __name__ == "__main__":
    main()
