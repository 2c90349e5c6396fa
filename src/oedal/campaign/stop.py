"""When a campaign stops (DESIGN §1, the paper's section 4): a target error reached, no informative candidate
left (I ≤ 1), or exploration converged. The decision is taken after an iteration's evaluation and selection.

Stopping early never changes the shape of the unrolled workflow: the following iterations request nothing,
train nothing (the previous model is carried over) and keep the training set, so every target path still
exists and ``snakemake -n`` shows the whole loop.
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import numpy as np

from oedal.campaign.records import ExploreCounts, Status, read_json
from oedal.errors import InputError


def stop_reason(
    status: Status, metrics: dict | None, informative: int | None, target_metric: str, target: float | None
) -> str | None:
    """Why the campaign stops after this iteration's evaluation and selection, or None to go on."""
    if status.stopped:
        return status.reason or "stopped earlier"
    if target is not None and metrics is not None:
        if target_metric not in metrics:
            raise InputError(f"stop.target_metric {target_metric!r} is not in metrics.json (keys: {sorted(metrics)})")
        value = float(metrics[target_metric])
        if value <= target:
            return f"target reached: {target_metric} = {value:.4g} ≤ {target:.4g}"
    if informative is not None and informative == 0:
        return "no informative candidate left (I ≤ 1)"
    return None


def count_informative(scores_path: str | Path) -> int | None:
    """How many pool structures are informative, I > 1 (None when the scores file has no I)."""
    import h5py

    from oedal.data import keys

    with h5py.File(scores_path, "r") as h5:
        if keys.INFORMATIVENESS not in h5:
            return None
        return int(np.count_nonzero(h5[keys.INFORMATIVENESS][()] > 1.0))


class StopDecision(NamedTuple):
    reason: str | None  # why the campaign stops after this iteration; None: go on
    n_informative: int | None  # pool structures with I > 1 (None: not asked or not scored)


def decide_stop(
    status: str | Path,
    *,
    metrics: str | Path | None = None,
    scores: str | Path | None = None,
    target_metric: str = "forces_mae_kcal/mol/A",
    target: float | None = None,
    informative: bool = True,
    explore: str | Path | None = None,
) -> StopDecision:
    """The stop decision of an iteration from its status.json, metrics.json (``target``) and scores
    file (``informative``: stop when no candidate has I > 1, section 4) and the walkers' explore.json
    (``explore``: :func:`explore_stop_reason`); see :func:`stop_reason`."""
    n_informative = count_informative(scores) if (scores and informative) else None
    reason = stop_reason(Status.read(status), read_json(metrics) if metrics else None, n_informative,
                         target_metric, target)
    if reason is None and explore is not None:
        reason = explore_stop_reason(ExploreCounts.read(explore))
    return StopDecision(reason, n_informative)


def explore_stop_reason(counts: ExploreCounts) -> str | None:
    """Exploration has converged (DP-GEN's accurate ratio), or found nothing to label while no walker
    waits for the temperature ramp (hotter walkers still to run may well find something)."""
    if counts.converged:
        return (f"exploration converged: {counts.clean} of {counts.walkers} walkers ran their full length "
                f"without a trigger ({counts.clean_share:.0%} ≥ {counts.converged_at:.0%})")
    if counts.candidates == 0 and not counts.waiting:
        return "exploration found no candidate (every walker accurate or stopped by a sanity check)"
    return None
