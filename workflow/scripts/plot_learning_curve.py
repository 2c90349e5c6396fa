"""Learning curves of a campaign (rule plot_learning_curve, Snakemake `script:`): the report's plotter,
oedal.report.figures.learning_curves, against the training-set size, from summary.csv."""

import logging

from oedal.report.figures import write_learning_curve

logging.basicConfig(filename=snakemake.log[0], level=logging.INFO)  # noqa: F821
write_learning_curve(snakemake.input[0], snakemake.output[0])  # noqa: F821
logging.info("learning curves -> %s", snakemake.output[0])  # noqa: F821
