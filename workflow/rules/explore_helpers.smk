# Helpers of the rules in explore.smk (input functions, flags); shared ones live in common.smk.

EXPLORE_SHARDS = list(range(CAMPAIGN.explore.shards))


def explore_inputs(wildcards) -> dict:
    """This iteration's model (it carries its fitted uncertainty) and the previous iteration's walkers."""
    here = iter_dir(wildcards, iteration(wildcards))
    files = {"model": f"{here}/model.pt", "status": f"{here}/status.json"}
    if iteration(wildcards) > 0:
        prev = iter_dir(wildcards, iteration(wildcards) - 1)
        files["previous"] = [f"{prev}/explore/walkers_{k}.json" for k in EXPLORE_SHARDS]
    return files


def previous_walkers_flag(wildcards, input) -> str:
    """``--previous`` with every walker file of the previous iteration (iteration 0 starts fresh)."""
    return "--previous " + " ".join(shlex.quote(p) for p in input.previous) if "previous" in input.keys() else ""


def explore_seed(wildcards) -> int:
    """The walkers' random streams: one per campaign seed (not per strategy: iteration 0 is shared)."""
    return derive_seed(wildcards.campaign, wildcards.seed, "explore")


def initial_sampling_json(wildcards) -> str:
    """The MD settings the initial structures depend on: the cheap potential, time step and friction
    for explore.initial: md; nothing for rattled starts (an edit of the test set's MD reruns nothing)."""
    if CAMPAIGN.explore.initial != "md":
        return "{}"
    return settings_json("sampling", include={"potential", "timestep", "friction"})
