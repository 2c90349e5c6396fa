# What the rules share: paths, wildcards, settings as JSON, seeds and resources. Helpers that one
# rule file alone uses live beside their rules. CAMPAIGN is the validated CampaignSettings (see the
# Snakefile).
import json
import os
import re
import shlex
import sys
from pathlib import Path

from oedal.campaign.plan import derive_seed, member_metrics, parse_strategy, plan_batches
from oedal.oracles.base import RUNTIME_FIELDS

# Jobs call the `oedal` installed beside the Python that runs Snakemake, so a virtual environment
# need not be activated; with --sdm conda the job's environment still comes first on PATH.
envvars:
    "PATH",


_search_path = os.environ["PATH"]
os.environ["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), _search_path])
# envs/*.post-deploy.sh install this checkout into each conda environment (--sdm conda).
os.environ.update(OEDAL_CHECKOUT=str(Path(workflow.basedir).resolve()))

RESULTS = CAMPAIGN.results_dir.rstrip("/")
BATCHES = plan_batches(CAMPAIGN)  # batch size m of each selection round
LAST = len(BATCHES)  # index of the last iteration (trained and evaluated, nothing selected)
SHARDS = list(range(CAMPAIGN.labeling.shards))

LABEL_CACHE = CAMPAIGN.labeling.cache or f"{RESULTS}/labels.sqlite"  # shared by every campaign in RESULTS
RUN = f"{RESULTS}/{{campaign}}/{{strategy}}/seed{{seed}}"
ITER = f"{RUN}/iter_{{iter}}"
SEED = f"{RESULTS}/{{campaign}}/seed{{seed}}"  # what every strategy of a seed shares: the split, the test set
INIT = f"{SEED}/iter_000"  # ... and iteration 0 (trained once per seed, copied into every strategy's run)
TRANSFER = CAMPAIGN.dataset.transfer_sets()  # name → source of the extra test sets
# What share_initial links from the seed's iteration 0 into each strategy's (the pool too, unless the
# walkers of each strategy make it: exploration).
_POOL = "" if CAMPAIGN.exploring else r"pool\.h5|"
SHARED_FILES = (rf"test\.h5|iter_000/(?:train\.h5|valid\.h5|{_POOL}status\.json|model(?:_k\d+)?\.pt"
                r"|metrics(?:_transfer_\w[\w.-]*)?(?:_k\d+)?\.json)")
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
    transfer="|".join(re.escape(name) for name in TRANSFER) or "(?!)",


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


def member(wildcards) -> int:
    """Committee member of a training job: 0 for model.pt, k for model_k{k}.pt."""
    return int(wildcards.get("member", 0))


def member_file(k: int) -> str:
    return "model.pt" if k == 0 else f"model_k{k}.pt"


def model_names(strategy: str) -> list[str]:
    """model.pt (member 0) and, for query by committee, model_k1.pt ... model_k{K-1}.pt."""
    return [member_file(k) for k in range(CAMPAIGN.committee if strategy == "qbc" else 1)]


def run_dirs(campaign: str) -> list[tuple[str, int, str]]:
    return [(s, seed, f"{RESULTS}/{campaign}/{s}/seed{seed}") for s in CAMPAIGN.strategies for seed in CAMPAIGN.seeds]


def previous_dir(wildcards) -> str:
    return iter_dir(wildcards, iteration(wildcards) - 1)


def metrics_files() -> list[str]:
    """The metrics files of every iteration: the test set's, then one per transfer test set; with
    training_seeds K > 1 the same for the models k = 1 … K−1 (metrics_k{k}.json, ...)."""
    one = ["metrics.json"] + [f"metrics_transfer_{name}.json" for name in TRANSFER]
    return one + [member_metrics(f, k) for k in range(1, CAMPAIGN.training_seeds) for f in one]


def final_targets() -> list[str]:
    """Every run's last iteration, the settings record, the summary, comparison and verdict, the learning-curve
    plot and the report page."""
    name = CAMPAIGN.name
    last = [f"{d}/iter_{LAST:03d}/{f}" for _, _, d in run_dirs(name) for f in ["model.pt", *metrics_files()]]
    campaign_files = [f"{RESULTS}/{name}/{f}" for f in (
        "campaign.json", "summary.csv", "comparison.csv", "verdict.txt", "learning_curve.png", "report.html")]
    return last + campaign_files


# -- settings (params: exactly what changes a rule's output, so an edit reruns only what it changes) --


def settings_json(section: str, exclude=None, include=None, **overrides) -> str:
    """One config section as JSON, less the keys that change no output of the rule (``exclude``, which
    may be nested as pydantic's ``model_dump`` takes it), or only those it reads (``include``)."""
    data = getattr(CAMPAIGN, section).model_dump(mode="json", exclude=exclude, include=include)
    data.update(overrides)
    return json.dumps(data, sort_keys=True, separators=(",", ":"))


def untracked(value):
    """A params entry that Snakemake does not compare between runs: for knobs that change no output
    (cache location, tries per structure, chunk sizes). Snakemake leaves params derived from input,
    output, threads or resources out of its params rerun trigger, so this one takes ``threads``;
    tests/test_workflow.py checks that editing such a knob plans no job."""

    def param(wildcards, threads):
        return value(wildcards) if callable(value) else value

    return param


def training_json(wildcards) -> str:
    """TrainingSettings with a seed derived per campaign/seed/iteration/member (not per strategy:
    every strategy starts from the same iteration-0 model); device and threads are resources."""
    seed = derive_seed(wildcards.campaign, wildcards.seed, wildcards.get("iter", "000"), "train", member(wildcards))
    return settings_json("training", exclude={"device", "threads"}, seed=seed)


def score_json(wildcards) -> str:
    """This run's score settings (oedal.campaign.settings.CampaignSettings.score_settings) less the
    chunk size (a memory knob, passed untracked): only greedy selection reads the projected
    sensitivities; other methods skip writing them."""
    data = {k: v for k, v in CAMPAIGN.score_settings(wildcards.strategy).items() if k != "chunk_size"}
    return json.dumps(data, sort_keys=True, separators=(",", ":"))


def stop_json() -> str:
    """What the stop decision reads; ``iterations`` and ``max_train`` fix the plan, not a decision."""
    keys = {"target", "informative"} | ({"target_metric"} if CAMPAIGN.stop.target is not None else set())
    return settings_json("stop", include=keys)


def select_json(wildcards) -> str:
    i = iteration(wildcards)
    if i >= LAST:
        raise ValueError(f"iteration {i}: nothing is selected in the last iteration ({LAST}) of the plan")
    seed = derive_seed(wildcards.campaign, wildcards.strategy, wildcards.seed, wildcards.iter, "select")
    method = parse_strategy(wildcards.strategy).method
    unset = {"min_informativeness"} if CAMPAIGN.select.min_informativeness is None else set()  # (reruns nothing)
    return settings_json("select", exclude=unset, method=method, n=BATCHES[i], fraction=None, seed=seed)


def oracle_json(wildcards) -> str:
    """The level of theory: the oracle settings that change a label (not threads or attempts); a replay
    oracle without a source replays the campaign's own data set."""
    if CAMPAIGN.oracle.kind == "replay" and CAMPAIGN.oracle.source is None:
        return settings_json("oracle", exclude=set(RUNTIME_FIELDS), source=SOURCE.format(campaign=wildcards.campaign))
    return settings_json("oracle", exclude=set(RUNTIME_FIELDS))


def valid_seed(wildcards) -> int:
    return derive_seed(wildcards.campaign, wildcards.strategy, wildcards.seed, wildcards.iter, "valid")


def split_seed(wildcards) -> int:
    return derive_seed(wildcards.campaign, wildcards.seed, "split")


# -- optional inputs -----------------------------------------------------------------------------


def optional_flag(key: str, flag: str):
    """params function: ``flag {input.key}`` (shell-quoted: it reaches a shell line as it is) when that
    input exists for this job, else nothing."""

    def make(wildcards, input) -> str:
        return f"{flag} {shlex.quote(input[key])}" if key in input.keys() else ""

    return make


# -- resources (partitions and accounts live only in profiles/) --------------------------------
# resources.use_gpu: training, scoring and evaluation ask for one GPU and run with --device cuda
# (a job that finds no GPU says so in its log and runs on the CPU); else they run on the CPU.
# `device` is a string resource, not a param: switching it reruns nothing that exists.

GPU = dict(gpu=1, device="cuda") if CAMPAIGN.resources.use_gpu else dict(device="cpu")
TRAIN_RESOURCES = dict(
    mem_mb=CAMPAIGN.resources.train_mem_mb, runtime=CAMPAIGN.resources.train_runtime, **GPU
)
SCORE_RESOURCES = dict(
    mem_mb=CAMPAIGN.resources.score_mem_mb, runtime=CAMPAIGN.resources.score_runtime, **GPU
)
EVALUATE_RESOURCES = dict(mem_mb=2000, runtime=20, **GPU)
LABEL_RESOURCES = dict(mem_mb=CAMPAIGN.resources.label_mem_mb, runtime=CAMPAIGN.resources.label_runtime)
