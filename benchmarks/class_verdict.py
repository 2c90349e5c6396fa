"""A heterogeneous campaign's figures at a glance (DESIGN §11; the note's tables for config/qm9_cpu.yaml and
config/wbe_cpu.yaml): per strategy, the ratio random/strategy of the test errors (energy, forces where the data
has them: MAE, RMSE, MAXE) with its 95 % interval over the seeds, at every training-set size (how the gain
grows with N) and, at the largest size all reached, per class; and the test structures above 1 kcal/mol
(kcal/mol/Å) per class, mean over seeds. Everything from the campaign's own files (oedal.report.collect).

    python benchmarks/class_verdict.py results/qm9_cpu [results/wbe_cpu ...]
"""

from __future__ import annotations

import math
import sys
from collections import defaultdict

import numpy as np

from oedal.campaign.statistics import paired_ratios
from oedal.report.classes import ABOVE, class_column, class_names, common_iteration
from oedal.report.collect import CampaignResults

METRICS = [f"{kind}_{stat}_{unit}" for kind, unit in (("energy", "kcal/mol"), ("forces", "kcal/mol/A"))
           for stat in ("mae", "rmse", "maxe")]


def ratio_text(point: dict) -> str:
    """×ratio [low–high] of one comparison point (no interval with one seed)."""
    if not math.isfinite(point["low"]):
        return f"×{point['ratio']:.2f}"
    return f"×{point['ratio']:.2f} [{point['low']:.2f}–{point['high']:.2f}]"


def print_campaign(root: str) -> None:
    results = CampaignResults.read(root)
    rows = results.rows
    strategies = sorted({r["strategy"] for r in rows} - {"random"})
    metrics = [m for m in METRICS if any(m in r for r in rows)]
    last = common_iteration(rows)
    n_last = min(int(r["n_train"]) for r in rows if int(r["iteration"]) == last)
    print(f"\n## {results.name}: {len({r['seed'] for r in rows})} seeds, strategies {', '.join(strategies)} vs random; "
          f"largest common training set {n_last}")
    for strategy in strategies:
        print(f"\n{strategy}: random/strategy by n_train (> 1: the strategy is better)")
        for metric in metrics:
            points = [p for p in paired_ratios(rows, metric, strategy) if p["n"]]
            print(f"  {metric:24s} " + "  ".join(f"{p['x_value']:.0f}: {ratio_text(p)}" for p in points))
    classes = class_names(rows)
    print(f"\nper class at n_train = {n_last}: random/strategy [95 % interval]")
    for name in classes:
        for strategy in strategies:
            parts = []
            for metric in metrics:
                found = [p for p in paired_ratios(rows, class_column(name, metric), strategy)
                         if p["n"] and int(p["x_value"]) == n_last]
                if found:
                    parts.append(f"{metric.split('_')[0][0].upper()} {metric.split('_')[1]} {ratio_text(found[0])}")
            print(f"  {name:13s} {strategy:11s} " + ", ".join(parts))
    print(f"\ntest structures above 1 kcal/mol (energy) / 1 kcal/mol/Å (largest force-component error) at the last "
          f"common iteration ({last}), mean over seeds")
    for kind, column in ABOVE.items():
        if not any(column in r for r in rows):
            continue
        counts: dict[tuple[str, str], list[float]] = defaultdict(list)
        for r in rows:
            if int(r["iteration"]) == last:
                counts[("all", r["strategy"])].append(float(r[column]))
                for name in classes:
                    counts[(name, r["strategy"])].append(float(r.get(class_column(name, column), np.nan)))
        size = {name: rows[0].get(class_column(name, "n_structures")) for name in classes}
        print(f"  {kind}:")
        for name in ["all"] + classes:
            of = rows[0]["n_structures"] if name == "all" else size[name]
            print(f"    {name:13s} (of {of}) " + "  ".join(
                f"{s}: {np.mean(counts[(name, s)]):.1f}" for s in sorted({r['strategy'] for r in rows})))


if __name__ == "__main__":
    for folder in sys.argv[1:] or ["results/qm9_cpu"]:
        print_campaign(folder)
