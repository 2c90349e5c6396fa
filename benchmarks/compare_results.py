"""Two results folders of the same campaign, made by two checkouts, compared file by file: the check that a
change of the workflow or its glue changed no output. Not a test.

    # the same config run by each checkout into its own results folder, e.g.
    (cd ../old && snakemake --cores 2 --configfile config/tiny.yaml --config results_dir=/tmp/old)
    snakemake --cores 2 --configfile config/tiny.yaml --config results_dir=/tmp/new
    python benchmarks/compare_results.py /tmp/old /tmp/new

Compared exactly: every dataset and attribute of every HDF5 file, every JSON record, every CSV cell, the
verdict, the walkers, the weights of every model and the labels of the label cache. Left out, as they differ
from one run to the next by design: wall times and dates (``*_s``, ``seconds``, ``created``, benchmark and log
files), the results folder's own path inside a file, and the figures and the report page (they carry the
time they were made).
"""

from __future__ import annotations

import csv
import json
import sqlite3
import sys
from pathlib import Path

import h5py
import numpy as np

TIMES = {"seconds", "training_seconds", "train_s", "selection_s", "cpu_hours", "created", "labeled_at"}
SKIP_DIRS = {"logs", "benchmarks", "report_figures"}
SKIP_SUFFIXES = {".png", ".html", ".log", ".tsv"}


def _same(a, b) -> bool:
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        a, b = np.asarray(a), np.asarray(b)
        return a.shape == b.shape and a.dtype == b.dtype and np.array_equal(a, b, equal_nan=a.dtype.kind == "f")
    return a == b or (isinstance(a, float) and isinstance(b, float) and np.isnan(a) and np.isnan(b))


def _strip(value, roots: tuple[str, str]):
    """``value`` with the results folder's path replaced and wall times dropped (nested)."""
    if isinstance(value, dict):
        return {k: _strip(v, roots) for k, v in value.items() if k not in TIMES}
    if isinstance(value, list):
        return [_strip(v, roots) for v in value]
    if isinstance(value, (str, bytes)):
        text = value.decode() if isinstance(value, bytes) else value
        return text.replace(roots[0], "RESULTS").replace(roots[1], "RESULTS")
    return value


def compare_h5(a: Path, b: Path, roots) -> list[str]:
    out = []
    with h5py.File(a) as fa, h5py.File(b) as fb:
        if sorted(fa) != sorted(fb):
            return [f"datasets {sorted(fa)} vs {sorted(fb)}"]
        for name in fa:
            if not _same(fa[name][()], fb[name][()]):
                out.append(f"dataset {name} differs")
        attrs_a = {k: _strip(v, roots) for k, v in fa.attrs.items()}
        attrs_b = {k: _strip(v, roots) for k, v in fb.attrs.items()}
        if attrs_a.keys() != attrs_b.keys() or any(not _same(attrs_a[k], attrs_b[k]) for k in attrs_a):
            out.append(f"attributes differ: {attrs_a} vs {attrs_b}")
    return out


def compare_json(a: Path, b: Path, roots) -> list[str]:
    ja, jb = (_strip(json.loads(p.read_text()), roots) for p in (a, b))
    return [] if ja == jb else ["records differ"]


def compare_csv(a: Path, b: Path, roots) -> list[str]:
    def rows(p):
        with open(p, newline="") as fh:
            return [_strip(row, roots) for row in csv.DictReader(fh)]
    header = [open(p).readline() for p in (a, b)]
    if header[0] != header[1]:
        return ["columns differ"]
    return [] if rows(a) == rows(b) else ["cells differ"]


def compare_model(a: Path, b: Path, roots) -> list[str]:
    import torch

    pa, pb = (torch.load(p, weights_only=True) for p in (a, b))
    sa, sb = pa["state_dict"], pb["state_dict"]
    bad = [k for k in sa if k not in sb or not torch.equal(sa[k], sb[k])]
    if pa["settings"] != pb["settings"] or pa["species"] != pb["species"]:
        bad.append("settings")
    return [f"weights differ: {bad[:4]}"] if bad else []


def compare_cache(a: Path, b: Path, roots) -> list[str]:
    def labels(p):
        with sqlite3.connect(p) as con:
            return sorted(con.execute("SELECT structure, level, ok, energy, forces FROM labels").fetchall())
    return [] if labels(a) == labels(b) else ["labels differ"]


def compare_text(a: Path, b: Path, roots) -> list[str]:
    return [] if _strip(a.read_text(), roots) == _strip(b.read_text(), roots) else ["text differs"]


COMPARERS = {".h5": compare_h5, ".json": compare_json, ".csv": compare_csv, ".pt": compare_model,
             ".sqlite": compare_cache, ".txt": compare_text}


def files(root: Path) -> set[Path]:
    return {p.relative_to(root) for p in root.rglob("*") if p.is_file() and not (SKIP_DIRS & set(p.parts))
            and p.suffix not in SKIP_SUFFIXES and not p.name.startswith(".") and not p.name.endswith(("-wal", "-shm"))}


def main(old: Path, new: Path) -> int:
    roots = (str(old), str(new))
    fa, fb = files(old), files(new)
    problems = [f"only in {old}: {p}" for p in sorted(fa - fb)] + [f"only in {new}: {p}" for p in sorted(fb - fa)]
    compared = 0
    for rel in sorted(fa & fb):
        compare = COMPARERS.get(rel.suffix)
        if compare is None:
            continue
        compared += 1
        problems += [f"{rel}: {p}" for p in compare(old / rel, new / rel, roots)]
    for line in problems:
        print(line)
    print(f"{compared} files compared, {len(problems)} differences")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1]), Path(sys.argv[2])))
