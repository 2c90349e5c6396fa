"""Reading and writing the structure sets of an iteration (train, valid, pool, test, shards), for the steps."""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

import numpy as np


def write_set(path: str | Path, structures, **attrs) -> None:
    """Write a structure set (its folder made; ``attrs`` as file attributes), replacing what was there."""
    from oedal.data.store import write_store

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    write_store(path, structures, attrs=attrs or None, overwrite=True)


def read_set(path: str | Path):
    """A whole structure set."""
    from oedal.data.store import read_store

    return read_store(path)


def read_hashed(path: str | Path):
    """(Structures, content hashes (n,) S64) of a set (oedal.data.identity: computed from the content)."""
    from oedal.data.store import StoreReader

    with StoreReader(path) as reader:
        return reader.read(), reader.hashes


def rows_of(ids: np.ndarray, wanted: Iterable[int]) -> np.ndarray:
    """Rows of ``ids`` whose id is in ``wanted``, in file order (ids of one file: unique there)."""
    return np.flatnonzero(np.isin(ids, np.fromiter(wanted, dtype=np.int64)))
