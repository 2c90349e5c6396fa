"""Learning curves of a campaign: test force errors against the training-set size, per strategy
(mean ± standard deviation over seeds). Called by rule plot_learning_curve (Snakemake `script:`)."""

import logging
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import LogFormatter, ScalarFormatter  # noqa: E402
import pandas as pd  # noqa: E402


def pick(columns, *words):
    """The first column whose name holds every word (metrics.json keys are flattened with '_')."""
    for column in columns:
        if all(w in column.lower() for w in words):
            return column
    return None


def main(summary: str, out: str) -> None:
    table = pd.read_csv(summary)
    panels = [(stat, pick(table.columns, "force", stat, "kcal")) for stat in ("mae", "rmse", "maxe")]
    panels = [(stat, col) for stat, col in panels if col is not None]
    if not panels:  # no kcal/mol columns: fall back to eV/Å
        panels = [(stat, pick(table.columns, "force", stat)) for stat in ("mae", "rmse", "maxe")]
        panels = [(stat, col) for stat, col in panels if col is not None]
    if not panels:
        raise SystemExit(f"{summary}: no force-error columns among {list(table.columns)}")
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.6), squeeze=False)
    for ax, (stat, col) in zip(axes[0], panels):
        for strategy, rows in table.groupby("strategy", sort=False):
            curve = rows.groupby("iteration").agg(n=("n_train", "mean"), mean=(col, "mean"), std=(col, "std"))
            ax.errorbar(curve["n"], curve["mean"], yerr=curve["std"].fillna(0), marker="o", ms=3, capsize=2,
                        label=strategy)
        ax.set_xlabel("training structures")
        ax.set_ylabel(col.replace("_", " "))
        ax.set_title(f"test force {stat.upper()}")
        ax.set_xscale("log")
        ax.set_yscale("log")
        for axis in (ax.xaxis, ax.yaxis):
            axis.set_major_formatter(ScalarFormatter())
            # label minor ticks too where the data span less than ~2 decades (else no y labels at all)
            axis.set_minor_formatter(LogFormatter(labelOnlyBase=False, minor_thresholds=(2, 0.5)))
        ax.grid(alpha=0.3, which="both")
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    logging.info("learning curves -> %s", out)


if __name__ == "__main__" and "snakemake" not in globals():
    main(sys.argv[1], sys.argv[2])
else:
    logging.basicConfig(filename=snakemake.log[0], level=logging.INFO)  # noqa: F821
    main(snakemake.input[0], snakemake.output[0])  # noqa: F821
