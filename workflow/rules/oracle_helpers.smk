# Helpers of the rules in oracle.smk (input functions, flags); shared ones live in common.smk.


def shard_inputs(wildcards) -> dict:
    """The selection and what the stop decision reads: metrics (stop.target), scores (stop.informative)."""
    here = iter_dir(wildcards, iteration(wildcards))
    files = {"selected": f"{here}/selected.h5", "pool": f"{here}/pool.h5", "status": f"{here}/status.json"}
    if CAMPAIGN.stop.target is not None:
        files["metrics"] = f"{here}/metrics.json"
    if CAMPAIGN.stop.informative and parse_strategy(wildcards.strategy).score not in (None, "qbc"):
        files["scores"] = f"{here}/scores.h5"
    return files


def n_valid_redraw(wildcards) -> int:
    return CAMPAIGN.split.n_valid if CAMPAIGN.redraw_valid else 0


def label_inputs(wildcards) -> dict:
    files = {"shard": f"{iter_dir(wildcards, iteration(wildcards))}/shards/unlabeled_{wildcards.shard}.h5"}
    if CAMPAIGN.oracle.kind == "replay" and CAMPAIGN.oracle.source is None:
        files["source"] = SOURCE.format(campaign=wildcards.campaign)
    return files
