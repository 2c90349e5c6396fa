"""Gather (DESIGN §7): one store from the shards of an iteration, labeled ones and failure records."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from oedal.campaign.stores import read_set, write_set
from oedal.errors import InputError


def gather_stores(parts: list[str | Path], out: str | Path, *, labeled: bool = True) -> int:
    """Concatenate the (labeled) shards into one store (returns the number of structures)."""
    from oedal.data.structures import Structures

    joined = Structures.concatenate([read_set(p) for p in parts])
    if labeled and len(joined) and not joined.has_labels:
        raise InputError(f"{out}: a labeled shard holds structures without labels")
    write_set(out, joined)
    return len(joined)


def gather_failed(parts: list[str | Path], out: str | Path) -> int:
    """Concatenate the oracle's failure records (structure store + ``reason`` and ``attempts``)."""
    import h5py

    from oedal.data import keys
    from oedal.data.store import write_store
    from oedal.data.structures import Structures

    structures, reasons, attempts = [], [], []
    for path in parts:
        structures.append(read_set(path))
        with h5py.File(path, "r") as h5:
            if keys.REASON in h5:
                reasons += [r.decode() if isinstance(r, bytes) else str(r) for r in h5[keys.REASON][()]]
            attempts += list(h5[keys.ATTEMPTS][()]) if keys.ATTEMPTS in h5 else []
    joined = Structures.concatenate(structures)
    if len(reasons) != len(joined):
        raise InputError(f"{out}: failure records without a reason in {[str(p) for p in parts]}")
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    write_store(out, joined, attrs={"content": "structures the oracle failed to label"},
                extra={keys.REASON: np.array(reasons, dtype=h5py.string_dtype()),
                       keys.ATTEMPTS: np.array(attempts or [0] * len(reasons), dtype=np.int64)})
    return len(joined)
