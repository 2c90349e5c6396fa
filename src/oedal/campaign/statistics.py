"""Paired comparisons of strategies with a baseline, over seeds: is the difference signal or noise?

A seed fixes the split, the test set and the iteration-0 model, so the strategies of one seed differ
only by what they selected: their test errors are *paired*. Per seed and iteration the ratio
r = error(baseline) / error(strategy) (> 1: the strategy is better) is formed; over the seeds the
log ratios are averaged and a Student-t interval is put around the mean (the seeds are the
independent repetitions):

    mean ℓ̄ = Σ log r_s / n,   se = std(log r, ddof=1) / √n,   ratio = exp(ℓ̄),
    interval exp(ℓ̄ ± t_{n−1, (1+level)/2} · se),   p = two-sided one-sample t test of ℓ̄ = 0.

Training seeds (``training_seeds: K``): K models are trained on each selected set from different
initialisations. Their errors enter as the geometric mean (columns ``seeds_{metric}``), which
averages out the training noise of one model, and their pooled within-set spread (``seeds_sdlog_*``)
says how large that noise is: s = √(Σ_sets Σ_k (log e_k − mean)² / Σ_sets (K − 1)).

"At equal labels spent" the strategy's curve of each seed is interpolated (log–log) at the
baseline's labels spent, so a strategy that pays for more labels per iteration is not flattered.
Pure NumPy/SciPy, no I/O: the rows are those of the campaign's summary table.
"""

from __future__ import annotations

import math
from typing import Iterable, Literal, NamedTuple, Sequence

import numpy as np

METRICS = ("forces_mae_kcal/mol/A", "forces_rmse_kcal/mol/A", "forces_maxe_kcal/mol/A",
           "energy_mae_kcal/mol", "energy_rmse_kcal/mol", "energy_maxe_kcal/mol",
           "energy_per_atom_mae_meV/atom", "energy_per_atom_rmse_meV/atom", "energy_per_atom_maxe_meV/atom",
           "stress_mae_GPa", "stress_rmse_GPa", "stress_maxe_GPa")
"""Test-set errors compared by default (metrics.json keys; the last six only where the test set has cells)."""


SEEDS = "seeds_"
"""Column prefix of the geometric mean over the training seeds of a selected set."""
SPREAD = "seeds_sdlog_"
"""Column prefix of the standard deviation of log(error) over those training seeds (not a metric to compare)."""
_NOT_COMPARED = (SPREAD, "labeled_")


def metrics_in(rows: Sequence[dict], base: Sequence[str] = METRICS) -> list[str]:
    """The metrics of ``base`` present in the rows, then their variants on extra test sets or over
    training seeds (columns ``{prefix}_{metric}``, e.g. transfer_ethanol_500K_forces_rmse_kcal/mol/A,
    seeds_forces_rmse_kcal/mol/A), in column order. Not compared: spreads, and the errors of each
    model on the frames it picked (``labeled_*``: every strategy picked other frames, so they are not paired)."""
    columns = list(dict.fromkeys(k for r in rows for k in r))
    return [m for m in base if m in columns] + [c for c in columns if c not in base and not c.startswith(_NOT_COMPARED)
                                                and any(c.endswith("_" + m) for m in base)]


def training_seed_columns(models: Sequence[dict], metrics: Sequence[str]) -> dict:
    """From the errors of K models trained on one set (dicts of metric → value): ``seeds_n`` = K and,
    for every metric that all K have, ``seeds_{metric}`` = their geometric mean and (K ≥ 2)
    ``seeds_sdlog_{metric}`` = the standard deviation of their log (ddof = 1)."""
    out: dict = {f"{SEEDS}n": len(models)}
    for metric in metrics:
        values = np.array([float(m.get(metric, math.nan)) for m in models])
        if len(values) == 0 or not np.all(np.isfinite(values) & (values > 0)):
            continue
        logs = np.log(values)
        out[SEEDS + metric] = float(np.exp(logs.mean()))
        if len(logs) > 1:
            out[SPREAD + metric] = float(logs.std(ddof=1))
    return out


def short_name(metric: str) -> str:
    """``forces_rmse_kcal/mol/A`` → ``forces rmse``, ``stress_mae_GPa`` → ``stress mae`` (units dropped, for
    sentences)."""
    for unit in ("_kcal/mol/A", "_kcal/mol", "_meV/atom", "_GPa"):
        metric = metric.replace(unit, "")
    return metric.replace("_", " ")


def average_training_seeds(rows: Sequence[dict], key: str = "training_seed") -> list[dict]:
    """Rows with one model each (``key``: its training seed) → one row per (strategy, seed, iteration):
    the first model's row with the ``seeds_*`` columns of the group (training_seed_columns)."""
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        groups.setdefault((str(row["strategy"]), int(row["seed"]), int(row["iteration"])), []).append(row)
    out = []
    for group in groups.values():
        group = sorted(group, key=lambda r: r.get(key, 0))
        first = {k: v for k, v in group[0].items() if k != key}
        out.append({**first, **training_seed_columns(group, metrics_in(group))})
    return out


def training_seed_spread(rows: Sequence[dict], metric: str) -> float:
    """Pooled standard deviation of log(``metric``) between models trained on the same set, from the
    rows' ``seeds_sdlog_*`` and ``seeds_n`` columns (module docstring); NaN without two models per set.
    exp(s) − 1 is the typical relative difference a training seed alone makes to one model's error."""
    sums = dof = 0.0
    for row in rows:
        sd, n = row.get(SPREAD + metric), int(row.get(SEEDS + "n") or 0)
        if sd is not None and n > 1 and math.isfinite(float(sd)):
            sums += (n - 1) * float(sd) ** 2
            dof += n - 1
    return math.sqrt(sums / dof) if dof else math.nan


class RatioEstimate(NamedTuple):
    """Geometric mean over seeds of error(baseline)/error(strategy) with its interval."""

    ratio: float  # exp(mean log ratio); > 1: the strategy has the lower error
    low: float  # lower end of the interval (NaN with one seed)
    high: float
    spread: float  # seed-to-seed standard deviation of the log ratio (NaN with one seed)
    p_value: float  # two-sided t test of "no difference" (NaN with one seed)
    n: int  # seeds


def ratio_interval(ratios: Sequence[float], level: float = 0.95) -> RatioEstimate:
    """Mean log ratio over seeds with a Student-t interval (module docstring)."""
    from scipy import stats

    logs = np.log(np.asarray(ratios, dtype=np.float64))
    logs = logs[np.isfinite(logs)]
    n = len(logs)
    if n == 0:
        return RatioEstimate(math.nan, math.nan, math.nan, math.nan, math.nan, 0)
    mean = float(logs.mean())
    if n == 1:
        return RatioEstimate(math.exp(mean), math.nan, math.nan, math.nan, math.nan, 1)
    spread = float(logs.std(ddof=1))
    se = spread / math.sqrt(n)
    half = float(stats.t.ppf(0.5 + level / 2, n - 1)) * se
    p = float(2 * stats.t.sf(abs(mean) / se, n - 1)) if se > 0 else (0.0 if mean else 1.0)
    return RatioEstimate(math.exp(mean), math.exp(mean - half), math.exp(mean + half), spread, p, n)


def interpolate_loglog(x_new: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """y at x_new from a curve (x, y), linear in log x and log y; NaN outside the curve's range."""
    x, y, x_new = (np.asarray(v, dtype=np.float64) for v in (x, y, x_new))
    ok = (x > 0) & (y > 0)
    x, y = x[ok], y[ok]
    if len(x) == 0:
        return np.full(x_new.shape, np.nan)
    order = np.argsort(x)
    out = np.exp(np.interp(np.log(x_new), np.log(x[order]), np.log(y[order]), left=np.nan, right=np.nan))
    return np.where((x_new >= x.min()) & (x_new <= x.max()), out, np.nan)


def _curves(rows: Iterable[dict], metric: str, x: str) -> dict[tuple[str, int], tuple[np.ndarray, np.ndarray]]:
    """(strategy, seed) → (x values, metric values), ordered by iteration; runs that stopped early
    keep only the iterations up to the stop (later rows repeat the carried model)."""
    by_run: dict[tuple[str, int], list[dict]] = {}
    for row in rows:
        by_run.setdefault((str(row["strategy"]), int(row["seed"])), []).append(row)
    out = {}
    for key, run in by_run.items():
        run = sorted(run, key=lambda r: int(r["iteration"]))
        keep = [r for k, r in enumerate(run) if k == 0 or not run[k - 1].get("stopped")]
        out[key] = (np.array([float(r[x]) for r in keep]), np.array([float(r.get(metric, math.nan)) for r in keep]))
    return out


def paired_ratios(rows: Sequence[dict], metric: str, strategy: str, baseline: str = "random",
                  x: str = "n_train", level: float = 0.95) -> list[dict]:
    """Per point of the baseline's curve (its ``x`` values, e.g. n_train or labels_spent): the ratio
    error(baseline)/error(strategy) over the seeds that have both, the strategy's curve interpolated
    at the baseline's ``x`` (log–log; exact where the two share the point)."""
    curves = _curves(rows, metric, x)
    seeds = sorted(s for (name, s) in curves if name == baseline and (strategy, s) in curves)
    per_point: dict[float, list[float]] = {}
    for seed in seeds:
        bx, by = curves[(baseline, seed)]
        sx, sy = curves[(strategy, seed)]
        at = interpolate_loglog(bx, sx, sy)
        for xv, b, s in zip(bx, by, at):
            if np.isfinite(b) and np.isfinite(s) and s > 0:
                per_point.setdefault(float(xv), []).append(b / s)
    out = []
    for xv in sorted(per_point):
        est = ratio_interval(per_point[xv], level)
        out.append({"strategy": strategy, "baseline": baseline, "metric": metric, "x": x, "x_value": xv,
                    **est._asdict()})
    return out


def compare_strategies(rows: Sequence[dict], baseline: str = "random", metrics: Sequence[str] = METRICS,
                       xs: Sequence[str] = ("n_train", "labels_spent"), level: float = 0.95) -> list[dict]:
    """Every strategy against ``baseline`` for every metric present, at equal ``xs``: the comparison table."""
    strategies = sorted({str(r["strategy"]) for r in rows} - {baseline})
    present = [m for m in metrics if any(m in r for r in rows)]
    return [row for s in strategies for m in present for x in xs
            for row in paired_ratios(rows, m, s, baseline, x, level)]


class Verdict(NamedTuple):
    """One comparison of the verdict: a strategy against the baseline at one point (the last both reached)."""

    strategy: str
    baseline: str
    metric: str  # summary column: an error, maybe on a transfer set (transfer_X_…) or over training seeds (seeds_…)
    x: str  # n_train | labels_spent
    x_value: float
    ratio: float  # error(baseline) / error(strategy): > 1, the strategy has the lower error
    low: float  # interval of the ratio (NaN with one seed)
    high: float
    n: int  # seeds
    level: float = 0.95

    @property
    def better(self) -> bool:
        """The strategy has the lower (or an equal) error."""
        return self.ratio >= 1

    @property
    def beyond_spread(self) -> bool | None:
        """The interval excludes 1: the difference exceeds the seed-to-seed spread (None: one seed, unknown)."""
        return None if self.n < 2 else bool(self.low > 1 or self.high < 1)

    @property
    def transfer(self) -> bool:
        """On a transfer test set (dataset.transfer), not the campaign's own test set."""
        return self.metric.removeprefix(SEEDS).startswith("transfer_")

    def sentence(self) -> str:
        """By how much, with its interval, and whether the difference exceeds the seed-to-seed spread."""
        name = short_name(self.metric.removeprefix(SEEDS))
        if self.metric.startswith(SEEDS):
            name += " (geometric mean over training seeds)"
        size = self.ratio if self.better else 1 / self.ratio
        where = f"at {self.x.replace('_', ' ')} {self.x_value:g}"
        head = (f"{self.strategy} vs {self.baseline} {where}: {name} {size:.2f}× "
                f"{'lower' if self.better else 'higher'}")
        if self.beyond_spread is None:
            return f"{head} (one seed: no interval, the seed-to-seed spread is unknown)"
        band = f"{self.level:.0%} interval of the ratio {self.low:.2f}–{self.high:.2f} over {self.n} seeds"
        return f"{head} ({band}): " + ("the difference exceeds the seed-to-seed spread" if self.beyond_spread
                                       else "within the seed-to-seed spread")


class Note(NamedTuple):
    """A line of the verdict that compares nothing: ``kind`` spread (how much a training seed alone moves one
    model's error), warning (the comparison is not on equal budgets) or info (nothing to compare with)."""

    kind: Literal["spread", "warning", "info"]
    text: str

    def sentence(self) -> str:
        return self.text


def verdict(estimate: dict, level: float = 0.95) -> str:
    """One sentence on one comparison row (:meth:`Verdict.sentence`)."""
    return as_verdict(estimate, level).sentence()


def as_verdict(estimate: dict, level: float = 0.95) -> Verdict:
    """A row of the comparison table (paired_ratios) as a :class:`Verdict`."""
    return Verdict(estimate["strategy"], estimate["baseline"], estimate["metric"], estimate["x"],
                   float(estimate["x_value"]), estimate["ratio"], estimate["low"], estimate["high"],
                   int(estimate["n"]), level)


FORCE_METRICS = ("forces_mae_kcal/mol/A", "forces_rmse_kcal/mol/A", "forces_maxe_kcal/mol/A")
ENERGY_METRICS = ("energy_mae_kcal/mol", "energy_rmse_kcal/mol", "energy_maxe_kcal/mol")
PER_CLASS = "per_class_"
"""Column prefix of the errors of one class (summary.csv: ``per_class_{class}_{metric}``): compared in
comparison.csv, shown per class in the report, left out of the verdict's sentences."""


def verdict_records(rows: Sequence[dict], baseline: str = "random", metrics: Sequence[str] = FORCE_METRICS,
                    level: float = 0.95) -> list[Verdict | Note]:
    """The campaign's verdict: per strategy and metric (the force errors; the energy errors where the data has
    no forces), the comparison with ``baseline`` at the largest training-set size and at the most labels that
    both reached in every paired seed (exploration spends a different number of labels per seed: a point fewer
    seeds reached has a wider interval); how far a training seed alone moves one
    model's error; then warnings (a training cut by the wall-clock limit: its runs are not on equal
    budgets). verdict.txt and the report both render these records."""
    out: list[Verdict | Note] = []
    metrics = [m for m in metrics_in(rows, metrics) if PER_CLASS not in m]
    if not metrics:
        metrics = [m for m in metrics_in(rows, ENERGY_METRICS) if PER_CLASS not in m]  # energy-only data (QM9)
    if any(m.startswith(SEEDS) for m in metrics):  # several models per set: compare their mean
        metrics = [m for m in metrics if m.startswith(SEEDS)]
    strategies = sorted({str(r["strategy"]) for r in rows} - {baseline})
    if baseline not in {str(r["strategy"]) for r in rows}:
        out.append(Note("info", f"no {baseline} runs: nothing to compare with"))
        strategies = []
    for strategy in strategies:
        for x in ("n_train", "labels_spent"):
            for metric in metrics:
                points = [p for p in paired_ratios(rows, metric, strategy, baseline, x, level) if p["n"]]
                if points:  # the last point every paired seed reached (an explorer's labels differ per seed)
                    most = max(p["n"] for p in points)
                    out.append(as_verdict([p for p in points if p["n"] == most][-1], level))
    out += [Note("spread", line) for line in _spread_lines(rows, [m.removeprefix(SEEDS) for m in metrics
                                                                 if m.startswith(SEEDS)])]
    cut = [r for r in rows if r.get("training_stopped") == "time"]
    if cut:
        where = ", ".join(sorted({f"{r['strategy']} seed {r['seed']} iteration {r['iteration']}" for r in cut})[:6])
        out.append(Note("warning", f"WARNING: {len(cut)} training(s) stopped at the wall-clock limit "
                        f"(training.max_minutes), e.g. {where}: those models had less training than the others, so "
                        "the comparison is not on equal budgets; raise or remove max_minutes and rerun"))
    return out


def verdict_lines(rows: Sequence[dict], baseline: str = "random", metrics: Sequence[str] = FORCE_METRICS,
                  level: float = 0.95) -> list[str]:
    """The verdict's records (:func:`verdict_records`) as sentences: verdict.txt, one per line."""
    return [record.sentence() for record in verdict_records(rows, baseline, metrics, level)]


def _spread_lines(rows: Sequence[dict], metrics: Sequence[str]) -> list[str]:
    """How much one model's error moves with its training seed alone (training_seed_spread), per metric."""
    counts = sorted({int(r.get(SEEDS + "n") or 0) for r in rows} - {0})
    parts = []
    for metric in metrics:
        s = training_seed_spread(rows, metric)
        if math.isfinite(s):
            parts.append(f"{short_name(metric)} ×{math.exp(s):.2f}")
    if not parts:
        return []
    k = "/".join(map(str, counts))
    return [f"training seeds: {k} models per selected set; one model's error moves with its training seed alone "
            f"by a typical factor (exp of the pooled sd of log error) of " + ", ".join(parts)]
