"""Test errors per class of a heterogeneous test set (DESIGN §11; the paper's QM9 and N-ASW tables): from the
summary rows' ``per_class_{class}_{metric}`` columns (metrics.json ``per_class``), the mean over seeds at the
last iteration every strategy reached, and the comparison rows (ratio baseline/strategy with its interval)
of the same columns. Energies alone where the data has no forces (QM9)."""

from __future__ import annotations

from typing import Sequence

from oedal.campaign.statistics import PER_CLASS
from oedal.report.figures import metric_column, seed_means

STATS = ("mae", "rmse", "maxe")
ABOVE = {"energy": "n_energy_error_above_1_kcal/mol", "forces": "n_max_force_component_error_above_1_kcal/mol/A"}
"""Structures whose energy error (largest force-component error) exceeds 1 kcal/mol (kcal/mol/Å)."""


def error_column(kind: str, stat: str, unit: str = "kcal") -> str:
    """The metric of a test error: kcal/mol(/Å) (``unit="kcal"``: energy_rmse_kcal/mol) or eV(/Å) (energy_rmse_eV)."""
    if unit == "kcal":
        return metric_column(kind, stat)
    return f"{kind}_{stat}_eV/A" if kind == "forces" else f"{kind}_{stat}_eV"


def class_label(name: str) -> str:
    """A class for people: "" (structures without a class) as "(no class)"."""
    return name or "(no class)"


def class_column(name: str, metric: str) -> str:
    """The summary column of ``metric`` on class ``name``: ``per_class_HA7_energy_rmse_kcal/mol``."""
    return f"{PER_CLASS}{name}_{metric}"


def class_names(rows: Sequence[dict]) -> list[str]:
    """The classes of the test set that the summary rows have errors for, sorted."""
    suffix = "_n_structures"
    return sorted({k[len(PER_CLASS):-len(suffix)] for r in rows for k in r
                   if k.startswith(PER_CLASS) and k.endswith(suffix)})


def class_metrics(rows: Sequence[dict], classes: Sequence[str], unit: str = "kcal", counts: bool = True) -> list[str]:
    """The per-class metrics present, unprefixed: energy MAE/RMSE/MAXE in ``unit`` (and, with ``counts``, the
    structures above 1 kcal/mol), then the same for forces where the data has them."""
    present = {k for r in rows for k in r}
    out = []
    for kind in ("energy", "forces"):
        metrics = [error_column(kind, s, unit) for s in STATS] + ([ABOVE[kind]] if counts else [])
        out += [m for m in metrics if any(class_column(c, m) in present for c in classes)]
    return out


def common_iteration(rows: Sequence[dict]) -> int | None:
    """The last iteration that every strategy has finished (with one seed at least); None without rows."""
    reached: dict[str, int] = {}
    for r in rows:
        reached[r["strategy"]] = max(reached.get(r["strategy"], -1), int(r["iteration"]))
    return min(reached.values()) if reached else None


def class_errors(rows: Sequence[dict], classes: Sequence[str], iteration: int, metrics: Sequence[str]) -> list[dict]:
    """Per class and strategy: ``seeds``, ``n_train``, ``n_structures`` (test structures of the class) and each
    of ``metrics``, the mean over the seeds' models of ``iteration`` (NaN where none has it)."""
    at = [r for r in rows if int(r["iteration"]) == iteration]
    out = []
    for name in classes:
        columns = [class_column(name, m) for m in ("n_structures", *metrics)]
        for mean in seed_means(at, ("strategy",), ["n_train", *columns]):
            out.append({"class": name, "strategy": mean["strategy"], "seeds": mean["seeds"], "n_train": mean["n_train"],
                        **{c.removeprefix(class_column(name, "")): mean[c] for c in columns}})
    return out


def class_ratios(comparison: Sequence[dict], rows: Sequence[dict], classes: Sequence[str], iteration: int,
                 metrics: Sequence[str], baseline: str = "random") -> list[dict]:
    """Per class, strategy and one of ``metrics``: the comparison row (oedal.campaign.statistics.paired_ratios:
    ratio baseline/strategy, low, high, n seeds) at the baseline's training-set size of ``iteration``, with
    ``class`` and ``error`` (the unprefixed metric) added; where seeds differ in size, the point most seeds share."""
    xs = {float(r["n_train"]) for r in rows if r["strategy"] == baseline and int(r["iteration"]) == iteration}
    best: dict[tuple[str, str], dict] = {}
    for c in comparison:
        key = (str(c["strategy"]), str(c["metric"]))
        if c["x"] == "n_train" and float(c["x_value"]) in xs and c["n"] and c["n"] > best.get(key, {"n": 0})["n"]:
            best[key] = c
    strategies = sorted({s for s, _ in best})
    return [{**best[(s, class_column(name, m))], "class": name, "error": m}
            for name in classes for s in strategies for m in metrics if (s, class_column(name, m)) in best]
