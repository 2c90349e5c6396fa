# Helpers of the rules in data.smk (input functions, flags); shared ones live in common.smk.


def transfer_source(wildcards) -> str:
    """The named data set or file behind a transfer test set (dataset.transfer)."""
    return TRANSFER[wildcards.transfer]
