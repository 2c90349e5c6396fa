"""Structure identity by content (DESIGN §10): a hash of what a structure is, not of where it came from.

An id is the row of a structure in the file it was imported from, so two files share ids. The content
hash — sha256 of the atomic numbers, positions, cell and periodic directions — names a structure
wherever it goes: "already in the training set", "already selected" and the label cache ask by hash.

Positions and cell enter rounded to float32 (−0 made +0): that is idempotent, so a geometry written
in float32 and read back, or any float64 round trip, hashes the same; two structures hash the same
when no coordinate differs by more than float32's resolution (≤ 1e-6 Å below 16 Å, 6e-5 Å at 1000 Å),
far below any physical difference (MD frames 0.5 fs apart differ by ~1e-3 Å). A geometry re-read from
text with fewer digits may land on the other side of a rounding step: it is then a new structure
(a cache miss, never a wrong label).
"""

from __future__ import annotations

import hashlib

import numpy as np

from oedal.data.structures import Structures
from oedal.errors import InputError

HASH_SCHEME = "sha256(n u4, Z u2, R f4, cell f4, pbc u1) v1"
"""Stored beside the hashes (attribute ``hash_scheme``); a store with another scheme is rehashed on read."""

HASH_DTYPE = "S64"  # hex digest, ASCII


def _canonical(values: np.ndarray) -> np.ndarray:
    """Little-endian float32 with −0 turned into +0 (−0 + 0 = +0 in IEEE arithmetic)."""
    return np.ascontiguousarray(values, dtype="<f4") + np.float32(0.0)


def content_hashes(s: Structures) -> np.ndarray:
    """(n,) S64: the hex sha256 of each structure's numbers, positions, cell and pbc (module docstring)."""
    numbers = memoryview(np.ascontiguousarray(s.numbers, dtype="<u2").tobytes())
    positions = memoryview(_canonical(s.positions).tobytes())
    cells = _canonical(s.cell.reshape(-1, 9))
    pbc = np.ascontiguousarray(s.pbc, dtype="u1").reshape(-1, 3)
    offsets = s.offsets
    out = np.empty(len(s), dtype=HASH_DTYPE)
    for k in range(len(s)):
        a, b = int(offsets[k]), int(offsets[k + 1])
        digest = hashlib.sha256(np.uint32(b - a).astype("<u4").tobytes())
        digest.update(numbers[2 * a : 2 * b])
        digest.update(positions[12 * a : 12 * b])
        digest.update(cells[k].tobytes())
        digest.update(pbc[k].tobytes())
        out[k] = digest.hexdigest().encode()
    return out


def structure_hash(numbers: np.ndarray, positions: np.ndarray, cell: np.ndarray, pbc: np.ndarray) -> str:
    """The content hash of one structure (numbers (n,), positions (n, 3) Å, cell (3, 3) Å, pbc (3,)), as
    :func:`content_hashes` gives it, as text."""
    one = Structures(positions=np.asarray(positions, dtype=np.float64).reshape(-1, 3),
                     numbers=np.asarray(numbers, dtype=np.int64), n_atoms=np.array([len(numbers)]),
                     cell=np.asarray(cell, dtype=np.float64).reshape(1, 3, 3),
                     pbc=np.asarray(pbc, dtype=bool).reshape(1, 3), ids=np.zeros(1, np.int64))
    return hash_text(content_hashes(one)[0])


def hash_text(h: bytes | np.bytes_) -> str:
    """A stored hash as text (for messages and the label cache)."""
    return bytes(h).decode()


def id_clashes(ids_a: np.ndarray, hashes_a: np.ndarray, ids_b: np.ndarray, hashes_b: np.ndarray) -> np.ndarray:
    """Ids that both sets use for structures whose contents differ (sorted, unique)."""
    common, ia, ib = np.intersect1d(np.asarray(ids_a), np.asarray(ids_b), return_indices=True)
    return common[np.asarray(hashes_a)[ia] != np.asarray(hashes_b)[ib]]


def check_no_id_clash(ids_a, hashes_a, name_a, ids_b, hashes_b, name_b) -> None:
    """Raise :class:`InputError` naming both files when an id names different structures in them."""
    clash = id_clashes(ids_a, hashes_a, ids_b, hashes_b)
    if len(clash):
        shown = ", ".join(str(int(i)) for i in clash[:5]) + (" ..." if len(clash) > 5 else "")
        raise InputError(
            f"{name_a} and {name_b}: {len(clash)} id(s) ({shown}) name different structures in the two files "
            "(ids are row numbers of each imported file); import both from one file, or give one of them "
            "other ids"
        )


def duplicate_ids(ids: np.ndarray) -> np.ndarray:
    """Ids that occur more than once (sorted)."""
    values, counts = np.unique(np.asarray(ids), return_counts=True)
    return values[counts > 1]


def pair_keys(ids: np.ndarray, hashes: np.ndarray) -> np.ndarray:
    """(n,) bytes ``hash:id``: one key per (content, id) pair, for exact matching of rows between files."""
    return np.char.add(np.char.add(np.asarray(hashes, dtype=HASH_DTYPE), b":"),
                       np.asarray(ids, dtype=np.int64).astype("S20"))
