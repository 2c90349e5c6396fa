"""Merge (DESIGN §1): iteration i from i−1 and its labeled batch; and, once the campaign has stopped, the
previous model carried over instead of a training."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import NamedTuple

import numpy as np

from oedal.campaign.records import Request, Status, read_json
from oedal.campaign.stores import read_hashed, read_set, rows_of, write_set
from oedal.campaign.tree import EXPLORE_COUNTS, REQUEST, STATUS
from oedal.errors import InputError
from oedal.files import atomic_path

log = logging.getLogger(__name__)


def validation_picks(n: int, share: float) -> np.ndarray:
    """Positions (in picking order) of the picks that join the validation set: every 1/share-th, rounded
    to nearest (share 0.2: picks 2, 7, 12, ...; 3 picks give 1), so the first, most informative picks train."""
    i = np.arange(n)
    return np.flatnonzero(np.floor((i + 1) * share + 0.5) > np.floor(i * share + 0.5))


class NextSets(NamedTuple):
    """Iteration i's sets, made from iteration i−1's and its labeled batch."""

    train: object  # Structures
    valid: object
    pool: object  # unlabeled
    n_labeled: int  # structures the oracle labeled (the rest of the request failed)


def next_sets(prev: Path, request: Request, *, redraw_valid: bool, valid_share: float) -> NextSets:
    """train += labeled selection (less every 1/valid_share-th pick, which joins the validation set);
    pool −= requested (by content); validation redrawn (the old one back to the pool, unlabeled, as in the
    paper) or kept."""
    from oedal.data.structures import Structures

    (train, train_hashes), (pool, pool_hashes) = read_hashed(prev / "train.h5"), read_hashed(prev / "pool.h5")
    valid = read_set(prev / "valid.h5")
    new, new_hashes = read_hashed(prev / "labeled.h5")  # the oracle's labels of everything requested, no failures
    requested_hashes = pool_hashes[rows_of(pool.ids, np.asarray(request.requested, dtype=np.int64))]
    _check_labeled(prev, new.ids, new_hashes, requested_hashes, train.ids, train_hashes)
    sel_rows = rows_of(new.ids, request.selected_ids)
    picked = np.asarray(request.selected_ids, dtype=np.int64)  # in picking order
    to_valid = picked[validation_picks(len(picked), valid_share)] if valid_share else picked[:0]
    to_valid = rows_of(new.ids, to_valid[np.isin(to_valid, new.ids)])  # (a failed label joins nothing)
    sel_rows = sel_rows[~np.isin(sel_rows, to_valid)]
    new_train = Structures.concatenate([train, new.subset(sel_rows)]) if len(sel_rows) else train
    valid = Structures.concatenate([valid, new.subset(to_valid)]) if len(to_valid) else valid
    pool_rest = pool.subset(np.flatnonzero(~np.isin(pool_hashes, requested_hashes)))  # by content
    valid_rows = rows_of(new.ids, request.valid_ids)
    if redraw_valid and not request.stop and len(valid_rows):  # (every redrawn label failed: keep the old set)
        return NextSets(new_train, new.subset(valid_rows), Structures.concatenate([pool_rest, valid.without_labels()]),
                        len(new))
    return NextSets(new_train, valid, pool_rest, len(new))


def merge_labels(prev_dir: str | Path, out_dir: str | Path, *, redraw_valid: bool = False,
                 keep_pool: bool = True, valid_share: float = 0.0) -> Status:
    """Iteration i from i−1 (:func:`next_sets`): its train.h5, valid.h5, pool.h5 (unless ``keep_pool`` is
    false: exploration, whose walkers make the next pool) and status.json."""
    prev, out = Path(prev_dir), Path(out_dir)
    state, request = Status.read(prev / STATUS), Request.read(prev / REQUEST)
    sets = next_sets(prev, request, redraw_valid=redraw_valid, valid_share=valid_share)
    write_set(out / "train.h5", sets.train)
    write_set(out / "valid.h5", sets.valid)
    if keep_pool:
        write_set(out / "pool.h5", sets.pool.without_labels())
    n_requested = len(request.requested)
    status = Status(state.iteration + 1, request.stop, request.reason, len(sets.train), len(sets.valid),
                    len(sets.pool) if keep_pool else 0, state.labels_spent + n_requested,
                    state.labels_failed + n_requested - sets.n_labeled)
    if (prev / EXPLORE_COUNTS).exists():  # the walkers that made the labeled pool: accurate / candidate / stopped
        status.more["explore"] = read_json(prev / EXPLORE_COUNTS)
    status.write(out / STATUS)
    log.info("merge → %s: train %d, valid %d, pool %d, labels spent %d%s", out, status.n_train, status.n_valid,
             status.n_pool, status.labels_spent, " (stopped)" if status.stopped else "")
    return status


def _check_labeled(prev: Path, ids, hashes, requested_hashes, train_ids, train_hashes) -> None:
    """The labeled structures are those requested from the pool, and none reuses a training id."""
    from oedal.data.identity import check_no_id_clash

    foreign = ~np.isin(hashes, requested_hashes)
    if foreign.any():
        raise InputError(f"{prev / 'labeled.h5'}: {int(foreign.sum())} structure(s) (ids "
                         f"{', '.join(str(int(i)) for i in ids[foreign][:5])}) are not among those requested from "
                         f"{prev / 'pool.h5'} (an oracle must keep the geometry it was given)")
    check_no_id_clash(train_ids, train_hashes, str(prev / "train.h5"), ids, hashes, str(prev / "labeled.h5"))


def carry_over(status: str | Path, source: str | Path | None, target: str | Path) -> bool:
    """Once the campaign has stopped (``status``: this iteration's status.json), copy the previous
    iteration's model ``source`` to ``target`` instead of training and return True; else False."""
    state = Status.read(status)
    if not state.stopped:
        return False
    reason = state.reason or "stopped earlier"
    if source is None:
        raise InputError(f"{status}: the campaign has stopped ({reason}) but no model to carry over was given")
    with atomic_path(target) as tmp:
        shutil.copyfile(source, tmp)
    log.info("campaign stopped (%s): copied %s -> %s instead of training", reason, source, target)
    return True
