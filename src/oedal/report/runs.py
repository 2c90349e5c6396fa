"""The runs of a campaign folder and how far each has got (a report can be made at any moment: what is missing
is skipped and noted, never an error). Paths and names come from the results tree (oedal.campaign.tree)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from oedal.campaign.tree import STATUS, RunFiles, find_runs as find_run_dirs, iter_name, iterations
from oedal.errors import InputError


@dataclass(frozen=True)
class Run:
    """One strategy and seed: which iterations exist and which are finished."""

    strategy: str
    seed: int
    path: Path  # {campaign}/{strategy}/seed{seed}
    complete: int  # iterations 0 … complete−1 have status.json and the metrics of every model and test set
    started: int  # the highest iteration with a status.json (−1: none yet)
    transfer: dict[str, str] = field(default_factory=dict)  # column prefix → metrics file of every iteration
    members: int = 1  # models per iteration with test metrics (training seeds: metrics.json, metrics_k1.json, ...)

    def iter_dir(self, i: int) -> Path:
        """``{run}/iter_{i:03d}``."""
        return self.path / iter_name(i)

    @property
    def last(self) -> int | None:
        """The last finished iteration (None: none yet)."""
        return self.complete - 1 if self.complete else None


def read_run(strategy: str, seed: int, path: Path, files: RunFiles) -> Run:
    """A run's finished iterations: contiguous from 0, each with ``files.needed``."""
    found = iterations(path)
    started = max((i for i in found if (path / iter_name(i) / STATUS).exists()), default=-1)
    complete = 0
    while complete in found and all((path / iter_name(complete) / name).is_file() for name in files.needed):
        complete += 1
    return Run(strategy, seed, path, complete, started, files.extra(), files.members)


def find_runs(root: str | Path) -> list[Run]:
    """Every run of a campaign folder, sorted (random last). What a finished iteration holds comes from the
    campaign's record (campaign.json), or from what the first run's iteration 0 holds."""
    root = Path(root)
    if not root.is_dir():
        raise InputError(f"{root}: no such campaign folder (expected RESULTS_DIR/CAMPAIGN)")
    dirs = find_run_dirs(root)
    files = RunFiles.of_campaign(root, dirs[0].path / iter_name(0) if dirs else None)
    runs = [read_run(d.strategy, d.seed, d.path, files) for d in dirs]
    return sorted(runs, key=lambda r: (r.strategy == "random", r.strategy, r.seed))
