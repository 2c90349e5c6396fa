"""The input functions of the workflow's rules: which files of the results tree (oedal.campaign.tree) a job
reads, decided per job from its wildcards and the campaign (what a strategy scores, whether the campaign
stops on a target or explores), and the flags that name them on a shell line. Every method takes Snakemake's
``wildcards`` (and, for a flag, the job's ``input``)."""

from __future__ import annotations

import shlex
from typing import Any

from oedal.campaign.plan import parse_strategy, plan_batches
from oedal.campaign.settings import CampaignSettings
from oedal.campaign.tree import (EXPLORE_COUNTS, METRICS, STATUS, Tree, iter_name, metrics_names, model_file)
from oedal.oed.scorers import SCORERS


class RuleInputs:
    """The input functions of one campaign's rules (results folder ``results``)."""

    def __init__(self, campaign: CampaignSettings, results: str) -> None:
        self.campaign, self.results = campaign, results
        self.last_iteration = len(plan_batches(campaign))  # the planned one (stop.iterations, stop.max_train)

    def tree(self, wildcards: Any) -> Tree:
        return Tree(self.results, wildcards.campaign)

    def here(self, wildcards: Any, back: int = 0) -> str:
        """The folder of the job's iteration (``back`` iterations earlier)."""
        return self.tree(wildcards).iteration(wildcards.strategy, wildcards.seed, int(wildcards.iter) - back)

    # ---- what strategies and campaigns read ----------------------------------------------------------
    def scored(self, strategy: str) -> bool:
        """Whether ``strategy`` scores its pool (random selection does not)."""
        return parse_strategy(strategy).score is not None

    def scored_models(self, strategy: str) -> int:
        """Models the score of ``strategy`` reads: a committee (campaign.committee) where its scorer is one,
        else model.pt alone."""
        kind = parse_strategy(strategy).score
        return self.campaign.committee if kind is not None and getattr(SCORERS[kind], "committee", False) else 1

    def stop_reads_scores(self, strategy: str) -> bool:
        """Whether the stop decision reads ``strategy``'s scores (I ≤ 1: stop.informative); an exploration
        campaign's walkers decide instead (a walker stopped by the model's failure offers a frame of any I)."""
        kind = parse_strategy(strategy).score
        return (self.campaign.stop.informative and not self.campaign.exploring and kind is not None
                and getattr(SCORERS[kind], "informativeness", True))

    # ---- data, training, testing -----------------------------------------------------------------------
    def transfer_source(self, wildcards) -> str:
        """The named data set or file behind a transfer test set (dataset.transfer)."""
        return self.campaign.dataset.transfer_sets()[wildcards.transfer]

    def train(self, wildcards) -> dict:
        """This iteration's sets and status, and model k of iteration i−1 (carried over once stopped)."""
        here = self.here(wildcards)
        return {"train": f"{here}/train.h5", "valid": f"{here}/valid.h5", "status": f"{here}/{STATUS}",
                "previous": f"{self.here(wildcards, 1)}/model{wildcards.k}.pt"}

    def warm_start_flag(self, wildcards) -> str:
        """``--warm-start`` with model k of iteration i−1 (campaign.warm_start), except in the planned last
        iteration with campaign.final_from_scratch."""
        if not self.campaign.warm_start or (self.campaign.final_from_scratch
                                            and int(wildcards.iter) == self.last_iteration):
            return ""
        return f"--warm-start {shlex.quote(f'{self.here(wildcards, 1)}/model{wildcards.k}.pt')}"

    def test_set(self, wildcards) -> str:
        """The test set a metrics file is of: the transfer test set {testset} names, or the run's test set (the
        seed's, for iteration 0: SEED/iter_000 has no strategy)."""
        tree = self.tree(wildcards)
        if wildcards.testset:
            return tree.transfer(wildcards.testset.removeprefix("_transfer_"))
        shared = "strategy" not in wildcards.keys()
        return f"{tree.seed(wildcards.seed) if shared else tree.run(wildcards.strategy, wildcards.seed)}/test.h5"

    # ---- scoring, selection, labeling ------------------------------------------------------------------
    def models(self, wildcards) -> list[str]:
        """The models the strategy's score reads: model.pt, and for a committee model_k1.pt ..."""
        here = self.here(wildcards)
        return [f"{here}/{model_file(k)}" for k in range(self.scored_models(wildcards.strategy))]

    @staticmethod
    def model_flags(wildcards, input) -> str:
        """``--model A --model B ...`` (the committee for qbc), each path shell-quoted."""
        return " ".join(f"--model {shlex.quote(m)}" for m in input.models)

    def select(self, wildcards) -> dict:
        """The pool and its scores; random runs read no scores (`oedal select --method random` takes the
        pool ids from pool.h5) and exclude the training set by ``--exclude train.h5`` instead."""
        here = self.here(wildcards)
        if self.scored(wildcards.strategy):
            return {"pool": f"{here}/pool.h5", "scores": f"{here}/scores.h5"}
        return {"pool": f"{here}/pool.h5", "train": f"{here}/train.h5"}

    def shard(self, wildcards) -> dict:
        """The selection and what the stop decision reads: metrics (stop.target), scores (stop.informative),
        the walkers' counts (a run with walkers: the convergence stop)."""
        here = self.here(wildcards)
        files = {"selected": f"{here}/selected.h5", "pool": f"{here}/pool.h5", "status": f"{here}/{STATUS}"}
        if self.campaign.stop.target is not None:
            files["metrics"] = f"{here}/{METRICS}"
        if self.stop_reads_scores(wildcards.strategy):
            files["scores"] = f"{here}/scores.h5"
        if self.campaign.walks(wildcards.strategy):
            files["explore"] = f"{here}/{EXPLORE_COUNTS}"
        return files

    def label(self, wildcards) -> dict:
        """The shard, and the campaign's data set where a replay oracle replays it."""
        files = {"shard": f"{self.here(wildcards)}/shards/unlabeled_{wildcards.shard}.h5"}
        if self.campaign.oracle.kind == "replay" and self.campaign.oracle.source is None:
            files["source"] = self.tree(wildcards).source
        return files

    def previous_dir(self, wildcards) -> str:
        return self.here(wildcards, 1)

    # ---- exploration -----------------------------------------------------------------------------------
    def explore(self, wildcards) -> dict:
        """This iteration's model (it carries its fitted uncertainty) and the previous iteration's walkers."""
        here = self.here(wildcards)
        files = {"model": f"{here}/model.pt", "status": f"{here}/{STATUS}"}
        if int(wildcards.iter) > 0:
            prev = self.here(wildcards, 1)
            files["previous"] = [f"{prev}/explore/walkers_{k}.json" for k in range(self.campaign.explore.shards)]
        return files

    @staticmethod
    def walker_flags(device: str):
        """Params function: ``--previous`` with every walker file of the previous iteration (iteration 0 starts
        fresh), then ``--device DEVICE`` unless it is the CPU (`oedal explore`'s default)."""

        def flags(wildcards, input) -> str:
            previous = ("--previous " + " ".join(shlex.quote(p) for p in input.previous)
                        if "previous" in input.keys() else "")
            return " ".join(f for f in (previous, "" if device == "cpu" else f"--device {shlex.quote(device)}") if f)

        return flags

    # ---- summary and report -----------------------------------------------------------------------------
    def every_iteration(self, *names: str, last: int):
        """Input function: the files ``names`` of every iteration 0 … ``last`` of every run."""

        def files(wildcards) -> list[str]:
            runs = self.tree(wildcards).runs(self.campaign.strategies, self.campaign.seeds)
            return [f"{d}/{iter_name(i)}/{name}" for _, _, d in runs for i in range(last + 1) for name in names]

        return files

    def metrics_names(self) -> list[str]:
        """The metrics files of every iteration (test set, transfer sets, every training seed's model)."""
        return metrics_names(list(self.campaign.dataset.transfer_sets()), self.campaign.training_seeds)

    def campaign_folder(self, wildcards) -> str:
        """The campaign's results folder, RESULTS/CAMPAIGN (what `oedal report` reads)."""
        return self.tree(wildcards).root
