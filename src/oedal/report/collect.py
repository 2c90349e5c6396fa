"""A campaign folder as it is now (CampaignResults): its runs, their summary rows and the recorded settings;
and the record itself (``oedal record``: campaign.json)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from oedal.campaign.tree import CAMPAIGN_FILE, POTENTIAL
from oedal.report.runs import Run, find_runs


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
        """Summary rows (oedal.campaign.summary.summary_rows) of every finished iteration, plus the CPU
        hours spent to reach each model (``cpu_hours``, from the benchmark files)."""
        from oedal.campaign.summary import summary_rows
        from oedal.report.cost import cpu_hours

        rows = []
        for run in self.runs:
            if run.complete:
                found = summary_rows([(run.strategy, run.seed, run.path)], run.complete - 1, run.transfer, run.members)
                hours = cpu_hours(run, self.root)
                rows += [{**row, "cpu_hours": hours[row["iteration"]]} for row in found]
        return rows

    @cached_property
    def potentials(self) -> dict[str, dict]:
        """Reference potential name → its numeric figures on the test sets, mean over the seeds that have them
        (``seed{S}/potential_*.json``, made by `oedal baseline`)."""
        import numpy as np

        from oedal.campaign.summary import read_potentials

        found = read_potentials(sorted(self.root.glob(f"seed*/{POTENTIAL.format(kind='*')}")))
        return {name: {k: float(np.mean([f[k] for f in runs])) for k in runs[0]
                       if isinstance(runs[0][k], (int, float)) and not isinstance(runs[0][k], bool)
                       and all(k in f for f in runs)} for name, runs in found.items()}

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
