"""Cost of a campaign from its Snakemake benchmark files (``benchmarks/*.tsv``: ``s`` wall seconds,
``max_rss`` MB, ``cpu_time`` CPU seconds), per job kind and per model."""

from __future__ import annotations

import csv
import re
from pathlib import Path
from typing import NamedTuple

from oedal.campaign.tree import iter_name
from oedal.report.runs import Run

_SHARD = re.compile(r"_\d+$")


class JobCost(NamedTuple):
    """One kind of job (train, score, select, label, ...) over the whole campaign."""

    kind: str
    jobs: int
    wall_s: float  # total wall time, s
    mean_s: float  # mean wall time per job, s
    max_s: float  # longest job, s
    peak_rss_mb: float  # largest resident memory of any job, MB
    cpu_hours: float  # total CPU time, h


def read_benchmark(path: Path) -> dict[str, float]:
    """The first data row of a benchmark file as numbers (``NA`` and missing cells → 0)."""
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh, delimiter="\t"))
    if not rows:
        return {}
    out = {}
    for key in ("s", "max_rss", "cpu_time"):
        try:
            out[key] = float(rows[0].get(key) or 0.0)
        except ValueError:
            out[key] = 0.0
    return out


def job_kind(path: Path) -> str:
    """``label_3.tsv`` → ``label``: shards of one step are one kind."""
    return _SHARD.sub("", path.stem)


def unique_benchmarks(root: Path) -> list[Path]:
    """Every benchmark file under ``root`` once (a file linked into several folders counts once)."""
    seen, out = set(), []
    for path in sorted(root.rglob("benchmarks/*.tsv")):
        key = (path.stat().st_dev, path.stat().st_ino)
        if key not in seen:
            seen.add(key)
            out.append(path)
    return out


def job_costs(root: Path) -> list[JobCost]:
    """Time and peak memory per job kind over every benchmark file of the campaign folder."""
    by_kind: dict[str, list[dict[str, float]]] = {}
    for path in unique_benchmarks(root):
        values = read_benchmark(path)
        if values:
            by_kind.setdefault(job_kind(path), []).append(values)
    out = []
    for kind, jobs in sorted(by_kind.items()):
        wall = [j["s"] for j in jobs]
        out.append(JobCost(kind, len(jobs), sum(wall), sum(wall) / len(wall), max(wall),
                           max(j["max_rss"] for j in jobs), sum(j["cpu_time"] for j in jobs) / 3600))
    return out


def _cpu_seconds(folder: Path, pattern: str) -> float:
    return sum(read_benchmark(p).get("cpu_time", 0.0) for p in folder.glob(f"benchmarks/{pattern}"))


def cpu_hours(run: Run, root: Path) -> dict[int, float]:
    """CPU hours spent to reach each finished model of a run: every job of the iterations before it
    (training, scoring, selection, labeling) and its own training (iteration 0's: the seed's shared one)."""
    shared = root / f"seed{run.seed}" / iter_name(0)
    out, before = {}, 0.0
    for i in range(run.complete):
        d = run.iter_dir(i)
        train_dir = d if i or list(d.glob("benchmarks/train*.tsv")) else shared
        train = _cpu_seconds(train_dir, "train*.tsv")
        out[i] = (before + train) / 3600
        before += train + _cpu_seconds(d, "*.tsv") - _cpu_seconds(d, "train*.tsv")
    return out
