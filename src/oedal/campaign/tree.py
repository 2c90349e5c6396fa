"""The results tree (DESIGN §7): every path a campaign writes, named in one place, and its inverse for readers.

::

    RESULTS_DIR/
        labels.sqlite                                 the label cache (labeling.cache overrides it)
        CAMPAIGN/
            campaign.json summary.csv comparison.csv verdict.txt learning_curve.png report.html report_figures/
            data/          source.h5  transfer_X.h5  initial_unlabeled.h5  initial.h5  initial_failed.h5
                           md_pool.h5                     the random run's MD pool (explore.random_pool md)
            seed{S}/       test.h5  iter_000/         what every strategy of seed S shares: the split, model(s)
                           potential_K.json               reference potential K's errors on the test set
            STRATEGY/seed{S}/   test.h5  iter_{NNN}/   one run
                status.json request.json train.h5 valid.h5 pool.h5 scores.h5 selected.h5 labeled.h5 failed.h5
                model.pt model_k{k}.pt  metrics.json metrics_k{k}.json metrics_transfer_X.json
                metrics_transfer_X_k{k}.json metrics_labeled.json explore.json
                shards/ explore/ logs/ benchmarks/

The Snakefile takes its wildcard patterns from here (:class:`Tree` with ``{campaign}`` for a name); the steps,
the summary, the report and the CLI take concrete paths and read a campaign folder back through
:func:`find_runs` and :class:`RunFiles`. Nothing here imports snakemake, torch or h5py.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple, Sequence

LABEL_CACHE = "labels.sqlite"
CAMPAIGN_FILE = "campaign.json"  # the resolved campaign settings and plan (oedal record)
SUMMARY, COMPARISON, VERDICT = "summary.csv", "comparison.csv", "verdict.txt"
LEARNING_CURVE, REPORT, REPORT_FIGURES = "learning_curve.png", "report.html", "report_figures"
CAMPAIGN_OUTPUTS = (CAMPAIGN_FILE, SUMMARY, COMPARISON, VERDICT, LEARNING_CURVE, REPORT)
"""What a finished campaign has made beside its runs (the workflow's final targets)."""
STATUS, REQUEST, EXPLORE_COUNTS = "status.json", "request.json", "explore.json"
METRICS, METRICS_LABELED = "metrics.json", "metrics_labeled.json"
POTENTIAL = "potential_{kind}.json"  # a reference potential's errors on a seed's test set (oedal baseline)

_SEED = re.compile(r"seed(\d+)$")
_ITER = re.compile(r"iter_(\d{3})$")


def iter_name(i: int | str) -> str:
    """``iter_007`` (an int), or ``iter_{iter}`` for a wildcard given as text."""
    return f"iter_{i}" if isinstance(i, str) else f"iter_{i:03d}"


def model_file(k: int) -> str:
    """Model k of an iteration (a committee member or a training seed): model.pt (k = 0), model_k{k}.pt."""
    return "model.pt" if k == 0 else f"model_k{k}.pt"


def member_metrics(name: str, k: int) -> str:
    """The metrics file of model k of an iteration (k = 0: model.pt): metrics.json → metrics_k{k}.json,
    metrics_transfer_X.json → metrics_transfer_X_k{k}.json."""
    return name if k == 0 else name.removesuffix(".json") + f"_k{k}.json"


def transfer_metrics(name: str) -> str:
    """The metrics file of the transfer test set ``name`` (dataset.transfer)."""
    return f"metrics_transfer_{name}.json"


def transfer_prefix(name: str) -> str:
    """The column prefix of the transfer test set ``name`` in the summary."""
    return f"transfer_{name}"


def metrics_names(transfer: Sequence[str], members: int = 1) -> list[str]:
    """The metrics files of an iteration: the test set's, then one per transfer test set; with ``members``
    models per iteration (training seeds) the same for models k = 1 … members − 1."""
    one = [METRICS] + [transfer_metrics(name) for name in transfer]
    return one + [member_metrics(f, k) for k in range(1, members) for f in one]


@dataclass(frozen=True)
class Tree:
    """The folders and files of campaign ``campaign`` under ``results`` (a results_dir). Pass ``"{campaign}"``,
    and wildcards such as ``"{strategy}"``, to get Snakemake's patterns."""

    results: str
    campaign: str

    @classmethod
    def of(cls, results: str | Path, campaign: str) -> "Tree":
        return cls(str(results).rstrip("/") or "/", campaign)

    @property
    def root(self) -> str:
        """RESULTS_DIR/CAMPAIGN."""
        return f"{self.results}/{self.campaign}"

    @property
    def label_cache(self) -> str:
        """The default label cache, shared by every campaign of the results folder."""
        return f"{self.results}/{LABEL_CACHE}"

    def file(self, name: str) -> str:
        """A campaign-level file (CAMPAIGN_FILE, SUMMARY, ...)."""
        return f"{self.root}/{name}"

    @property
    def data(self) -> str:
        return f"{self.root}/data"

    @property
    def source(self) -> str:
        """The campaign's labeled data set (what the pool and the test set come from, and replay reads)."""
        return f"{self.data}/source.h5"

    def transfer(self, name: str) -> str:
        return f"{self.data}/transfer_{name}.h5"

    @property
    def md_pool(self) -> str:
        """An exploration campaign's MD pool, what its random run picks from (explore.random_pool md)."""
        return f"{self.data}/md_pool.h5"

    def seed(self, seed: int | str) -> str:
        """What every strategy of one seed shares (the split, the test set, iteration 0)."""
        return f"{self.root}/seed{seed}"

    def init(self, seed: int | str) -> str:
        """Iteration 0 of a seed, trained once and copied into every strategy's run."""
        return f"{self.seed(seed)}/{iter_name(0)}"

    def potential(self, seed: int | str, kind: str) -> str:
        """Reference potential ``kind``'s errors on seed ``seed``'s test set (reference_potentials)."""
        return f"{self.seed(seed)}/{POTENTIAL.format(kind=kind)}"

    def run(self, strategy: str, seed: int | str) -> str:
        return f"{self.root}/{strategy}/seed{seed}"

    def iteration(self, strategy: str, seed: int | str, i: int | str) -> str:
        return f"{self.run(strategy, seed)}/{iter_name(i)}"

    def runs(self, strategies: Sequence[str], seeds: Sequence[int]) -> list[tuple[str, int, str]]:
        """(strategy, seed, run folder) of every run, strategies outermost."""
        return [(s, seed, self.run(s, seed)) for s in strategies for seed in seeds]


def benchmark(iteration_dir: str | Path, kind: str) -> Path:
    """The Snakemake benchmark file of job ``kind`` (train, score, select, label_0, ...) of an iteration."""
    return Path(iteration_dir) / "benchmarks" / f"{kind}.tsv"


def shared_iteration(run_dir: str | Path, i: int) -> Path:
    """Where iteration ``i`` of a run was made when it is shared: iteration 0 lives in the seed's folder."""
    run_dir = Path(run_dir)
    return run_dir.parent.parent / run_dir.name / iter_name(i)


class RunDir(NamedTuple):
    """One run folder found in a campaign folder."""

    strategy: str
    seed: int
    path: Path


def iterations(run_dir: Path) -> list[int]:
    """The iteration folders a run has, sorted."""
    found = (_ITER.match(p.name) for p in run_dir.iterdir() if p.is_dir())
    return sorted(int(m.group(1)) for m in found if m)


def find_runs(root: str | Path) -> list[RunDir]:
    """Every ``STRATEGY/seed{S}`` folder of a campaign folder (not the shared ``seed{S}``), sorted by
    strategy then seed."""
    root = Path(root)
    runs = []
    for strategy in sorted(p for p in root.iterdir() if p.is_dir() and not _SEED.match(p.name)):
        for seed_dir in strategy.iterdir():
            m = _SEED.match(seed_dir.name)
            if m and seed_dir.is_dir():
                runs.append(RunDir(strategy.name, int(m.group(1)), seed_dir))
    return sorted(runs, key=lambda r: (r.strategy, r.seed))


@dataclass(frozen=True)
class RunFiles:
    """What every finished iteration of a run must hold: its status, and the metrics of every model on the
    test set and the transfer sets. Taken from the campaign's record (campaign.json) where there is one;
    a campaign folder without a record is read from what its iteration 0 holds."""

    transfer: tuple[str, ...]  # transfer test set names
    members: int  # models per iteration with test metrics (training_seeds)

    @property
    def metrics(self) -> list[str]:
        return metrics_names(self.transfer, self.members)

    @property
    def needed(self) -> list[str]:
        return [STATUS, *self.metrics]

    def extra(self) -> dict[str, str]:
        """Summary column prefix → metrics file of every transfer test set."""
        return {transfer_prefix(name): transfer_metrics(name) for name in self.transfer}

    @classmethod
    def of_campaign(cls, root: str | Path, iteration0: Path | None = None) -> "RunFiles":
        record = Path(root) / CAMPAIGN_FILE
        if record.is_file():
            settings = json.loads(record.read_text()).get("campaign", {})
            transfer = settings.get("dataset", {}).get("transfer") or []
            return cls(tuple(dict.fromkeys(map(transfer_name, transfer))), int(settings.get("training_seeds", 1)))
        return cls.found_in(iteration0) if iteration0 is not None else cls((), 1)

    @classmethod
    def found_in(cls, iteration0: Path) -> "RunFiles":
        """From the files of an iteration folder: its transfer metrics files and metrics_k1.json, ... ."""
        names = sorted(p.name for p in iteration0.glob("metrics_transfer_*.json"))
        transfer = [m.group(1) for m in map(re.compile(r"metrics_transfer_(\w[\w.-]*?)\.json$").match, names)
                    if m and not re.search(r"_k\d+\.json$", m.group(0))]
        k = 1
        while (iteration0 / member_metrics(METRICS, k)).is_file():
            k += 1
        return cls(tuple(transfer), k)


def transfer_name(source: str) -> str:
    """The name (file-name safe) of a transfer test set from its source: a named data set as it is, a file
    by its stem."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", Path(source).stem if Path(source).suffix else source)
