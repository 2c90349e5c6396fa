"""What the label cache holds, one entry at a time: a level of theory, a label, its geometry, and the checks
every entry passes on its way out (DESIGN §10; STYLE: a cache is read with the suspicion of any input).

An entry is trusted only when its geometry hashes to the key it is stored under (identity recomputed
from content, :func:`oedal.data.identity.structure_hash`) and a success holds what a fresh oracle result
must hold (:func:`oedal.oracles.base.check_label`: a finite energy, finite forces of shape (n_atoms, 3) or
no forces at all: an energy-only label, as replay of a data set without forces gives; a finite stress of
nine values, or none).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from oedal.data.identity import structure_hash
from oedal.oracles.base import RUNTIME_FIELDS, OracleFailure, OracleSettingsBase, check_label


@dataclass(frozen=True)
class Level:
    """A level of theory: the oracle settings that change a label, and their hash."""

    key: str  # sha256 hex of ``settings``
    kind: str  # oracle kind
    settings: str  # JSON (sorted keys) of the settings less RUNTIME_FIELDS


def level_of(settings: OracleSettingsBase) -> Level:
    """The level of theory of oracle ``settings`` (threads and attempts do not change it)."""
    data = settings.model_dump(mode="json", exclude=set(RUNTIME_FIELDS))
    return level_from_json(json.dumps(data, sort_keys=True, separators=(",", ":")))


def level_from_json(text: str) -> Level:
    """The level of theory whose settings JSON is ``text`` (as :func:`level_of` writes it; the key is its
    sha256, so a level read back from a labeled store's attributes is the level it was labeled at)."""
    return Level(hashlib.sha256(text.encode()).hexdigest(), str(json.loads(text)["kind"]), text)


@dataclass(frozen=True)
class Label:
    """One oracle result: energy, forces and stress, or a failure with its reason."""

    ok: bool
    energy: float  # eV (NaN when failed)
    forces: np.ndarray | None  # (n_atoms, 3) eV/Å (None when failed, or an energy-only success)
    reason: str = ""
    attempts: int = 1
    created: float = 0.0  # Unix time it was stored
    stress: np.ndarray | None = None  # (3, 3) eV/Å³, ASE's sign (None when failed, or no stress label)


class Geometry(NamedTuple):
    """What a label is of (stored beside it: its identity is recomputed from it on every read)."""

    numbers: np.ndarray  # (n_atoms,)
    positions: np.ndarray  # (n_atoms, 3) Å
    cell: np.ndarray  # (3, 3) Å
    pbc: np.ndarray  # (3,) bool

    def hash(self) -> str:
        """The content hash of this geometry (the key its labels are stored under)."""
        return structure_hash(self.numbers, self.positions, self.cell, self.pbc)


class Entry(NamedTuple):
    """One row of the cache's ``labels`` table, decoded."""

    row: int
    structure: str  # the key: content hash of the geometry
    level: str  # level key
    label: Label
    geometry: Geometry
    oracle: str


ENTRY_COLUMNS = ("row, structure, level, ok, energy, forces, reason, attempts, created, numbers, positions, cell, pbc, "
                 "oracle, stress")
"""The columns :func:`decode` reads, in its order."""


def encode_pbc(pbc) -> int:
    """(3,) bool → the stored bit mask (x 1, y 2, z 4)."""
    return int(np.dot(np.asarray(pbc, dtype=int).reshape(3), [1, 2, 4]))


def floats(blob: bytes | None) -> np.ndarray | None:
    """A stored float64 blob (little-endian) as a flat array; None stays None. A blob whose length is no multiple
    of 8 bytes (cut short or overwritten) reads as NaN values, for :func:`problem` to refuse."""
    if blob is None:
        return None
    if len(blob) % 8:
        return np.full(len(blob) // 8 + 1, np.nan)
    return np.frombuffer(blob, "<f8").copy()


def decode(values: tuple) -> Entry:
    """An :class:`Entry` from a row of :data:`ENTRY_COLUMNS` (blobs little-endian; nothing checked yet)."""
    (row, structure, level, ok, energy, forces, reason, attempts, created, numbers, positions, cell, pbc, oracle,
     stress) = values
    geometry = Geometry(np.frombuffer(numbers, "<u2").astype(np.int64), np.frombuffer(positions, "<f8").reshape(-1, 3),
                        np.frombuffer(cell, "<f8").reshape(3, 3), np.array([pbc & 1, pbc & 2, pbc & 4], bool))
    if ok:  # forces and stress stay flat here: problem() judges their lengths
        label = Label(True, float(energy) if energy is not None else float("nan"), floats(forces), "", int(attempts),
                      float(created), floats(stress))
    else:
        label = Label(False, float("nan"), None, str(reason), int(attempts), float(created))
    return Entry(int(row), str(structure), str(level), label, geometry, str(oracle))


def problem(entry: Entry) -> str | None:
    """Why ``entry`` cannot be trusted, or None: a geometry that does not hash to its key (edited, or
    another structure's), or a success whose values a fresh oracle result could not have."""
    try:
        if entry.geometry.hash() != entry.structure:
            return "its stored geometry does not hash to the key it is stored under"
    except ValueError as err:  # a geometry blob of the wrong length
        return f"its stored geometry is unreadable ({err})"
    if not entry.label.ok:
        return None
    forces, stress = entry.label.forces, entry.label.stress
    try:
        check_label(entry.label.energy, None if forces is None else forces.reshape(-1, 3),  # None: energy only
                    len(entry.geometry.numbers), stress=None if stress is None else stress.reshape(-1, 3))
    except (OracleFailure, ValueError) as err:
        return f"its label is unusable ({err})"
    return None


def checked(entry: Entry) -> Label:
    """``entry``'s label with forces shaped (n_atoms, 3) and stress (3, 3); call only when :func:`problem` is None."""
    label = entry.label
    if not label.ok:
        return label
    return Label(True, label.energy, None if label.forces is None else label.forces.reshape(-1, 3), "",
                 label.attempts, label.created, None if label.stress is None else label.stress.reshape(3, 3))


def describe(entry: Entry, cache: object) -> str:
    """``CACHE: entry row R (structure abc123…, level def456…, kind of result)``: names a cache entry."""
    what = "success" if entry.label.ok else "failure"
    return f"{cache}: entry row {entry.row} ({what}, structure {entry.structure[:12]}…, level {entry.level[:12]}…)"
