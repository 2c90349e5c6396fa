"""The report's figures (matplotlib, Agg), returned as PNG bytes so that the page can inline them.

Errors are shown in kcal/mol (energies) and kcal/mol/Å (forces), the paper's units.
"""

from __future__ import annotations

import io
from typing import Sequence

import numpy as np

ERROR_PANELS = (("energy", "mae"), ("energy", "rmse"), ("energy", "maxe"),
                ("forces", "mae"), ("forces", "rmse"), ("forces", "maxe"))
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
    """The summary column of a test error: ``forces_mae_kcal/mol/A``, ``energy_rmse_kcal/mol``."""
    return f"{kind}_{stat}_kcal/mol/A" if kind == "forces" else f"{kind}_{stat}_kcal/mol"


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


def learning_curves(rows: Sequence[dict], x: str) -> bytes | None:
    """Energy and force MAE/RMSE/MAXE on the test set against ``x`` (n_train, labels_spent or
    cpu_hours), one line per strategy, mean ± standard deviation over seeds; None without data."""
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
        ax.set_title(f"test {kind} {stat.upper()}")
        ax.set_xlabel(X_LABELS.get(x, x))
        ax.set_ylabel("kcal/mol/Å" if kind == "forces" else "kcal/mol")
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


def score_error_scatter(scores: np.ndarray, errors: np.ndarray, title: str) -> bytes:
    """Score of each test structure against its force RMSE (kcal/mol/Å); log axes where the values span decades."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5, 4))
    ax.scatter(scores, errors, s=6, alpha=0.5)
    ax.set_xlabel("score")
    ax.set_ylabel("force RMSE per structure (kcal/mol/Å)")
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
    given, energies predicted against reference (kcal/mol, each shifted by the mean reference energy)."""
    plt = _pyplot()
    n = 3 if energy_ref is not None else 2
    fig, axes = plt.subplots(1, n, figsize=(5 * n, 4))
    if energy_ref is not None:
        shift = float(np.mean(energy_ref))
        _parity(axes[-1], energy_ref - shift, energy_pred - shift, "energy − mean", "kcal/mol")
    _parity(axes[0], force_ref, force_pred, "force component", "kcal/mol/Å")
    axes[1].hist(force_pred - force_ref, bins=80, color="tab:green", alpha=0.8)
    axes[1].set_yscale("log")
    axes[1].set_xlabel("force component error (kcal/mol/Å)")
    axes[1].set_ylabel("components")
    axes[1].set_title("force error distribution", fontsize=10)
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    return png(fig)
