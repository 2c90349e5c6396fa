"""``oedal status``: one line per strategy and seed — where each run is, what it has spent, its last
test force MAE and whether it is still going (or why it stopped)."""

from __future__ import annotations

import math
from pathlib import Path

from oedal.campaign.records import Status, read_json
from oedal.campaign.tree import METRICS, STATUS
from oedal.errors import InputError
from oedal.report.collect import CampaignResults
from oedal.report.runs import Run

FORCE_MAE = "forces_mae_kcal/mol/A"
ENERGY_MAE = "energy_mae_kcal/mol"
COLUMNS = ("strategy", "seed", "iteration", "n_train", "labels_spent", "labels_failed", "force_mae", "energy_mae",
           "state")
HEADER = ("strategy", "seed", "iter", "n_train", "labels", "failed", "force MAE kcal/mol/Å", "energy MAE kcal/mol",
          "state")


def _status(path: Path) -> Status | None:
    """An iteration's status, None where it is missing or unreadable (a run in progress)."""
    try:
        return Status.read(path)
    except InputError:
        return None


def _stop(run: Run) -> tuple[int, str] | None:
    """(iteration, reason) of the first status.json that says the run stopped."""
    for i in range(run.started + 1):
        status = _status(run.iter_dir(i) / STATUS)
        if status is not None and status.stopped:
            return i, str(status.reason or "stopped")
    return None


def run_state(run: Run, planned_last: int | None) -> str:
    """``stopped at iteration i: reason``, ``done``, or ``in progress`` with what is unfinished."""
    stop = _stop(run)
    if stop is not None:
        return f"stopped at iteration {stop[0]}: {stop[1]}"
    if planned_last is not None and run.last == planned_last:
        return "done"
    plan = f" of 0–{planned_last}" if planned_last is not None else ""
    if run.started >= run.complete:
        return f"in progress: iteration {run.complete}{plan} not finished"
    return f"in progress: {run.complete} iteration(s){plan} finished"


def status_rows(results: CampaignResults) -> list[dict]:
    """One dict per run (keys COLUMNS): the newest status.json and the newest metrics.json (kcal/mol/Å, kcal/mol)."""
    rows = []
    for run in results.runs:
        status = _status(run.iter_dir(run.started) / STATUS) if run.started >= 0 else None
        metrics = read_json(run.iter_dir(run.last) / METRICS) if run.last is not None else {}
        rows.append({"strategy": run.strategy, "seed": run.seed, "iteration": run.started,
                     **{k: None if status is None else getattr(status, k)
                        for k in ("n_train", "labels_spent", "labels_failed")},
                     "force_mae": metrics.get(FORCE_MAE, math.nan),  # none on energy-only data (QM9)
                     "energy_mae": metrics.get(ENERGY_MAE, math.nan),
                     "state": run_state(run, results.planned_last)})
    return rows


def _cell(value: object) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return "–" if math.isnan(value) else f"{value:.3g}"
    return str(value)


def status_table(results: CampaignResults) -> str:
    """The status rows as a fixed-width text table (one screen)."""
    cells = [list(HEADER)] + [[_cell(row[k]) for k in COLUMNS] for row in status_rows(results)]
    widths = [max(len(r[j]) for r in cells) for j in range(len(HEADER))]
    lines = ["  ".join(c.ljust(w) if j in (0, len(HEADER) - 1) else c.rjust(w)
                       for j, (c, w) in enumerate(zip(r, widths))).rstrip() for r in cells]
    lines.insert(1, "-" * len(lines[0]))
    return f"campaign {results.name} ({results.root})\n" + "\n".join(lines)
