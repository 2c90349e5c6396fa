# Helpers of the rules in train.smk (input functions, flags); shared ones live in common.smk.


def previous_model(wildcards) -> str:
    """This member's model of iteration i−1 (copied forward once the campaign has stopped)."""
    return f"{iter_dir(wildcards, iteration(wildcards) - 1)}/{member_file(member(wildcards))}"


def train_inputs(wildcards) -> dict:
    here = iter_dir(wildcards, iteration(wildcards))
    files = {"train": f"{here}/train.h5", "valid": f"{here}/valid.h5", "status": f"{here}/status.json"}
    if iteration(wildcards) > 0:
        files["previous"] = previous_model(wildcards)
    return files


def warm_start_flag(wildcards) -> str:
    if not CAMPAIGN.warm_start or iteration(wildcards) == 0:
        return ""
    return f"--warm-start {shlex.quote(previous_model(wildcards))}"
