# Helpers of the rules in score.smk (input functions, flags); shared ones live in common.smk.


def models(wildcards) -> list[str]:
    return [f"{iter_dir(wildcards, iteration(wildcards))}/{m}" for m in model_names(wildcards.strategy)]


def model_flags(wildcards, input) -> str:
    """``--model A --model B ...`` (the committee for qbc), each path shell-quoted."""
    return " ".join(f"--model {shlex.quote(m)}" for m in input.models)
