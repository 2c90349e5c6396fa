"""Iteration 0 (DESIGN §1): the initial training, validation, pool and test sets, disjoint, once per seed."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from oedal.campaign.records import Status
from oedal.campaign.settings import SplitSettings
from oedal.campaign.stores import read_set, write_set
from oedal.campaign.tree import STATUS
from oedal.errors import InputError, SettingsError

log = logging.getLogger(__name__)


@dataclass
class SplitResult:
    train: np.ndarray  # rows of the source, sorted
    valid: np.ndarray
    pool: np.ndarray
    test: np.ndarray


def split_indices(n: int, split: SplitSettings, seed: int, classes: np.ndarray | None = None) -> SplitResult:
    """Disjoint random rows for train, valid, test and pool (the pool takes what is left, or n_pool); with
    ``split.test_per_class`` the test set holds up to that many rows of every class in ``classes`` (n,)."""
    if split.test_per_class is not None:
        return _split_by_class(n, split, seed, classes)
    fixed = split.n_train + split.n_valid + split.n_test
    n_pool = n - fixed if split.n_pool is None else split.n_pool
    if fixed + max(n_pool, 0) > n or n_pool < 1:
        raise SettingsError(
            f"split: n_train + n_valid + n_test + n_pool = {split.n_train} + {split.n_valid} + "
            f"{split.n_test} + {split.n_pool if split.n_pool is not None else '(rest)'} needs more than the "
            f"{n} structures of the data set"
        )
    perm = np.random.default_rng(seed).permutation(n)
    cuts = np.cumsum([split.n_train, split.n_valid, split.n_test, n_pool])
    parts = [np.sort(p) for p in np.split(perm[: cuts[-1]], cuts[:-1])]
    return SplitResult(train=parts[0], valid=parts[1], test=parts[2], pool=parts[3])


def _split_by_class(n: int, split: SplitSettings, seed: int, classes: np.ndarray | None) -> SplitResult:
    """A stratified test set (the first ``test_per_class`` rows of every class in one random order), then
    train, valid and pool drawn at random from the rest."""
    if classes is None or not (np.asarray(classes) != "").any():
        raise SettingsError("split.test_per_class: the data set's structures carry no class (an importer that keeps "
                            "classes: qm9, wbe, extxyz config_type); set n_test instead")
    perm = np.random.default_rng(seed).permutation(n)
    in_order = np.asarray(classes)[perm]
    rank = np.zeros(n, dtype=np.int64)  # position of each row among the rows of its class, in perm order
    for name in np.unique(in_order):
        mask = in_order == name
        rank[mask] = np.arange(int(mask.sum()))
    is_test = (rank < split.test_per_class) & (in_order != "")
    rest = perm[~is_test]
    n_pool = len(rest) - split.n_train - split.n_valid if split.n_pool is None else split.n_pool
    if split.n_train + split.n_valid + max(n_pool, 0) > len(rest) or n_pool < 1:
        raise SettingsError(f"split: n_train + n_valid + n_pool = {split.n_train} + {split.n_valid} + "
                            f"{split.n_pool if split.n_pool is not None else '(rest)'} needs more than the {len(rest)} "
                            "structures left beside the test set")
    cuts = np.cumsum([split.n_train, split.n_valid, n_pool])
    train, valid, pool = (np.sort(p) for p in np.split(rest[: cuts[-1]], cuts[:-1]))
    return SplitResult(train=train, valid=valid, test=np.sort(perm[is_test]), pool=pool)


def split_dataset(
    source: str | Path, out_dir: str | Path, test: str | Path, split: SplitSettings, seed: int
) -> SplitResult:
    """Write ``train.h5 valid.h5 pool.h5 status.json`` into ``out_dir`` (iteration 0) and ``test``.

    The pool is written without labels; the labeled source is kept for replay and the test set."""
    from oedal.data.store import StoreReader

    with StoreReader(source) as reader:
        if not reader.has_labels:
            raise InputError(f"{source}: the data set has no labels (needed for train, valid and test)")
        result = split_indices(len(reader), split, seed, reader.class_names())
        out = Path(out_dir)
        write_set(out / "train.h5", reader.read(result.train))
        write_set(out / "valid.h5", reader.read(result.valid))
        write_set(out / "pool.h5", reader.read(result.pool).without_labels())
        write_set(test, reader.read(result.test))
    Status.initial(len(result.train), len(result.valid), len(result.pool)).write(out / STATUS)
    log.info("split %s: train %d, valid %d, pool %d, test %d (seed %d)", source, len(result.train),
             len(result.valid), len(result.pool), len(result.test), seed)
    return result


def split_explore(initial: str | Path, sampled: str | Path, out_dir: str | Path, test: str | Path,
                  split: SplitSettings, seed: int) -> None:
    """Iteration 0 of an exploration campaign: ``train.h5 valid.h5 status.json`` from the labeled
    ``initial`` structures (rattled starts), the test set from the labeled ``sampled`` MD; no pool (the
    walkers make each iteration's)."""
    rng = np.random.default_rng(seed)
    out = Path(out_dir)
    initial_set, sampled_set = read_set(initial), read_set(sampled)
    for path, s, need in ((initial, initial_set, split.n_train + split.n_valid), (sampled, sampled_set, split.n_test)):
        if not s.has_labels:
            raise InputError(f"{path}: no labels (the oracle labels the initial and test structures)")
        if len(s) < need:
            raise SettingsError(f"split: {path} holds {len(s)} structures, fewer than the {need} asked for")
    rows = rng.permutation(len(initial_set))
    train, valid = np.sort(rows[: split.n_train]), np.sort(rows[split.n_train: split.n_train + split.n_valid])
    write_set(out / "train.h5", initial_set.subset(train))
    write_set(out / "valid.h5", initial_set.subset(valid))
    write_set(test, sampled_set.subset(np.sort(rng.permutation(len(sampled_set))[: split.n_test])))
    Status.initial(len(train), len(valid), 0).write(out / STATUS)
    log.info("split (exploration): train %d, valid %d from %s; test %d from %s", len(train), len(valid), initial,
             split.n_test, sampled)
