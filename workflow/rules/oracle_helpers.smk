# Helpers of the rules in oracle.smk (input functions, flags); shared ones live in common.smk.


def shard_inputs(wildcards) -> dict:
    """The selection and what the stop decision reads: metrics (stop.target), scores (stop.informative)."""
    here = iter_dir(wildcards, iteration(wildcards))
    files = {"selected": f"{here}/selected.h5", "pool": f"{here}/pool.h5", "status": f"{here}/status.json"}
    if CAMPAIGN.stop.target is not None:
        files["metrics"] = f"{here}/metrics.json"
    # (exploration: a walker stopped by the model's failure offers a frame of any I; the walkers decide)
    if CAMPAIGN.stop.informative and not CAMPAIGN.exploring and parse_strategy(wildcards.strategy).score not in (None, "qbc"):
        files["scores"] = f"{here}/scores.h5"
    if CAMPAIGN.exploring:  # the walkers' counts: the convergence stop
        files["explore"] = f"{here}/explore.json"
    return files


def merge_outputs() -> dict:
    """Iteration i's sets; no pool.h5 in an exploration campaign (its walkers make it)."""
    files = {"train": f"{ITER}/train.h5", "valid": f"{ITER}/valid.h5", "status": f"{ITER}/status.json"}
    if not CAMPAIGN.exploring:
        files["pool"] = f"{ITER}/pool.h5"
    return files


def n_valid_redraw(wildcards) -> int:
    return CAMPAIGN.split.n_valid if CAMPAIGN.redraw_valid else 0


def label_inputs(wildcards) -> dict:
    files = {"shard": f"{iter_dir(wildcards, iteration(wildcards))}/shards/unlabeled_{wildcards.shard}.h5"}
    if CAMPAIGN.oracle.kind == "replay" and CAMPAIGN.oracle.source is None:
        files["source"] = SOURCE.format(campaign=wildcards.campaign)
    return files


def merge_flags() -> str:
    """How the labeled batch joins the sets: a redrawn validation set (the paper's protocol with a replay
    oracle), or for exploration no pool and a share of the batch to validation. One string, empty in the
    plain case, so that a campaign made before these options existed reruns nothing."""
    flags = ["--redraw-valid"] if CAMPAIGN.redraw_valid else []
    if CAMPAIGN.exploring:
        flags.append("--no-pool")
    if CAMPAIGN.valid_share:
        flags.append(f"--valid-share {CAMPAIGN.valid_share}")
    return " ".join(flags)
