# Helpers shared by the rules: paths, the previous-iteration input functions, settings as JSON,
# seeds and resources. CAMPAIGN is the validated CampaignSettings (see the Snakefile).
import json
import os
import re
import sys
from pathlib import Path

from oedal.campaign.plan import derive_seed, parse_strategy, plan_batches

# Jobs call the `oedal` installed beside the Python that runs Snakemake, so a virtual environment
# need not be activated; with --sdm conda the job's environment still comes first on PATH.
envvars:
    "PATH",


_search_path = os.environ["PATH"]
os.environ["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), _search_path])

RESULTS = CAMPAIGN.results_dir.rstrip("/")
BATCHES = plan_batches(CAMPAIGN)  # batch size m of each selection round
LAST = len(BATCHES)  # index of the last iteration (trained and evaluated, nothing selected)
SHARDS = list(range(CAMPAIGN.labeling.shards))

RUN = f"{RESULTS}/{{campaign}}/{{strategy}}/seed{{seed}}"
ITER = f"{RUN}/iter_{{iter}}"
DATA = f"{RESULTS}/{{campaign}}/data"
SOURCE = f"{DATA}/source.h5"

ENV_CORE = "../../envs/core.yaml"
ENV_ORACLE = {"xtb": "../../envs/xtb.yaml", "pyscf": "../../envs/pyscf.yaml"}.get(CAMPAIGN.oracle.kind, ENV_CORE)
ENV_SAMPLE = ENV_ORACLE if CAMPAIGN.sampling.potential.kind == CAMPAIGN.oracle.kind else "../../envs/xtb.yaml"


wildcard_constraints:
    campaign=re.escape(CAMPAIGN.name),
    strategy="|".join(re.escape(s) for s in CAMPAIGN.strategies),
    seed=r"\d+",
    iter=r"\d{3}",
    shard=r"\d+",
    member=r"[1-9]\d*",


# -- paths ---------------------------------------------------------------------------------------


def iteration(wildcards) -> int:
    return int(wildcards.iter)


def iter_dir(wildcards, i: int) -> str:
    """Directory of iteration ``i`` of the run that ``wildcards`` name."""
    return f"{RESULTS}/{wildcards.campaign}/{wildcards.strategy}/seed{wildcards.seed}/iter_{i:03d}"


def previous(name: str):
    """Input function: file ``name`` of iteration i−1 (the unrolled loop's only backward edge)."""

    def files(wildcards):
        return f"{iter_dir(wildcards, iteration(wildcards) - 1)}/{name}"

    return files


def model_names(strategy: str) -> list[str]:
    """model.pt (member 0) and, for query by committee, model_k1.pt ... model_k{K-1}.pt."""
    if strategy != "qbc":
        return ["model.pt"]
    return ["model.pt"] + [f"model_k{k}.pt" for k in range(1, CAMPAIGN.committee)]


def models(wildcards) -> list[str]:
    return [f"{iter_dir(wildcards, iteration(wildcards))}/{m}" for m in model_names(wildcards.strategy)]


def run_dirs(campaign: str) -> list[tuple[str, int, str]]:
    return [(s, seed, f"{RESULTS}/{campaign}/{s}/seed{seed}") for s in CAMPAIGN.strategies for seed in CAMPAIGN.seeds]


def previous_dir(wildcards) -> str:
    return iter_dir(wildcards, iteration(wildcards) - 1)


def summary_inputs(name: str):
    """Input function: file ``name`` of every iteration of every run of the campaign."""

    def files(wildcards) -> list[str]:
        return [f"{d}/iter_{i:03d}/{name}" for _, _, d in run_dirs(wildcards.campaign) for i in range(LAST + 1)]

    return files


def run_specs(wildcards) -> list[str]:
    """``STRATEGY:SEED:RUN_DIR`` for `oedal summary`."""
    return [f"{s}:{seed}:{d}" for s, seed, d in run_dirs(wildcards.campaign)]


def final_targets() -> list[str]:
    """Every run's last iteration, the summary table and the learning-curve plot."""
    name = CAMPAIGN.name
    last = [f"{d}/iter_{LAST:03d}/{f}" for _, _, d in run_dirs(name) for f in ("model.pt", "metrics.json")]
    return last + [f"{RESULTS}/{name}/summary.csv", f"{RESULTS}/{name}/learning_curve.png"]


# -- settings (params.settings: one config section as JSON, so a change reruns only its step) ---


def settings_json(section: str, **overrides) -> str:
    data = getattr(CAMPAIGN, section).model_dump(mode="json")
    data.update(overrides)
    return json.dumps(data, sort_keys=True, separators=(",", ":"))


def member(wildcards) -> int:
    """Committee member of a training job: 0 for model.pt, k for model_k{k}.pt."""
    return int(wildcards.get("member", 0))


def member_file(k: int) -> str:
    return "model.pt" if k == 0 else f"model_k{k}.pt"


def training_json(wildcards) -> str:
    """TrainingSettings with a seed derived per campaign/seed/iteration/member (not per strategy:
    every strategy starts from the same iteration-0 model)."""
    seed = derive_seed(wildcards.campaign, wildcards.seed, wildcards.iter, "train", member(wildcards))
    return settings_json("training", seed=seed)  # threads: --threads {threads}


def score_json(wildcards) -> str:
    """This run's score settings (oedal.campaign.settings.CampaignSettings.score_settings): only
    greedy selection reads the projected sensitivities; other methods skip writing them."""
    return json.dumps(CAMPAIGN.score_settings(wildcards.strategy), sort_keys=True, separators=(",", ":"))


def model_flags(wildcards, input) -> str:
    """``--model A --model B ...`` (the committee for qbc)."""
    return " ".join(f"--model {m}" for m in input.models)


def select_json(wildcards) -> str:
    i = iteration(wildcards)
    if i >= LAST:
        raise ValueError(f"iteration {i}: nothing is selected in the last iteration ({LAST}) of the plan")
    seed = derive_seed(wildcards.campaign, wildcards.strategy, wildcards.seed, wildcards.iter, "select")
    method = parse_strategy(wildcards.strategy).method
    return settings_json("select", method=method, n=BATCHES[i], fraction=None, seed=seed)


def select_inputs(wildcards) -> dict:
    """The pool and its scores; random runs read no scores (`oedal select --method random` takes the
    pool ids from pool.h5) and exclude the training set by ``--exclude train.h5`` instead."""
    here = iter_dir(wildcards, iteration(wildcards))
    files = {"pool": f"{here}/pool.h5"}
    if parse_strategy(wildcards.strategy).score is None:
        files["train"] = f"{here}/train.h5"
    else:
        files["scores"] = f"{here}/scores.h5"
    return files


def oracle_json(wildcards) -> str:
    """The oracle settings; a replay oracle without a source replays the campaign's own data set."""
    if CAMPAIGN.oracle.kind == "replay" and CAMPAIGN.oracle.source is None:
        return settings_json("oracle", source=SOURCE.format(campaign=wildcards.campaign))
    return settings_json("oracle")


def valid_seed(wildcards) -> int:
    return derive_seed(wildcards.campaign, wildcards.strategy, wildcards.seed, wildcards.iter, "valid")


def split_seed(wildcards) -> int:
    return derive_seed(wildcards.campaign, wildcards.seed, "split")


# -- optional inputs -----------------------------------------------------------------------------


def previous_model(wildcards) -> str:
    """This member's model of iteration i−1 (copied forward once the campaign has stopped)."""
    i = iteration(wildcards)
    return "" if i == 0 else f"{iter_dir(wildcards, i - 1)}/{member_file(member(wildcards))}"


def train_inputs(wildcards) -> dict:
    here = iter_dir(wildcards, iteration(wildcards))
    files = {"train": f"{here}/train.h5", "valid": f"{here}/valid.h5", "status": f"{here}/status.json"}
    if iteration(wildcards) > 0:
        files["previous"] = previous_model(wildcards)
    return files


def warm_start_flag(wildcards) -> str:
    if not CAMPAIGN.warm_start or iteration(wildcards) == 0:
        return ""
    return f"--warm-start {previous_model(wildcards)}"


def shard_inputs(wildcards) -> dict:
    here = iter_dir(wildcards, iteration(wildcards))
    files = {"selected": f"{here}/selected.h5", "pool": f"{here}/pool.h5", "status": f"{here}/status.json"}
    if CAMPAIGN.stop.target is not None:
        files["metrics"] = f"{here}/metrics.json"
    if CAMPAIGN.stop.informative and parse_strategy(wildcards.strategy).score not in (None, "qbc"):
        files["scores"] = f"{here}/scores.h5"
    return files


def optional_flag(key: str, flag: str):
    """params function: ``flag {input.key}`` when that input exists for this job, else nothing."""

    def make(wildcards, input) -> str:
        return f"{flag} {input[key]}" if key in input.keys() else ""

    return make


def label_inputs(wildcards) -> dict:
    files = {"shard": f"{iter_dir(wildcards, iteration(wildcards))}/shards/unlabeled_{wildcards.shard}.h5"}
    if CAMPAIGN.oracle.kind == "replay" and CAMPAIGN.oracle.source is None:
        files["source"] = SOURCE.format(campaign=wildcards.campaign)
    return files


def n_valid_redraw(wildcards) -> int:
    return CAMPAIGN.split.n_valid if CAMPAIGN.redraw_valid else 0


# -- resources (partitions and accounts live only in profiles/) --------------------------------

GPU = {"gpu": 1} if CAMPAIGN.resources.use_gpu else {}
TRAIN_RESOURCES = dict(
    mem_mb=CAMPAIGN.resources.train_mem_mb, runtime=CAMPAIGN.resources.train_runtime, **GPU
)
SCORE_RESOURCES = dict(
    mem_mb=CAMPAIGN.resources.score_mem_mb, runtime=CAMPAIGN.resources.score_runtime, **GPU
)
LABEL_RESOURCES = dict(mem_mb=CAMPAIGN.resources.label_mem_mb, runtime=CAMPAIGN.resources.label_runtime)
