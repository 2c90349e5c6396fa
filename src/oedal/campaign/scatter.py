"""Scatter (DESIGN §7): the stop decision of an iteration, then the structures to label written over a fixed
number of shards (an empty shard is fine), and the request that says what was sent."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from oedal.campaign.records import Request
from oedal.campaign.stop import decide_stop
from oedal.campaign.stores import read_hashed, read_set, write_set
from oedal.errors import InputError

log = logging.getLogger(__name__)


def scatter_selection(
    selected: str | Path, pool: str | Path, shards: list[str | Path], *, n_valid: int = 0, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Write the structures to label, unlabeled, over a fixed number of contiguous (possibly empty)
    shards: the selected batch and, when ``n_valid`` > 0 (validation redraw), ``n_valid`` random pool
    structures that were not selected. Returns (selected ids, redrawn validation ids)."""
    from oedal.data.identity import pair_keys

    chosen, chosen_hashes = read_hashed(selected)
    selected_ids = np.asarray(chosen.ids, dtype=np.int64)
    pool_structures, pool_hashes = read_hashed(pool)
    rows = np.flatnonzero(np.isin(pair_keys(pool_structures.ids, pool_hashes), pair_keys(selected_ids, chosen_hashes)))
    if len(rows) != len(selected_ids):
        raise InputError(f"{selected}: {len(selected_ids) - len(rows)} selected structures are not in the pool {pool} "
                         "(same id and content)")
    rest = np.flatnonzero(~np.isin(pool_hashes, chosen_hashes))  # by content: a copy under another id is taken too
    if n_valid > len(rest):
        raise InputError(f"{pool}: {len(rest)} structures left, cannot redraw {n_valid} validation structures")
    valid_rows = np.sort(np.random.default_rng(seed).choice(rest, size=n_valid, replace=False))
    valid_ids = np.asarray(pool_structures.ids[valid_rows], dtype=np.int64)
    write_shards(pool_structures.subset(np.concatenate([rows, valid_rows])).without_labels(), shards)
    return selected_ids, valid_ids


def write_shards(structures, shards: list[str | Path]) -> None:
    """``structures`` over the shard files, contiguous and as even as can be (some may be empty)."""
    for path, part in zip(shards, np.array_split(np.arange(len(structures)), len(shards))):
        write_set(path, structures.subset(part))


def shard_selection(
    selected: str | Path,
    pool: str | Path,
    status: str | Path,
    shards: list[str | Path],
    request: str | Path,
    *,
    metrics: str | Path | None = None,
    scores: str | Path | None = None,
    n_valid: int = 0,
    seed: int = 0,
    target_metric: str = "forces_mae_kcal/mol/A",
    target: float | None = None,
    informative: bool = True,
    explore: str | Path | None = None,
) -> Request:
    """Decide whether to stop (:func:`~oedal.campaign.stop.decide_stop`), then scatter the structures to
    label over the shards (:func:`scatter_selection`; empty shards once stopped) and write the decision to
    ``request``."""
    stop = decide_stop(status, metrics=metrics, scores=scores, target_metric=target_metric, target=target,
                       informative=informative, explore=explore)
    if stop.reason is None:
        selected_ids, valid_ids = scatter_selection(selected, pool, shards, n_valid=n_valid, seed=seed)
    else:
        selected_ids = valid_ids = np.zeros(0, dtype=np.int64)
        write_shards(read_set(pool).subset(selected_ids), shards)
    decision = Request(stop.reason is not None, stop.reason, [int(i) for i in selected_ids],
                       [int(i) for i in valid_ids], stop.n_informative, len(shards))
    decision.write(request)
    log.info("shard: %d to label (%d selected, %d validation) in %d shards%s", len(selected_ids) + len(valid_ids),
             len(selected_ids), len(valid_ids), len(shards), f"; stop: {stop.reason}" if stop.reason else "")
    return decision
