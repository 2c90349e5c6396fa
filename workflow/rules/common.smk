# What the rules share: the results tree's patterns (oedal.campaign.tree), every rule's params
# (oedal.campaign.rules.params: exactly the settings that change its output), wildcards, the previous-iteration
# input function, environments and resources. CAMPAIGN is the validated CampaignSettings (see the Snakefile).
import os
import re
import shlex
import sys
from pathlib import Path

from oedal.campaign.rules import RuleInputs, RuleParams, environment, potential_environment
from oedal.campaign.tree import (CAMPAIGN_FILE, CAMPAIGN_OUTPUTS, COMPARISON, LEARNING_CURVE, REPORT, REPORT_FIGURES,
                                 SUMMARY, VERDICT, Tree, iter_name, metrics_names)

# Jobs call the `oedal` installed beside the Python that runs Snakemake, so a virtual environment
# need not be activated; with --sdm conda the job's environment still comes first on PATH.
envvars:
    "PATH",


_search_path = os.environ["PATH"]
os.environ["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), _search_path])
# envs/*.post-deploy.sh install this checkout into each conda environment (--sdm conda).
os.environ.update(OEDAL_CHECKOUT=str(Path(workflow.basedir).resolve()))

TREE = Tree.of(CAMPAIGN.results_dir, "{campaign}")
PARAMS = RuleParams(CAMPAIGN, TREE)  # every rule's params: exactly the settings that change its output
INPUTS = RuleInputs(CAMPAIGN, TREE.results)  # every rule's input functions
RESULTS = TREE.results
LAST = PARAMS.last  # index of the last iteration (trained and evaluated, nothing selected)
SHARDS = list(range(CAMPAIGN.labeling.shards))
EXPLORE_SHARDS = list(range(CAMPAIGN.explore.shards))
LABEL_CACHE = CAMPAIGN.labeling.cache or TREE.label_cache  # shared by every campaign in RESULTS
RUN = TREE.run("{strategy}", "{seed}")
ITER = TREE.iteration("{strategy}", "{seed}", "{iter}")
SEED = TREE.seed("{seed}")  # what every strategy of a seed shares: the split, the test set
INIT = TREE.init("{seed}")  # ... and iteration 0 (trained once per seed, copied into every strategy's run)
DATA, SOURCE = TREE.data, TREE.source
TRANSFER = CAMPAIGN.dataset.transfer_sets()  # name → source of the extra test sets
# What share_initial copies from the seed's iteration 0 into each strategy's (the pool too, unless the
# walkers of each strategy make it: exploration).
_POOL = "" if CAMPAIGN.exploring else r"pool\.h5|"
SHARED_FILES = (rf"test\.h5|iter_000/(?:train\.h5|valid\.h5|{_POOL}status\.json|model(?:_k\d+)?\.pt"
                r"|metrics(?:_transfer_\w[\w.-]*)?(?:_k\d+)?\.json)")

ENV_CORE = "../../envs/core.yaml"
ENV_ORACLE = f"../../envs/{environment(CAMPAIGN.oracle.kind)}"
ENV_SAMPLE = f"../../envs/{environment(CAMPAIGN.sampling.potential.kind)}"


wildcard_constraints:
    campaign=re.escape(CAMPAIGN.name),
    strategy="|".join(re.escape(s) for s in CAMPAIGN.strategies),
    seed=r"\d+",
    iter=r"\d{3}",
    shard=r"\d+",
    k=r"(?:_k[1-9]\d*)?",  # model k of an iteration: model.pt (k = 0), model_k1.pt, ... and their metrics
    transfer="|".join(re.escape(name) for name in TRANSFER) or "(?!)",
    potential="|".join(re.escape(p.kind) for p in CAMPAIGN.reference_potentials) or "(?!)",
    testset=rf"(?:_transfer_(?:{'|'.join(map(re.escape, TRANSFER))}))?" if TRANSFER else "(?:)",  # "": the test set


# -- paths ---------------------------------------------------------------------------------------


def previous(name: str):
    """Input function: file ``name`` of iteration i−1 (the unrolled loop's only backward edge)."""

    def files(wildcards):
        return f"{INPUTS.here(wildcards, 1)}/{name}"

    return files


# The strategies whose runs make or keep their own pool (walkers; a pool campaign's split and merge): all but
# `random` on an exploration campaign's MD pool (explore.random_pool md), whose pool rules are in explore.smk.
OWN_POOL = "|".join(re.escape(s) for s in CAMPAIGN.strategies if not CAMPAIGN.picks_from_md_pool(s)) or "(?!)"

# Iteration i's sets made by the merge; no pool.h5 in an exploration campaign (its walkers make it).
MERGE_OUTPUTS = {"train": f"{ITER}/train.h5", "valid": f"{ITER}/valid.h5", "status": f"{ITER}/status.json",
                 **({} if CAMPAIGN.exploring else {"pool": f"{ITER}/pool.h5"})}


def final_targets() -> list[str]:
    """Every run's last iteration, the settings record, the summary, comparison and verdict, the learning-curve
    plot and the report page."""
    tree = Tree(RESULTS, CAMPAIGN.name)
    metrics = metrics_names(list(TRANSFER), CAMPAIGN.training_seeds)
    last = [f"{d}/{iter_name(LAST)}/{f}" for _, _, d in tree.runs(CAMPAIGN.strategies, CAMPAIGN.seeds)
            for f in ["model.pt", *metrics]]
    return last + [tree.file(f) for f in CAMPAIGN_OUTPUTS]


# -- params that change no output -----------------------------------------------------------------


def untracked(value):
    """A params entry that Snakemake does not compare between runs: for knobs that change no output
    (cache location, tries per structure, chunk sizes). Snakemake leaves params derived from input,
    output, threads or resources out of its params rerun trigger, so this one takes ``threads``;
    tests/test_workflow.py checks that editing such a knob plans no job."""

    def param(wildcards, threads):
        return value(wildcards) if callable(value) else value

    return param


def optional_flag(key: str, flag: str):
    """params function: ``flag {input.key}`` (shell-quoted: it reaches a shell line as it is) when that
    input exists for this job, else nothing."""

    def make(wildcards, input) -> str:
        return f"{flag} {shlex.quote(input[key])}" if key in input.keys() else ""

    return make


# -- resources (partitions and accounts live only in profiles/) --------------------------------
# resources.use_gpu: training, scoring, evaluation and exploration ask for one GPU and run with --device cuda
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
EXPLORE_RESOURCES = dict(mem_mb=2000, runtime=CAMPAIGN.resources.score_runtime, **GPU)
LABEL_RESOURCES = dict(mem_mb=CAMPAIGN.resources.label_mem_mb, runtime=CAMPAIGN.resources.label_runtime)
