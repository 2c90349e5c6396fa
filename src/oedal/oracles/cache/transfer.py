"""Labels in and out of the label cache: export to extxyz, refill from labeled stores, and a full check.

A damaged cache is moved aside and a fresh one refilled from what the campaign's labeled stores already
hold (:func:`add_stores`: each labeled.h5 carries the level of theory it was labeled at), so that going on
recomputes nothing the stores hold.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import NamedTuple

from oedal.errors import InputError
from oedal.oracles.base import stress_at
from oedal.oracles.cache.entries import Entry, Geometry, Label, Level, checked, describe, level_from_json, problem
from oedal.oracles.cache.label_cache import LabelCache

log = logging.getLogger(__name__)

LEVEL_ATTR = "level"  # attributes of a labeled store written by the labeling job: the level's key ...
LEVEL_OF_THEORY_ATTR = "level_of_theory"  # ... and its settings JSON


def export_labels(cache: str | Path, out: str | Path, level: str | None = None) -> int:
    """Write every trusted success of the cache (or of one level key) to extxyz; each frame's header carries
    its level of theory (``level``, ``oracle_kind``, ``level_of_theory`` = the settings JSON), ``oracle``,
    ``content_hash`` and ``labeled_at`` (UTC); an energy-only label has no forces in its frame, a label with a
    stress has it in ASE's Voigt order (xx yy zz yz xz xy, eV/Å³). An entry that fails its checks is left out
    with a warning.
    Returns the number of frames."""
    import ase.io
    from ase import Atoms
    from ase.calculators.singlepoint import SinglePointCalculator
    from ase.stress import full_3x3_to_voigt_6_stress

    from oedal.files import atomic_path

    n = 0
    with LabelCache(cache, journal=None, create=False) as db, atomic_path(out, suffix=".tmp.extxyz") as tmp, \
            open(tmp, "w") as fh:
        levels = db.levels()
        for entry in trusted(db, db.entries(level)):
            lev, g, label = levels[entry.level], entry.geometry, checked(entry)
            atoms = Atoms(numbers=g.numbers, positions=g.positions, cell=g.cell, pbc=g.pbc)
            atoms.info.update(level=lev.key, oracle_kind=lev.kind, level_of_theory=lev.settings, oracle=entry.oracle,
                              content_hash=entry.structure,
                              labeled_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(label.created)))
            results = {"energy": label.energy}
            if label.forces is not None:  # None: an energy-only label
                results["forces"] = label.forces
            if label.stress is not None:  # None: no stress label
                results["stress"] = full_3x3_to_voigt_6_stress(label.stress)
            atoms.calc = SinglePointCalculator(atoms, **results)
            ase.io.write(fh, atoms, format="extxyz")
            n += 1
    log.info("exported %d labels from %s to %s", n, cache, out)
    return n


def trusted(db: LabelCache, entries: Iterable[Entry]) -> Iterator[Entry]:
    """The entries that pass their checks; the others are named in a warning and skipped."""
    for entry in entries:
        why = problem(entry)
        if why is None:
            yield entry
        else:
            log.warning("%s: %s; skipped", describe(entry, db.path), why)


class Problem(NamedTuple):
    entry: Entry
    why: str


def check_cache(cache: str | Path, *, quarantine: bool = False) -> tuple[int, list[Problem]]:
    """Check every entry of the cache as a lookup would: (entries checked, the ones that fail). With
    ``quarantine``, move those to the quarantine (their structures are computed again when next asked)."""
    with LabelCache(cache, journal=None, create=False) as db:
        n, bad = 0, []
        for entry in db.entries(successes_only=False):
            n += 1
            why = problem(entry)
            if why is not None:
                bad.append(Problem(entry, why))
        if quarantine:
            for p in bad:
                db.quarantine([p.entry.row], f"oedal cache check: {p.why}")
    return n, bad


class Added(NamedTuple):
    stores: int
    labels: int  # new in the cache
    known: int  # already there


def add_stores(cache: str | Path, paths: Iterable[str | Path]) -> Added:
    """Store the labels of labeled stores in ``cache`` (created when missing) under the level of theory
    each store was labeled at (its ``level_of_theory`` attribute) and the content hash of each structure.
    A folder stands for every store under it that ``oedal label`` wrote (one with a level of theory); a
    store named by itself without one (an imported data set) is refused. A store without forces gives
    energy-only labels; a store's stress row goes with its label (a NaN row: none). A structure the cache already
    holds a success of is left as it is."""
    from oedal.data.store import StoreReader

    files = _labeled_files(paths)
    added = known = 0
    with LabelCache(cache) as db:
        for path in files:
            with StoreReader(path) as reader:
                level = _level_of_store(reader)
                db.register(level)
                hashes = [h.decode() for h in reader.hashes]
                have = db.lookup(hashes, level, failures_since=float("inf"))
                for start in range(0, len(reader), 256):
                    chunk = reader.read(slice(start, start + 256))
                    for k, atoms in enumerate(chunk.to_atoms()):
                        h = hashes[start + k]
                        if h in have:
                            known += 1
                            continue
                        forces = None if chunk.forces is None else chunk.forces[chunk.offsets[k]:chunk.offsets[k + 1]]
                        label = Label(True, float(chunk.energy[k]), forces, stress=stress_at(chunk.stress, k))
                        geometry = Geometry(atoms.numbers, atoms.positions, atoms.cell.array, atoms.pbc)
                        have[h] = db.store(h, level, geometry, label, f"store:{path}", 0.0)
                        added += 1
    log.info("%s: %d labels added from %d stores (%d already there)", cache, added, len(files), known)
    return Added(len(files), added, known)


def _has_level(path: Path) -> bool:
    import h5py

    try:
        with h5py.File(path, "r") as f:
            return LEVEL_OF_THEORY_ATTR in f.attrs and "energy" in f
    except OSError:
        return False


def _labeled_files(paths: Iterable[str | Path]) -> list[Path]:
    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            files += sorted(f for f in p.rglob("*.h5") if f.is_file() and _has_level(f))
        elif p.is_file():
            files.append(p)
        else:
            raise FileNotFoundError(f"{p}: no such store or folder")
    return files


def _level_of_store(reader) -> Level:
    text = reader.attrs.get(LEVEL_OF_THEORY_ATTR)
    if not text or not reader.has_labels:
        raise InputError(f"{reader.path}: not a labeled store written by oedal label (no level of theory in its "
                         "attributes, or no energies): its labels cannot key the cache")
    level = level_from_json(str(text))
    stored = reader.attrs.get(LEVEL_ATTR)
    if stored is not None and str(stored) != level.key:
        raise InputError(f"{reader.path}: its level key {str(stored)[:12]}… does not match its level of theory")
    return level
