"""What the workflow's rules take from the library (DESIGN §7, §10): each rule's params — exactly the settings
that change its output, so that an edit reruns only what it changes — its seeds, flags and environments.

A rule's params hold a config section as JSON, less what its settings class declares changes no output of
that step (``RUNTIME``, and a section's fields read by another step: ``SplitSettings.MERGE``,
``StopSettings.PLAN``, ``ExploreSettings.GATHER`` / ``INITIAL_ONLY``). Snakemake compares the params of
every existing output with what a rule would give now (its ``params`` rerun trigger): so the JSON of an
unchanged campaign must stay byte for byte what it was (benchmarks/rule_params.py checks that across
releases), and an option added later is left out while unset. The .smk files keep paths, wildcards and
resources; every method here takes Snakemake's ``wildcards`` (anything with the wildcard attributes).
"""

from __future__ import annotations

import json
import shlex
from typing import Any

from oedal.campaign.plan import derive_seed, parse_strategy, plan_batches
from oedal.campaign.settings import CampaignSettings
from oedal.campaign.tree import Tree, transfer_metrics, transfer_prefix
from oedal.oed.scorers import SCORERS
from oedal.oracles.registry import ORACLES


def as_json(data: dict) -> str:
    """The params form of settings: compact JSON, keys sorted."""
    return json.dumps(data, sort_keys=True, separators=(",", ":"))


def _wildcard(wildcards: Any, name: str, default: str) -> str:
    return str(getattr(wildcards, name, None) or default)


class RuleParams:
    """The params of every rule of one campaign (``campaign``, its results tree ``tree``)."""

    def __init__(self, campaign: CampaignSettings, tree: Tree) -> None:
        self.campaign, self.tree = campaign, tree
        self.batches = plan_batches(campaign)  # batch size m of each selection round
        self.last = len(self.batches)  # the last iteration: trained and evaluated, nothing selected

    def section(self, name: str, *, exclude=None, include=None, **overrides) -> str:
        """Config section ``name`` as JSON, less its RUNTIME fields and ``exclude`` (nested as pydantic's
        ``model_dump`` takes it), or only ``include``, with ``overrides``."""
        settings = getattr(self.campaign, name)
        if include is None and not isinstance(exclude, dict):
            exclude = set(settings.RUNTIME) | set(exclude or ())
        data = settings.model_dump(mode="json", exclude=exclude, include=include)
        return as_json({**data, **overrides})

    # ---- data, split, sampling --------------------------------------------------------------------
    def split(self) -> str:
        unset = {"test_per_class"} if self.campaign.split.test_per_class is None else set()
        return self.section("split", exclude=set(self.campaign.split.MERGE) | unset)

    def split_seed(self, wildcards) -> int:
        return derive_seed(wildcards.campaign, wildcards.seed, "split")

    def sampling(self) -> str:
        """The sampling MD (dataset.source sample or explore): everything but how its potential runs."""
        potential = self.campaign.sampling.potential
        return self.section("sampling", exclude={"potential": set(potential.RUNTIME)})

    # ---- training ------------------------------------------------------------------------------------
    def model(self) -> str:
        """ModelSettings; ``species`` only when set, so that a campaign made before it existed reruns nothing."""
        return self.section("model", exclude=set() if self.campaign.model.species else {"species"})

    def training(self, wildcards) -> str:
        """TrainingSettings with a seed derived per campaign/seed/iteration/model (not per strategy: every
        strategy starts from the same iteration-0 model); device and threads are resources; ``energy_loss``
        and ``weight_stress`` only when set (TrainingSettings.unset_options)."""
        seed = derive_seed(wildcards.campaign, wildcards.seed, _wildcard(wildcards, "iter", "000"), "train",
                           model_index(_wildcard(wildcards, "k", "")))
        return self.section("training", exclude=self.campaign.training.unset_options(), seed=seed)

    # ---- scoring, selection, stopping -----------------------------------------------------------------
    def score(self, wildcards) -> str:
        """This run's score settings (CampaignSettings.score_settings) less their RUNTIME fields (chunk size,
        device: passed untracked, and as a resource): only greedy selection reads the projections."""
        kind = parse_strategy(wildcards.strategy).score
        data = self.campaign.score_settings(wildcards.strategy)
        return as_json({k: v for k, v in data.items() if k not in SCORERS[kind].Settings.RUNTIME})

    def select(self, wildcards) -> str:
        i = int(wildcards.iter)
        if i >= self.last:
            raise ValueError(f"iteration {i}: nothing is selected in the last iteration ({self.last}) of the plan")
        seed = derive_seed(wildcards.campaign, wildcards.strategy, wildcards.seed, wildcards.iter, "select")
        method = parse_strategy(wildcards.strategy).method
        unset = {"min_informativeness"} if self.campaign.select.min_informativeness is None else set()
        return self.section("select", exclude=unset, method=method, n=self.batches[i], fraction=None, seed=seed)

    def stop(self) -> str:
        """What the stop decision reads; ``target_metric`` only while a target is set."""
        stop = self.campaign.stop
        keys = set(stop.model_fields) - stop.PLAN - ({"target_metric"} if stop.target is None else set())
        return self.section("stop", include=keys)

    def valid_seed(self, wildcards) -> int:
        return derive_seed(wildcards.campaign, wildcards.strategy, wildcards.seed, wildcards.iter, "valid")

    def n_valid(self, wildcards) -> int:
        """Validation structures redrawn from the pool each iteration (0: the set is kept)."""
        return self.campaign.split.n_valid if self.campaign.redraw_valid else 0

    # ---- labeling and merging -------------------------------------------------------------------------
    def oracle(self, wildcards) -> str:
        """The level of theory: the oracle settings less RUNTIME (threads, attempts); a replay oracle without a
        source replays the campaign's own data set."""
        oracle = self.campaign.oracle
        if oracle.kind == "replay" and oracle.source is None:
            return self.section("oracle", source=Tree(self.tree.results, wildcards.campaign).source)
        return self.section("oracle")

    def merge_flags(self, keep_pool: bool = False) -> str:
        """How the labeled batch joins the sets: a redrawn validation set (the paper's protocol with a replay
        oracle), or for exploration no pool (unless ``keep_pool``: the random run on the MD pool) and a share of
        the batch to validation. One string, empty in the plain case, so that a campaign made before these
        options existed reruns nothing."""
        flags = ["--redraw-valid"] if self.campaign.redraw_valid else []
        if self.campaign.exploring and not keep_pool:
            flags.append("--no-pool")
        if self.campaign.valid_share:
            flags.append(f"--valid-share {self.campaign.valid_share}")
        return " ".join(flags)

    # ---- exploration -----------------------------------------------------------------------------------
    def explore_initial(self) -> str:
        """What the initial structures depend on (ExploreSettings.initial_fields)."""
        explore = self.campaign.explore
        return self.section("explore", include=set(explore.initial_fields()) - explore.unset_options())

    def explore_walkers(self) -> str:
        """What a walker shard reads: the explore section less the gather's and the initial structures' fields."""
        explore = self.campaign.explore
        return self.section("explore", exclude=explore.GATHER | explore.INITIAL_ONLY | explore.BASELINE
                            | explore.unset_options())

    def md_pool_explore(self) -> str:
        """What the random baseline's MD pool reads of the explore section: starts, temperatures, frames."""
        return self.section("explore", include={"starts", "temperatures", "pool_frames"})

    def md_pool_sampling(self) -> str:
        """The MD settings the pool depends on: the potential (less how it runs), time step, friction, interval and
        equilibration (temperatures, frames and seeds are the pool's own)."""
        sampling = self.campaign.sampling
        data = sampling.model_dump(mode="json", include={"timestep", "friction", "interval", "equilibration_steps"})
        return as_json({**data, "potential": sampling.potential.model_dump(
            mode="json", exclude=set(sampling.potential.RUNTIME))})

    @staticmethod
    def md_pool_seed(wildcards) -> int:
        """The MD pool's random streams: one pool per campaign, shared by its seeds (as a pool campaign's)."""
        return derive_seed(wildcards.campaign, "md_pool")

    def initial_sampling(self) -> str:
        """The MD settings the initial structures depend on: the cheap potential, time step and friction for
        explore.initial md or mixed; nothing for rattled starts (an edit of the test set's MD reruns nothing)."""
        if self.campaign.explore.initial == "rattle":
            return "{}"
        return self.section("sampling", include={"potential", "timestep", "friction"})

    @staticmethod
    def iteration(wildcards) -> int:
        """The job's iteration (a walker's candidate ids carry it)."""
        return int(wildcards.iter)

    def explore_seed(self, wildcards) -> int:
        """The walkers' random streams: one per campaign seed (not per strategy: iteration 0 is shared)."""
        return derive_seed(wildcards.campaign, wildcards.seed, "explore")

    # ---- summary and record ------------------------------------------------------------------------------
    def run_specs(self, wildcards) -> list[str]:
        """``STRATEGY:SEED:RUN_DIR`` of every run, for `oedal summary`."""
        tree = Tree(self.tree.results, wildcards.campaign)
        return [f"{s}:{seed}:{d}" for s, seed, d in tree.runs(self.campaign.strategies, self.campaign.seeds)]

    @property
    def data_dir_flag(self) -> str:
        """``--data-dir DIR`` where dataset.data_dir is set (an empty ``--data-dir {x:q}`` would be a bare flag)."""
        data_dir = self.campaign.dataset.data_dir
        return f"--data-dir {shlex.quote(data_dir)}" if data_dir else ""

    def summary_flags(self, wildcards) -> str:
        """``--metrics transfer_NAME:metrics_transfer_NAME.json`` for every transfer test set, then
        ``--potentials FILE ...`` of every reference potential on every seed's test set (none: nothing, so that
        a campaign made before reference potentials existed keeps its params), then ``--md-pool FILE`` where the
        random run picks from an MD pool."""
        flags = [f"--metrics {transfer_prefix(name)}:{transfer_metrics(name)}"
                 for name in self.campaign.dataset.transfer_sets()]
        files = self.potential_files(wildcards)
        if files:
            flags.append("--potentials " + " ".join(shlex.quote(f) for f in files))
        if self.campaign.md_pool:
            flags.append(f"--md-pool {shlex.quote(Tree(self.tree.results, wildcards.campaign).md_pool)}")
        return " ".join(flags)

    def potential_files(self, wildcards) -> list[str]:
        tree = Tree(self.tree.results, wildcards.campaign)
        return [tree.potential(seed, p.kind) for seed in self.campaign.seeds for p in self.campaign.reference_potentials]

    def reference_potential(self, wildcards) -> str:
        """Reference potential ``{potential}``'s settings, less RUNTIME (threads, attempts)."""
        settings = next(p for p in self.campaign.reference_potentials if p.kind == wildcards.potential)
        return as_json(settings.model_dump(mode="json", exclude=set(settings.RUNTIME)))

    def campaign_json(self) -> str:
        """The campaign config as set (defaults are filled in by `oedal record`): campaign.json records every
        setting, so any edit rewrites it."""
        return as_json(self.campaign.model_dump(mode="json", exclude_unset=True))


def environment(kind: str) -> str:
    """The conda environment (envs/NAME.yaml) of oracle ``kind``, as its class names it."""
    return f"{ORACLES[kind].environment}.yaml"


def potential_environment(wildcards) -> str:
    """The conda environment of reference potential ``{potential}`` (a rule's ``conda`` function)."""
    return f"../../envs/{environment(wildcards.potential)}"


def model_index(k: str) -> int:
    """The {k} wildcard of a model's file (``""``: model.pt, ``_k3``: model_k3.pt) as its index."""
    return int(k.removeprefix("_k") or 0)
