# Helpers of the rules in report.smk (input functions, flags); shared ones live in common.smk.


def summary_inputs(*names: str, last: int | None = None):
    """Input function: the files ``names`` of every iteration (up to ``last``, default LAST) of every run."""

    def files(wildcards) -> list[str]:
        upto = LAST if last is None else last
        return [f"{d}/iter_{i:03d}/{name}" for _, _, d in run_dirs(wildcards.campaign) for i in range(upto + 1)
                for name in names]

    return files


def transfer_flags(wildcards) -> str:
    """``--metrics transfer_NAME:metrics_transfer_NAME.json`` for every transfer test set."""
    return " ".join(f"--metrics transfer_{name}:metrics_transfer_{name}.json" for name in TRANSFER)


def run_specs(wildcards) -> list[str]:
    """``STRATEGY:SEED:RUN_DIR`` for `oedal summary`."""
    return [f"{s}:{seed}:{d}" for s, seed, d in run_dirs(wildcards.campaign)]


def campaign_folder(wildcards) -> str:
    """The campaign's results folder, RESULTS/CAMPAIGN (what `oedal report` reads)."""
    return f"{RESULTS}/{wildcards.campaign}"


def campaign_json() -> str:
    """The campaign config as set (defaults are filled in by `oedal record`) as JSON: campaign.json records
    every setting, so any edit rewrites it."""
    return json.dumps(CAMPAIGN.model_dump(mode="json", exclude_unset=True), sort_keys=True, separators=(",", ":"))
