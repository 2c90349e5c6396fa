"""The HDF5 structure store: ragged, chunked, compressed, written atomically, read in slices.

Layout in docs/file-formats.md ("Structure store"). Per-atom arrays are concatenated; a chunk or a
slice reads only its own atom range; offsets are the cumulative sum of ``n_atoms``.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from oedal.data import keys
from oedal.data.identity import HASH_SCHEME, content_hashes
from oedal.data.structures import Structures, offsets_from_counts
from oedal.errors import InputError
from oedal.files import atomic_path

log = logging.getLogger(__name__)

ATOM_CHUNK = 32768  # rows per HDF5 chunk of a per-atom dataset
STRUCTURE_CHUNK = 16384  # rows per HDF5 chunk of a per-structure dataset
MAX_GAP_ATOMS = 4 * ATOM_CHUNK  # random reads: neighbouring requests closer than this are read as one range
MAX_RANGE_ATOMS = 1 << 21  # random reads: one contiguous range spans at most this many atoms


def _attr_value(value: Any) -> Any:
    """HDF5-storable attribute value (dicts and lists as JSON)."""
    if isinstance(value, (dict, list, tuple)):
        return json.dumps(value)
    if isinstance(value, Path):
        return str(value)
    return value


def _create(h5: h5py.File, name: str, data: np.ndarray, chunk_rows: int, compression: str | None) -> None:
    if len(data) == 0 or compression is None:
        h5.create_dataset(name, data=data)
        return
    chunks = (min(len(data), chunk_rows),) + data.shape[1:]
    opts = {"compression_opts": 1} if compression == "gzip" else {}
    # fletcher32: a checksum per chunk, so a damaged byte is an error on read, never a silently other number
    h5.create_dataset(name, data=data, chunks=chunks, compression=compression, shuffle=True, fletcher32=True, **opts)


def _write_datasets(h5: h5py.File, s: Structures, compression: str | None) -> None:
    per_atom = {keys.POSITIONS: s.positions, keys.NUMBERS: s.numbers.astype(np.uint8), keys.FORCES: s.forces}
    per_structure = {keys.N_ATOMS: s.n_atoms, keys.ENERGY: s.energy, keys.STRESS: s.stress, keys.CELL: s.cell,
                     keys.PBC: s.pbc, keys.ID: s.ids, keys.HASH: content_hashes(s),
                     keys.CLASS: None if s.classes is None else np.char.encode(s.classes.astype(str), "utf-8")}
    for name, data in per_atom.items():
        if data is not None:
            _create(h5, name, data, ATOM_CHUNK, compression)
    for name, data in per_structure.items():
        if data is not None:
            _create(h5, name, data, STRUCTURE_CHUNK, compression)


def write_store(
    path: str | Path,
    structures: Structures,
    attrs: Mapping[str, Any] | None = None,
    overwrite: bool = True,
    compression: str | None = "gzip",
    extra: Mapping[str, np.ndarray] | None = None,
) -> Path:
    """Write ``structures`` to ``path`` atomically (temporary file in the same folder, then rename).

    On any exception the temporary file is removed and an existing ``path`` is left untouched.
    ``attrs`` (e.g. ``source``) are stored as file attributes beside format, version and units;
    ``extra``: more datasets (one row per structure: failure reasons, walker records). Labels are
    written only when present (pool files hold none); the content hash of every structure
    (:func:`oedal.data.identity.content_hashes`) is computed from what is written. Returns the path.

    The file is built in memory (HDF5's core driver) and written to disk in one plain write: a disk
    that fills up (or a file size limit) is then an ordinary OSError on that write, with nothing of
    HDF5 left half-closed (a failed close of an HDF5 file on disk leaves a library state that can
    crash the process at exit).
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists; refusing to overwrite it")
    if int(structures.numbers.max(initial=0)) > 255 or int(structures.numbers.min(initial=1)) < 0:
        raise InputError(f"{path}: atomic numbers outside 0..255 cannot be stored")
    with h5py.File(f"{path}.{uuid.uuid4().hex}", "w", driver="core", backing_store=False) as h5:
        h5.attrs[keys.ATTR_FORMAT] = keys.FORMAT_NAME
        h5.attrs[keys.ATTR_FORMAT_VERSION] = keys.FORMAT_VERSION
        h5.attrs[keys.ATTR_UNITS] = keys.UNITS
        h5.attrs[keys.ATTR_N_STRUCTURES] = len(structures)
        h5.attrs[keys.ATTR_N_ATOMS_TOTAL] = structures.n_atoms_total
        for name, value in (attrs or {}).items():
            h5.attrs[name] = _attr_value(value)
        h5.attrs[keys.ATTR_HASH_SCHEME] = HASH_SCHEME
        _write_datasets(h5, structures, compression)
        for name, data in (extra or {}).items():
            h5[name] = data
        h5.flush()
        image = h5.id.get_file_image()
    with atomic_path(path) as tmp:
        tmp.write_bytes(image)
    log.debug("wrote %d structures to %s", len(structures), path)
    return path


def coalesce(offsets: np.ndarray, sorted_unique: np.ndarray) -> list[tuple[int, int]]:
    """Group sorted structure indices into ranges [first, last+1) that are cheap to read whole.

    Neighbours closer than MAX_GAP_ATOMS atoms are merged; one range spans at most MAX_RANGE_ATOMS
    atoms (unless a single structure is bigger), which bounds the memory of a random read.
    """
    if len(sorted_unique) == 0:
        return []
    starts = offsets[sorted_unique]
    ends = offsets[sorted_unique + 1]
    ranges: list[tuple[int, int]] = []
    first = 0
    for k in range(1, len(sorted_unique)):
        gap = starts[k] - ends[k - 1]
        span = ends[k] - starts[first]
        if gap > MAX_GAP_ATOMS or span > MAX_RANGE_ATOMS:
            ranges.append((int(sorted_unique[first]), int(sorted_unique[k - 1]) + 1))
            first = k
    ranges.append((int(sorted_unique[first]), int(sorted_unique[-1]) + 1))
    return ranges


class StoreReader:
    """Open a structure store for reading by slices, index sets or chunks (context manager).

    Only ``n_atoms`` and ``id`` (8 bytes per structure each) are held in memory, and the content
    hashes (64 bytes) once asked for; everything else is read on demand for the requested atom range.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if not self.path.exists():
            raise FileNotFoundError(f"{self.path}: no such structure store")
        try:
            self._h5 = h5py.File(self.path, "r")
        except OSError as err:
            raise InputError(f"{self.path}: not an HDF5 file ({err})") from None
        fmt = self._h5.attrs.get(keys.ATTR_FORMAT)
        version = int(self._h5.attrs.get(keys.ATTR_FORMAT_VERSION, -1))
        if fmt != keys.FORMAT_NAME or not 1 <= version <= keys.FORMAT_VERSION:
            self._h5.close()
            raise InputError(f"{self.path}: not an oedal structure store (format {fmt!r}, version {version})")
        try:
            self.n_atoms: np.ndarray = self._dataset(keys.N_ATOMS)[()].astype(np.int64)  # (n,)
            self.ids: np.ndarray = self._dataset(keys.ID)[()].astype(np.int64)  # (n,)
            self._check_layout()
        except (InputError, OSError, KeyError, RuntimeError, ValueError) as err:
            self._h5.close()
            raise InputError(str(err) if isinstance(err, InputError) else f"{self.path}: unreadable ({err})") from None
        self.offsets: np.ndarray = offsets_from_counts(self.n_atoms)  # (n+1,)
        self._hashes: np.ndarray | None = None

    def _dataset(self, name: str) -> h5py.Dataset:
        if name not in self._h5:
            raise InputError(f"{self.path}: not a valid structure store: the dataset {name!r} is missing")
        return self._h5[name]

    def _check_layout(self) -> None:
        """Every dataset's shape fits ``n_atoms``, and every structure has an atom: a malformed file is
        refused when it is opened, before any step reads (or an oracle labels) a row of it."""
        n, total = len(self.n_atoms), int(self.n_atoms.sum())
        shapes = {keys.POSITIONS: (total, 3), keys.NUMBERS: (total,), keys.CELL: (n, 3, 3), keys.PBC: (n, 3),
                  keys.ID: (n,), keys.N_ATOMS: (n,), keys.FORCES: (total, 3), keys.ENERGY: (n,), keys.HASH: (n,), keys.CLASS: (n,),
                  keys.STRESS: (n, 3, 3)}
        for name, shape in shapes.items():
            optional = name in (keys.FORCES, keys.ENERGY, keys.HASH, keys.CLASS, keys.STRESS)
            if optional and name not in self._h5:
                continue
            have = self._dataset(name).shape
            if have != shape:
                raise InputError(f"{self.path}: not a valid structure store: {name} has shape {have}, expected "
                                 f"{shape} ({n} structures of {total} atoms in all)")
        if (self.n_atoms < 1).any():
            k = int(np.argmax(self.n_atoms < 1))
            raise InputError(f"{self.path}: structure {k} (id {int(self.ids[k])}) has {int(self.n_atoms[k])} atoms; "
                             "every structure needs at least one")

    def __enter__(self) -> "StoreReader":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._h5.close()

    def __len__(self) -> int:
        return len(self.n_atoms)

    @property
    def has_labels(self) -> bool:
        return keys.ENERGY in self._h5

    @property
    def has_forces(self) -> bool:
        return keys.FORCES in self._h5

    @property
    def has_classes(self) -> bool:
        return keys.CLASS in self._h5

    @property
    def has_stress(self) -> bool:
        return keys.STRESS in self._h5

    def class_names(self) -> np.ndarray:
        """(n,) str: every structure's class ("" where none), without reading positions."""
        if keys.CLASS not in self._h5:
            return np.full(len(self), "", dtype=str)
        return np.char.decode(self._h5[keys.CLASS][()], "utf-8")

    @property
    def hashes(self) -> np.ndarray:
        """(n,) S64 content hashes, computed from what the file holds now, chunk by chunk (≈ 4 µs per
        ethanol): identity is never taken from the stored ``hash`` column, which an edit of the positions
        leaves stale. Where the stored column disagrees, a warning says how many."""
        if self._hashes is None:
            per_chunk = max(1, 4 * ATOM_CHUNK // max(1, int(self.n_atoms.mean()) if len(self) else 1))
            parts = [content_hashes(chunk) for chunk in self.iter_chunks(per_chunk)]
            self._hashes = np.concatenate(parts) if parts else np.zeros(0, dtype="S64")
            self._compare_stored_hashes(self._hashes)
        return self._hashes

    def _compare_stored_hashes(self, hashes: np.ndarray) -> None:
        h5 = self._h5
        if keys.HASH not in h5 or h5.attrs.get(keys.ATTR_HASH_SCHEME) != HASH_SCHEME:
            return
        stale = np.flatnonzero(h5[keys.HASH][()].astype(np.dtype("S64")) != hashes)
        if len(stale):
            log.warning("%s: %d structure(s) (first: %d, id %d) no longer match the content hash stored when the "
                        "file was written (edited since?): identity is taken from the content", self.path,
                        len(stale), int(stale[0]), int(self.ids[stale[0]]))

    @property
    def attrs(self) -> dict[str, Any]:
        return {k: (v.item() if isinstance(v, np.generic) else v) for k, v in self._h5.attrs.items()}

    def _read_range(self, start: int, stop: int) -> Structures:
        """Structures start..stop−1, reading only their atom rows. A chunk that cannot be read (a damaged
        file: a checksum or decompression error) raises InputError naming the file and the structures."""
        try:
            return self._read_rows(start, stop)
        except (OSError, RuntimeError, ValueError) as err:
            raise InputError(f"{self.path}: structures {start}..{stop - 1} cannot be read, the file is damaged "
                             f"({str(err).splitlines()[0] if str(err) else type(err).__name__}); write it again "
                             "from its source") from None

    def _read_rows(self, start: int, stop: int) -> Structures:
        a, b = int(self.offsets[start]), int(self.offsets[stop])
        h5 = self._h5
        return Structures(
            positions=h5[keys.POSITIONS][a:b],
            numbers=h5[keys.NUMBERS][a:b],
            n_atoms=self.n_atoms[start:stop],
            cell=h5[keys.CELL][start:stop],
            pbc=h5[keys.PBC][start:stop],
            ids=self.ids[start:stop],
            energy=h5[keys.ENERGY][start:stop] if keys.ENERGY in h5 else None,
            forces=h5[keys.FORCES][a:b] if keys.FORCES in h5 else None,
            classes=np.char.decode(h5[keys.CLASS][start:stop], "utf-8") if keys.CLASS in h5 else None,
            stress=h5[keys.STRESS][start:stop] if keys.STRESS in h5 else None,
        )

    def read(self, indices: np.ndarray | list[int] | slice | None = None) -> Structures:
        """Structures at a slice or at ``indices`` (returned in the order given, repeats allowed).

        Index sets are sorted, coalesced into contiguous ranges (see :func:`coalesce`), each range
        read once, and the requested structures gathered from them.
        """
        n = len(self)
        if indices is None:
            return self._read_range(0, n)
        if isinstance(indices, slice):
            start, stop, step = indices.indices(n)
            if step == 1:
                return self._read_range(start, max(start, stop))
            indices = np.arange(start, stop, step)
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        if len(idx) and (idx.min() < -n or idx.max() >= n):
            raise IndexError(f"{self.path}: structure index out of range for {n} structures")
        idx = np.where(idx < 0, idx + n, idx)
        uniq, inverse = np.unique(idx, return_inverse=True)
        parts = []
        for start, stop in coalesce(self.offsets, uniq):
            block = self._read_range(start, stop)
            wanted = uniq[(uniq >= start) & (uniq < stop)] - start
            parts.append(block if len(wanted) == stop - start else block.subset(wanted))
        gathered = Structures.concatenate(parts) if parts else self._read_range(0, 0)
        if not self.has_labels:
            gathered.energy = None
        if not self.has_forces:
            gathered.forces = None
        if not self.has_classes:
            gathered.classes = None
        if not self.has_stress:
            gathered.stress = None
        if len(uniq) == len(idx) and np.array_equal(uniq, idx):
            return gathered
        return gathered.subset(inverse)

    def iter_chunks(self, chunk_size: int) -> Iterator[Structures]:
        """Consecutive chunks of at most ``chunk_size`` structures, in store order."""
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be ≥ 1, got {chunk_size}")
        for start in range(0, len(self), chunk_size):
            yield self._read_range(start, min(start + chunk_size, len(self)))


def read_store(path: str | Path, indices: np.ndarray | list[int] | slice | None = None) -> Structures:
    """Read a whole store, or the structures at ``indices`` (see :meth:`StoreReader.read`)."""
    with StoreReader(path) as reader:
        return reader.read(indices)

