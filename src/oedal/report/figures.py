"""The report's figures (matplotlib, Agg), returned as PNG bytes so that the page can inline them.

Errors are shown in kcal/mol (energies) and kcal/mol/Å (forces), the paper's units.
"""

from __future__ import annotations

import io
from typing import Sequence

import numpy as np

ERROR_PANELS = (("energy", "mae"), ("energy", "rmse"), ("energy", "maxe"),
                ("forces", "mae"), ("forces", "rmse"), ("forces", "maxe"),
                ("energy_per_atom", "mae"), ("energy_per_atom", "rmse"), ("energy_per_atom", "maxe"),
                ("stress", "mae"), ("stress", "rmse"), ("stress", "maxe"))  # the last six: cells only (DESIGN §12)
PANEL_UNITS = {"energy": "kcal/mol", "forces": "kcal/mol/A", "energy_per_atom": "meV/atom", "stress": "GPa"}
X_LABELS = {"n_train": "training structures", "labels_spent": "labels spent (oracle calls)",
            "cpu_hours": "CPU hours (benchmarked jobs)"}


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def png(fig, dpi: int = 100) -> bytes:
    """The figure as PNG bytes; the figure is closed."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    _pyplot().close(fig)
    return buf.getvalue()


def metric_column(kind: str, stat: str) -> str:
    """The summary column of a test error: ``forces_mae_kcal/mol/A``, ``energy_rmse_kcal/mol``, ``stress_mae_GPa``."""
    return f"{kind}_{stat}_{PANEL_UNITS[kind]}"


def _span_decades(lo: float, hi: float) -> float:
    return float(np.log10(hi / lo)) if lo > 0 and hi > lo else 0.0


def readable_log_axes(ax, x: bool = True, y: bool = True) -> None:
    """Log axes (call after plotting) with plain numbers on the ticks ("0.3", "200", not "3e-01"); minor
    ticks are labelled too where the axis spans less than about a decade (else it may show no label)."""
    from matplotlib.ticker import FuncFormatter, NullFormatter

    plain = FuncFormatter(lambda v, _: f"{v:.3g}")
    for log, axis, limits, scale in ((x, ax.xaxis, ax.get_xlim, ax.set_xscale),
                                     (y, ax.yaxis, ax.get_ylim, ax.set_yscale)):
        if not log:
            continue
        scale("log")
        axis.set_major_formatter(plain)
        axis.set_minor_formatter(plain if _span_decades(*limits()) < 1.2 else NullFormatter())
    ax.tick_params(which="minor", labelsize=7)
    ax.grid(alpha=0.3, which="both")


def wide(values: np.ndarray) -> bool:
    """Positive values that span more than a decade: worth a log axis."""
    positive = values[values > 0]
    return len(positive) > 1 and len(positive) == len(values) and positive.max() > 10 * positive.min()


def mean_curve(rows: Sequence[dict], strategy: str, x: str, y: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per iteration of ``strategy``: mean x, mean y and the standard deviation of y over the seeds
    (0 with one seed); iterations where some value is missing are left out."""
    by_iter: dict[int, list[tuple[float, float]]] = {}
    for r in rows:
        if r["strategy"] == strategy and r.get(x) is not None and r.get(y) is not None:
            by_iter.setdefault(int(r["iteration"]), []).append((float(r[x]), float(r[y])))
    its = sorted(by_iter)
    xs = np.array([np.mean([p[0] for p in by_iter[i]]) for i in its])
    ys = np.array([np.mean([p[1] for p in by_iter[i]]) for i in its])
    sd = np.array([np.std([p[1] for p in by_iter[i]], ddof=1) if len(by_iter[i]) > 1 else 0.0 for i in its])
    return xs, ys, sd


def seed_means(rows: Sequence[dict], group: Sequence[str], columns: Sequence[str]) -> list[dict]:
    """Per value of the ``group`` keys (first-seen order): ``seeds`` = how many rows (one per seed) and the mean of
    each of ``columns`` over the rows where it is a finite number (NaN where none is; an int where integers have
    a whole mean, as counts and sizes shared by every seed)."""
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault(tuple(r[g] for g in group), []).append(r)
    out = []
    for key, members in groups.items():
        row = {**dict(zip(group, key)), "seeds": len(members)}
        for c in columns:
            values = [m[c] for m in members if m.get(c) is not None and np.isfinite(float(m[c]))]
            whole = all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in values)
            mean = float(np.mean(values)) if values else float("nan")
            row[c] = int(mean) if values and whole and sum(values) % len(values) == 0 else mean
        out.append(row)
    return out


def learning_curves(rows: Sequence[dict], x: str, references: dict[str, dict] | None = None) -> bytes | None:
    """Energy and force MAE/RMSE/MAXE on the test set against ``x`` (n_train, labels_spent or
    cpu_hours), one line per strategy, mean ± standard deviation over seeds; each reference potential's
    error (``references``: name → its figures) a dashed horizontal line; None without data."""
    panels = [(k, s) for k, s in ERROR_PANELS if any(metric_column(k, s) in r for r in rows)]
    strategies = list(dict.fromkeys(str(r["strategy"]) for r in rows))
    if not panels or not any(float(r.get(x) or 0) > 0 for r in rows):
        return None
    plt = _pyplot()
    n_col = 3
    fig, axes = plt.subplots((len(panels) + n_col - 1) // n_col, n_col, figsize=(13, 3.6 * ((len(panels) + 2) // 3)),
                             squeeze=False)
    for ax, (kind, stat) in zip(axes.flat, panels):
        col = metric_column(kind, stat)
        for strategy in strategies:
            xs, ys, sd = mean_curve(rows, strategy, x, col)
            keep = xs > 0
            ax.errorbar(xs[keep], ys[keep], yerr=sd[keep], marker="o", ms=3, capsize=2, label=strategy)
        for k, (name, figures) in enumerate((references or {}).items()):
            if col in figures:
                ax.axhline(figures[col], color="0.3", ls=("--", ":", "-.")[k % 3], lw=1, label=f"{name} (reference)")
        ax.set_title(f"test {kind.replace('_', ' ')} {stat.upper()}")
        ax.set_xlabel(X_LABELS.get(x, x))
        ax.set_ylabel(PANEL_UNITS[kind].replace("/A", "/Å"))
        readable_log_axes(ax)
    for ax in list(axes.flat)[len(panels):]:
        ax.set_visible(False)
    axes.flat[0].legend(fontsize=8)
    fig.tight_layout()
    return png(fig)


def summary_table(path) -> list[dict]:
    """The rows of a campaign's summary.csv (pandas reads the types; empty cells → None)."""
    import pandas as pd

    table = pd.read_csv(path)
    return table.astype(object).where(table.notna(), None).to_dict("records")


def write_learning_curve(summary, out) -> None:
    """learning_curve.png of the workflow (rule plot_learning_curve): :func:`learning_curves` against the
    training-set size, from summary.csv; written atomically."""
    from oedal.errors import InputError
    from oedal.files import atomic_path

    data = learning_curves(summary_table(summary), "n_train")
    if data is None:
        raise InputError(f"{summary}: no test-error columns to draw")
    with atomic_path(out) as tmp:
        tmp.write_bytes(data)


def score_histogram(scores: np.ndarray, threshold: float, title: str) -> bytes:
    """Distribution of the pool's scores (log x) with the threshold σ_th marked (I = score/σ_th > 1 right of it)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.4))
    log_x = wide(scores)
    bins = np.geomspace(scores.min(), scores.max(), 50) if log_x else 50
    ax.hist(scores, bins=bins, color="tab:blue", alpha=0.8)
    ax.axvline(threshold, color="tab:red", lw=2, label=f"σ_th = {threshold:.3g}")
    if log_x:
        readable_log_axes(ax, y=False)
    ax.set_xlabel("score")
    ax.set_ylabel("pool structures")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return png(fig)


def score_error_scatter(scores: np.ndarray, errors: np.ndarray, title: str,
                        quantity: str = "force RMSE per structure (kcal/mol/Å)") -> bytes:
    """Score of each test structure against its error (``quantity``: the force RMSE, or the |energy error| of
    energy-only data); log axes where the values span decades."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5, 4))
    ax.scatter(scores, errors, s=6, alpha=0.5)
    ax.set_xlabel("score")
    ax.set_ylabel(quantity)
    readable_log_axes(ax, x=wide(scores), y=wide(errors) or bool(np.all(errors > 0)))
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return png(fig)


def _parity(ax, ref: np.ndarray, pred: np.ndarray, what: str, unit: str) -> None:
    """Predicted against reference with the diagonal."""
    ax.scatter(ref, pred, s=2, alpha=0.3)
    lo, hi = float(min(ref.min(), pred.min())), float(max(ref.max(), pred.max()))
    ax.plot([lo, hi], [lo, hi], color="k", lw=0.8)
    ax.set_xlabel(f"reference {what} ({unit})")
    ax.set_ylabel(f"predicted ({unit})")
    ax.set_title(f"{what} parity", fontsize=10)


def parity_and_histogram(force_ref: np.ndarray, force_pred: np.ndarray, title: str,
                         energy_ref: np.ndarray | None = None, energy_pred: np.ndarray | None = None) -> bytes:
    """Force components predicted against reference (kcal/mol/Å), the histogram of their errors and, when
    given, energies predicted against reference (kcal/mol, each shifted by the mean reference energy). Without
    force components (energy-only data, empty arrays): the energy parity and the histogram of energy errors."""
    plt = _pyplot()
    forces = len(force_ref) > 0
    n = 2 + (forces and energy_ref is not None)
    fig, axes = plt.subplots(1, n, figsize=(5 * n, 4))
    if energy_ref is not None:
        shift = float(np.mean(energy_ref))
        _parity(axes[-1 if forces else 0], energy_ref - shift, energy_pred - shift, "energy − mean", "kcal/mol")
    if forces:
        _parity(axes[0], force_ref, force_pred, "force component", "kcal/mol/Å")
        _error_histogram(axes[1], force_pred - force_ref, "force component", "kcal/mol/Å", "components")
    else:
        _error_histogram(axes[1], energy_pred - energy_ref, "energy", "kcal/mol", "structures")
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    return png(fig)


def _error_histogram(ax, errors: np.ndarray, what: str, unit: str, counted: str) -> None:
    """The distribution of ``errors`` (predicted − reference, in ``unit``) on a log count axis."""
    ax.hist(errors, bins=80, color="tab:green", alpha=0.8)
    ax.set_yscale("log")
    ax.set_xlabel(f"{what} error ({unit})")
    ax.set_ylabel(counted)
    ax.set_title(f"{what.split()[0]} error distribution", fontsize=10)


def _colors(names: Sequence[str]) -> dict[str, tuple]:
    """A distinct colour per name (tab10, tab20 beyond ten)."""
    cmap = _pyplot().get_cmap("tab10" if len(names) <= 10 else "tab20")
    return {n: cmap(k % cmap.N) for k, n in enumerate(names)}


def class_error_bars(errors: Sequence[dict], classes: Sequence[str], metrics: Sequence[str],
                     labels: dict[str, str]) -> bytes | None:
    """Per metric a panel of grouped bars: per class (``labels`` name them), one bar per strategy, the mean over
    seeds (rows of oedal.report.classes.class_errors); None without data."""
    strategies = list(dict.fromkeys(str(r["strategy"]) for r in errors))
    if not errors or not metrics:
        return None
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(metrics), figsize=(4.2 * len(metrics), 3.6), squeeze=False)
    width = 0.8 / len(strategies)
    for ax, metric in zip(axes.flat, metrics):
        for k, strategy in enumerate(strategies):
            by_class = {r["class"]: r.get(metric) for r in errors if r["strategy"] == strategy}
            ax.bar(np.arange(len(classes)) + (k - (len(strategies) - 1) / 2) * width,
                   [np.nan if by_class.get(c) is None else float(by_class[c]) for c in classes], width, label=strategy)
        ax.set_xticks(np.arange(len(classes)), [labels[c] for c in classes], rotation=30, fontsize=8)
        kind, stat, unit = metric.split("_", 2)
        ax.set_title(f"test {'force' if kind == 'forces' else kind} {stat.upper()}", fontsize=10)
        ax.set_ylabel(unit.replace("/A", "/Å"))
        ax.grid(alpha=0.3, axis="y")
    axes.flat[0].legend(fontsize=8)
    fig.tight_layout()
    return png(fig)


def pick_composition(means: Sequence[dict], classes: Sequence[str], labels: dict[str, str]) -> bytes | None:
    """One panel per strategy: per iteration a bar stacked by the share of each class among the picks, and left of
    them the pool's composition at the strategy's first iteration (rows of oedal.report.selection.share_rows,
    averaged over seeds); None without picks."""
    strategies = list(dict.fromkeys(str(r["strategy"]) for r in means))
    if not strategies or not classes:
        return None
    plt = _pyplot()
    colors = _colors(classes)
    n_col = min(3, len(strategies))
    n_row = -(-len(strategies) // n_col)
    width = min(8.0, 1.6 + 0.3 * (len(means) / len(strategies) + 1))  # inches per panel
    fig, axes = plt.subplots(n_row, n_col, figsize=(width * n_col, 3.6 * n_row), squeeze=False, sharey=True)
    for ax in list(axes.flat)[len(strategies):]:
        ax.set_visible(False)
    for ax, strategy in zip(axes.flat, strategies):
        mine = sorted((r for r in means if r["strategy"] == strategy), key=lambda r: r["iteration"])
        ticks = ["pool"] + [str(r["iteration"]) for r in mine]
        bottom = np.zeros(len(ticks))
        for c in classes:
            share = np.nan_to_num([mine[0][f"pool_share_{c}"]] + [r[f"share_{c}"] for r in mine])
            ax.bar(np.arange(len(ticks)), share, 0.8, bottom=bottom, color=colors[c], label=labels[c])
            bottom += share
        ax.set_xticks(np.arange(len(ticks)), ticks, fontsize=8)
        ax.set_xlabel("iteration")
        ax.set_title(strategy, fontsize=10)
    for ax in axes[:, 0]:
        ax.set_ylabel("share of the picks")
    axes.flat[n_col - 1].legend(fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5), title="class")
    fig.tight_layout()
    return png(fig)


def pick_sizes(means: Sequence[dict]) -> bytes | None:
    """Mean atoms per picked structure against the iteration, one line per strategy, with the pools' mean (rows of
    oedal.report.selection.share_rows averaged over seeds); None without picks."""
    from matplotlib.ticker import MaxNLocator

    strategies = list(dict.fromkeys(str(r["strategy"]) for r in means))
    if not strategies:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.6))
    for strategy in strategies:
        mine = sorted((r for r in means if r["strategy"] == strategy), key=lambda r: r["iteration"])
        ax.plot([r["iteration"] for r in mine], [r["mean_n_atoms"] for r in mine], marker="o", ms=4, label=strategy)
    pool = seed_means(sorted(means, key=lambda r: r["iteration"]), ("iteration",), ("pool_mean_n_atoms",))
    ax.plot([r["iteration"] for r in pool], [r["pool_mean_n_atoms"] for r in pool], color="grey", ls="--",
            label="pool")
    ax.set_xlabel("iteration")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel("atoms per picked structure (mean)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return png(fig)


def threshold_panels(means: Sequence[dict]) -> bytes | None:
    """Share of the picks with I = score/σ_th > 1 and their mean I against the iteration, per strategy, σ_th =
    median (solid) and mean (dashed) of the training scores (rows of oedal.report.selection.threshold_study
    averaged over seeds); None without scores."""
    from matplotlib.ticker import MaxNLocator

    strategies = list(dict.fromkeys(str(r["strategy"]) for r in means))
    if not strategies:
        return None
    plt = _pyplot()
    colors = _colors(strategies)
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    for strategy in strategies:
        for kind, style in (("median", "-"), ("mean", "--")):
            mine = sorted((r for r in means if r["strategy"] == strategy and r["kind"] == kind),
                          key=lambda r: r["iteration"])
            its = [r["iteration"] for r in mine]
            for ax, y in zip(axes, ("share_informative", "mean_informativeness")):
                ax.plot(its, [r[y] for r in mine], ls=style, marker="o", ms=4, color=colors[strategy],
                        label=f"{strategy}, σ_th = {kind}")
    axes[0].set_ylabel("picks with I > 1 (share)")
    axes[0].set_ylim(-0.03, 1.03)
    axes[1].axhline(1.0, color="k", lw=0.8)
    axes[1].set_ylabel("mean I of the picks")
    if wide(np.array([r["mean_informativeness"] for r in means], dtype=float)):
        readable_log_axes(axes[1], x=False)
    for ax in axes:
        ax.set_xlabel("iteration")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    return png(fig)
