# Helpers of the rules in data.smk (input functions, flags); shared ones live in common.smk.

import shlex


# ``--data-dir DIR`` where dataset.data_dir is set (an empty ``--data-dir {x:q}`` would render as a bare flag)
DATA_DIR_FLAG = f"--data-dir {shlex.quote(CAMPAIGN.dataset.data_dir)}" if CAMPAIGN.dataset.data_dir else ""


def transfer_source(wildcards) -> str:
    """The named data set or file behind a transfer test set (dataset.transfer)."""
    return TRANSFER[wildcards.transfer]
