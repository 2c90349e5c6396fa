"""The replay ("lookup") oracle: labels come from the labeled source by id, as a real oracle would
compute them. Pool files carry no labels; ids index into the source data set (DESIGN §3). A source
without forces (QM9) gives energy-only labels: forces None. A source with a stress gives it with each label
(eV/Å³; a NaN row there: no stress label)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Literal, NamedTuple

import numpy as np
from ase import Atoms
from pydantic import Field

from oedal.errors import SettingsError
from oedal.oracles.base import (ID_KEY, Oracle, OracleFailure, OracleResult, OracleSettingsBase, stress_at,
                                structure_offsets)

log = logging.getLogger(__name__)

POSITION_TOLERANCE = 1e-5
"""Å: a structure whose positions differ more from the source entry of its id is refused."""


class _Entry(NamedTuple):
    """A source's structure and its label, preloaded by id."""

    numbers: np.ndarray  # (n_atoms,)
    positions: np.ndarray  # (n_atoms, 3) Å
    energy: float  # eV
    forces: np.ndarray | None  # (n_atoms, 3) eV/Å; None: an energy-only source
    stress: np.ndarray | None  # (3, 3) eV/Å³; None: no stress label


class ReplaySettings(OracleSettingsBase):
    """Labels looked up by id in a labeled source, as a real oracle would compute them."""

    kind: Literal["replay"] = "replay"
    source: str | None = Field(
        None, description="labeled store (.h5) or named data set; the campaign fills in its data set when unset"
    )
    data_dir: str | None = Field(None, description="directory of named data sets (else OEDAL_DATA_DIR)")


class ReplayOracle(Oracle):
    name = "replay"
    kind, Settings = "replay", ReplaySettings

    def __init__(self, settings: ReplaySettings) -> None:
        if not settings.source:
            raise SettingsError("oracle.source is required for kind 'replay' (labeled store or data set name)")
        self.source = settings.source
        self.data_dir = settings.data_dir
        self._source_ids: np.ndarray | None = None
        self._cache: dict[int, _Entry] = {}
        self._in_memory = None  # Structures of a named data set

    # -- source access ---------------------------------------------------------------------------
    def _is_store(self) -> bool:
        path = Path(self.source)
        return path.suffix in (".h5", ".hdf5") and path.exists()

    def _ids_of_source(self) -> np.ndarray:
        if self._source_ids is None:
            if self._is_store():
                from oedal.data.store import StoreReader

                with StoreReader(self.source) as reader:
                    if not reader.has_labels:
                        raise SettingsError(f"oracle.source {self.source} holds no labels")
                    self._source_ids = np.asarray(reader.ids, dtype=np.int64)
            else:
                from oedal.data.datasets import load_dataset

                self._in_memory = load_dataset(self.source, data_dir=self.data_dir)
                if not self._in_memory.has_labels:
                    raise SettingsError(f"oracle.source {self.source} holds no labels")
                self._source_ids = np.asarray(self._in_memory.ids, dtype=np.int64)
        return self._source_ids

    def _rows_of(self, ids: np.ndarray) -> np.ndarray:
        """Row of each id in the source (-1 where absent); ids are usually the row numbers."""
        src = self._ids_of_source()
        rows = np.full(len(ids), -1, dtype=np.int64)
        inside = (ids >= 0) & (ids < len(src))
        direct = inside.copy()
        direct[inside] = src[ids[inside]] == ids[inside]
        rows[direct] = ids[direct]
        rest = ~direct
        if rest.any() and len(src):
            order = np.argsort(src, kind="stable")
            pos = np.searchsorted(src, ids[rest], sorter=order)
            pos = np.minimum(pos, len(src) - 1)
            found = src[order[pos]] == ids[rest]
            rows[np.flatnonzero(rest)[found]] = order[pos[found]]
        return rows

    def prepare(self, ids: np.ndarray) -> None:
        """Read the labels of all ``ids`` in one sorted pass over the source."""
        ids = np.asarray(ids, dtype=np.int64)
        rows = self._rows_of(ids)
        have = rows >= 0
        unique_rows, inverse = np.unique(rows[have], return_inverse=True)
        if len(unique_rows) == 0:
            return
        if self._in_memory is not None:
            sub = self._in_memory.subset(unique_rows)
        else:
            from oedal.data.store import StoreReader

            with StoreReader(self.source) as reader:
                sub = reader.read(unique_rows)
        offsets = structure_offsets(sub)
        for k, i in enumerate(ids[have]):
            j = inverse[k]
            a, b = offsets[j], offsets[j + 1]
            forces = None if sub.forces is None else sub.forces[a:b]  # None: an energy-only source
            self._cache[int(i)] = _Entry(sub.numbers[a:b], sub.positions[a:b], float(sub.energy[j]), forces,
                                         stress_at(sub.stress, j))
        log.debug("replay: %d labels preloaded from %s", len(self._cache), self.source)

    # -- labeling ----------------------------------------------------------------------------------
    def label(self, atoms: Atoms) -> OracleResult:
        if ID_KEY not in atoms.info:
            raise OracleFailure("replay needs the structure id (atoms.info['id'])")
        ident = int(atoms.info[ID_KEY])
        if ident not in self._cache:
            self.prepare(np.array([ident]))
        if ident not in self._cache:
            raise OracleFailure(f"id {ident} is not in the source {self.source}")
        numbers, positions, energy, forces, stress = self._cache.pop(ident)
        if len(numbers) != len(atoms) or np.any(numbers != atoms.numbers):
            raise OracleFailure(f"id {ident}: elements differ from the source {self.source}")
        deviation = float(np.max(np.abs(positions - atoms.positions))) if len(atoms) else 0.0
        if not deviation <= POSITION_TOLERANCE:  # NaN positions fail too (NaN > tol is False)
            raise OracleFailure(f"id {ident}: positions differ from the source {self.source} by {deviation:.3g} Å")
        return OracleResult(energy, None if forces is None else np.array(forces, dtype=np.float64),
                            None if stress is None else np.array(stress, dtype=np.float64))
