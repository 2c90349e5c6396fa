# Helpers of the rules in report.smk (input functions, flags); shared ones live in common.smk.


def summary_inputs(name: str):
    """Input function: file ``name`` of every iteration of every run of the campaign."""

    def files(wildcards) -> list[str]:
        return [f"{d}/iter_{i:03d}/{name}" for _, _, d in run_dirs(wildcards.campaign) for i in range(LAST + 1)]

    return files


def run_specs(wildcards) -> list[str]:
    """``STRATEGY:SEED:RUN_DIR`` for `oedal summary`."""
    return [f"{s}:{seed}:{d}" for s, seed, d in run_dirs(wildcards.campaign)]
