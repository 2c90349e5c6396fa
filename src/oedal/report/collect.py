"""The runs of a campaign folder and the iterations each has finished so far (a report can be made at
any moment: what is missing is skipped and noted, never an error).

Layout (docs/file-formats.md): ``{campaign}/{strategy}/seed{seed}/iter_{NNN}/`` with status.json and
metrics.json; iteration 0 is shared per seed under ``{campaign}/seed{seed}/iter_000``.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from oedal.errors import InputError

CAMPAIGN_FILE = "campaign.json"  # the resolved campaign settings, written by rule record_campaign
_SEED = re.compile(r"seed(\d+)$")
_ITER = re.compile(r"iter_(\d{3})$")
_TRANSFER = re.compile(r"metrics_(transfer_\w[\w.-]*)\.json$")
_MEMBER = re.compile(r"_k\d+\.json$")  # another training seed's metrics (metrics_k1.json, ...)


@dataclass(frozen=True)
class Run:
    """One strategy and seed: which iterations exist and which are finished."""

    strategy: str
    seed: int
    path: Path  # {campaign}/{strategy}/seed{seed}
    complete: int  # iterations 0 … complete−1 have status.json, metrics.json and every transfer metrics file
    started: int  # the highest iteration with a status.json (−1: none yet)
    transfer: dict[str, str] = field(default_factory=dict)  # column prefix → metrics file of every iteration
    members: int = 1  # models per iteration with test metrics (training seeds: metrics.json, metrics_k1.json, ...)

    def iter_dir(self, i: int) -> Path:
        """``{run}/iter_{i:03d}``."""
        return self.path / f"iter_{i:03d}"

    @property
    def last(self) -> int | None:
        """The last finished iteration (None: none yet)."""
        return self.complete - 1 if self.complete else None


def _iterations(run_dir: Path) -> list[int]:
    found = (_ITER.match(p.name) for p in run_dir.iterdir() if p.is_dir())
    return sorted(int(m.group(1)) for m in found if m)


def _transfer_files(iter0: Path) -> dict[str, str]:
    found = (_TRANSFER.match(p.name) for p in iter0.glob("metrics_transfer_*.json") if not _MEMBER.search(p.name))
    return {m.group(1): m.group(0) for m in found if m}


def _members(iter0: Path) -> int:
    """1 + the training seeds k = 1, 2, ... whose metrics_k{k}.json iteration 0 holds."""
    k = 1
    while (iter0 / f"metrics_k{k}.json").is_file():
        k += 1
    return k


def read_run(strategy: str, seed: int, path: Path) -> Run:
    """A run's finished iterations: contiguous from 0, each with its status, test and transfer metrics."""
    iterations = _iterations(path)
    started = max((i for i in iterations if (path / f"iter_{i:03d}" / "status.json").exists()), default=-1)
    from oedal.campaign.plan import member_metrics

    transfer = _transfer_files(path / "iter_000")
    members = _members(path / "iter_000")
    needed = ["status.json"] + [member_metrics(f, k) for k in range(members) for f in ("metrics.json", *transfer.values())]
    complete = 0
    while complete in iterations:
        d = path / f"iter_{complete:03d}"
        if not all((d / name).is_file() for name in needed):
            break
        complete += 1
    return Run(strategy, seed, path, complete, started, transfer, members)


def find_runs(root: str | Path) -> list[Run]:
    """Every ``{strategy}/seed{seed}`` folder of a campaign folder, sorted (random last)."""
    root = Path(root)
    if not root.is_dir():
        raise InputError(f"{root}: no such campaign folder (expected RESULTS_DIR/CAMPAIGN)")
    runs = []
    for strategy in sorted(p for p in root.iterdir() if p.is_dir() and not _SEED.match(p.name)):
        for seed_dir in strategy.iterdir():
            m = _SEED.match(seed_dir.name)
            if m and seed_dir.is_dir():
                runs.append(read_run(strategy.name, int(m.group(1)), seed_dir))
    return sorted(runs, key=lambda r: (r.strategy == "random", r.strategy, r.seed))


@dataclass
class CampaignResults:
    """A campaign folder as it is now: its runs, the summary rows of their finished iterations and the
    resolved campaign settings (campaign.json) when recorded."""

    root: Path
    runs: list[Run]

    @classmethod
    def read(cls, root: str | Path) -> "CampaignResults":
        """The campaign folder ``root`` (RESULTS_DIR/CAMPAIGN) as it is now."""
        return cls(Path(root), find_runs(root))

    @property
    def name(self) -> str:
        """The campaign's name (its folder's)."""
        return self.root.name

    @cached_property
    def settings(self) -> dict | None:
        """The campaign's resolved settings (``campaign.json``), None when not recorded."""
        path = self.root / CAMPAIGN_FILE
        return json.loads(path.read_text()) if path.is_file() else None

    @property
    def planned_last(self) -> int | None:
        """The planned last iteration (from campaign.json), None when unknown."""
        return None if self.settings is None else self.settings.get("last_iteration")

    @cached_property
    def rows(self) -> list[dict]:
        """Summary rows (oedal.campaign.steps.summary_rows) of every finished iteration, plus the CPU
        hours spent to reach each model (``cpu_hours``, from the benchmark files)."""
        from oedal.campaign.steps import summary_rows
        from oedal.report.cost import cpu_hours

        rows = []
        for run in self.runs:
            if run.complete:
                found = summary_rows([(run.strategy, run.seed, run.path)], run.complete - 1, run.transfer, run.members)
                hours = cpu_hours(run, self.root)
                rows += [{**row, "cpu_hours": hours[row["iteration"]]} for row in found]
        return rows

    def notes(self) -> list[str]:
        """What is not (yet) there: runs without a finished iteration, iterations in progress, the plan."""
        out = []
        if not self.runs:
            out.append(f"{self.root}: no runs yet")
        if self.settings is None:
            out.append(f"no {CAMPAIGN_FILE}: the campaign settings were not recorded (the config is not shown)")
        for run in self.runs:
            name = f"{run.strategy} seed {run.seed}"
            done = "iteration 0" if run.complete == 1 else f"iterations 0–{run.complete - 1}"
            if not run.complete:
                out.append(f"{name}: no finished iteration yet (skipped)")
            elif run.started >= run.complete:
                out.append(f"{name}: {done} finished, iteration {run.complete} in progress")
            elif self.planned_last is not None and run.complete - 1 < self.planned_last:
                out.append(f"{name}: {done} of 0–{self.planned_last} finished")
        return out


def record_campaign(config: dict, out: str | Path) -> dict:
    """Write the resolved campaign settings with their plan to ``out`` (campaign.json): ``campaign`` (every
    setting, defaults filled in), ``batches`` (the planned batch size of each selection round) and
    ``last_iteration``; so that a report or status made mid-run knows the settings and the plan."""
    from oedal.campaign.plan import plan_batches, validate_campaign
    from oedal.files import atomic_path

    settings = validate_campaign(config, str(out))
    batches = plan_batches(settings)
    record = {"campaign": settings.model_dump(mode="json"), "batches": batches, "last_iteration": len(batches)}
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out) as tmp:
        tmp.write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
    return record
