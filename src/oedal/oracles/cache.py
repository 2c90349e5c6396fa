"""The label cache (DESIGN §10): every oracle result, stored once under (structure hash, level of theory).

One SQLite file (the standard library's sqlite3):

* ``labels`` — append-only (triggers refuse UPDATE and DELETE): per row the content hash of the structure
  (:mod:`oedal.data.identity`), the level of theory, ``ok``, energy (eV) and forces (eV/Å, float64), or
  the failure's reason, the attempts, the geometry (for export), the oracle's name and the time. At most
  one success per (structure, level) (a unique index); a failure may be followed by a retry's rows.
* ``levels`` — level key → oracle kind and the JSON of the settings that change a label (the oracle
  settings less :data:`~oedal.oracles.base.RUNTIME_FIELDS`); the key is the sha256 of that JSON.
* ``claims`` — scratch: who computes which structure now. A claim whose owner sends no heartbeat for
  :data:`LEASE_SECONDS`, or whose process on this host is gone, is taken over.

Every label is committed in its own transaction, so a kill at any moment (SIGKILL included) leaves a
readable file holding every finished label. Journal mode ``wal`` (default) lets readers and one writer
work at once, but needs every process on one machine; for jobs on several nodes that share a network
filesystem use ``delete`` (POSIX locks must work there: NFSv4, Lustre mounted with ``flock``) — see
docs/oracles.md.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import socket
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, NamedTuple

import numpy as np

from oedal.errors import InputError
from oedal.oracles.base import RUNTIME_FIELDS, OracleSettingsBase

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
LEASE_SECONDS = 120.0  # a claim without a heartbeat for this long is taken over (another host, hung job)
HEARTBEAT_SECONDS = 15.0  # how often a labeling process renews its claims
BUSY_TIMEOUT_SECONDS = 300.0  # how long a transaction waits for another writer
QUERY_BATCH = 500  # hashes per SELECT ... IN (...)
Journal = Literal["wal", "delete"]
JOURNALS: tuple[str, ...] = ("wal", "delete")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS levels (
    level TEXT PRIMARY KEY, kind TEXT NOT NULL, settings TEXT NOT NULL, created REAL NOT NULL);
CREATE TABLE IF NOT EXISTS labels (
    row INTEGER PRIMARY KEY AUTOINCREMENT,
    structure TEXT NOT NULL, level TEXT NOT NULL REFERENCES levels (level),
    ok INTEGER NOT NULL, energy REAL, forces BLOB, reason TEXT NOT NULL, attempts INTEGER NOT NULL,
    numbers BLOB NOT NULL, positions BLOB NOT NULL, cell BLOB NOT NULL, pbc INTEGER NOT NULL,
    oracle TEXT NOT NULL, seconds REAL NOT NULL, created REAL NOT NULL);
CREATE UNIQUE INDEX IF NOT EXISTS one_label ON labels (structure, level) WHERE ok = 1;
CREATE INDEX IF NOT EXISTS by_key ON labels (level, structure);
CREATE TRIGGER IF NOT EXISTS labels_no_update BEFORE UPDATE ON labels
    BEGIN SELECT RAISE(ABORT, 'the label cache is append-only'); END;
CREATE TRIGGER IF NOT EXISTS labels_no_delete BEFORE DELETE ON labels
    BEGIN SELECT RAISE(ABORT, 'the label cache is append-only'); END;
CREATE TABLE IF NOT EXISTS claims (
    structure TEXT NOT NULL, level TEXT NOT NULL, owner TEXT NOT NULL, host TEXT NOT NULL,
    pid INTEGER NOT NULL, heartbeat REAL NOT NULL, PRIMARY KEY (structure, level));
"""

_LABEL_COLUMNS = "structure, ok, energy, forces, reason, attempts, created"


@dataclass(frozen=True)
class Level:
    """A level of theory: the oracle settings that change a label, and their hash."""

    key: str  # sha256 hex of ``settings``
    kind: str  # oracle kind
    settings: str  # JSON (sorted keys) of the settings less RUNTIME_FIELDS


def level_of(settings: OracleSettingsBase) -> Level:
    """The level of theory of oracle ``settings`` (threads and attempts do not change it)."""
    data = settings.model_dump(mode="json", exclude=set(RUNTIME_FIELDS))
    text = json.dumps(data, sort_keys=True, separators=(",", ":"))
    return Level(hashlib.sha256(text.encode()).hexdigest(), settings.kind, text)


@dataclass(frozen=True)
class Label:
    """One oracle result: energy and forces, or a failure with its reason."""

    ok: bool
    energy: float  # eV (NaN when failed)
    forces: np.ndarray | None  # (n_atoms, 3) eV/Å (None when failed)
    reason: str = ""
    attempts: int = 1
    created: float = 0.0  # Unix time it was stored


class Geometry(NamedTuple):
    """What a label is of (stored beside it, for export)."""

    numbers: np.ndarray  # (n_atoms,)
    positions: np.ndarray  # (n_atoms, 3) Å
    cell: np.ndarray  # (3, 3) Å
    pbc: np.ndarray  # (3,) bool


class ClaimResult(NamedTuple):
    label: Label | None  # the structure is done (by someone): its result
    mine: bool  # this process holds the claim now and must compute it


def _label_of(row: tuple) -> tuple[str, Label]:
    structure, ok, energy, forces, reason, attempts, created = row
    if ok:
        return structure, Label(True, float(energy), np.frombuffer(forces, "<f8").reshape(-1, 3).copy(), "",
                                int(attempts), float(created))
    return structure, Label(False, float("nan"), None, str(reason), int(attempts), float(created))


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def connect(path: str | Path, journal: Journal | None = None) -> sqlite3.Connection:
    """An autocommit connection (transactions are explicit) with the schema in place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    con = sqlite3.connect(path, timeout=BUSY_TIMEOUT_SECONDS, isolation_level=None)
    try:
        if journal is not None:
            mode = con.execute(f"PRAGMA journal_mode={journal}").fetchone()[0]
            if mode != journal:
                log.warning("%s: journal mode stays %s (another process has it open)", path, mode)
        con.execute("PRAGMA synchronous=NORMAL")
        con.execute("BEGIN IMMEDIATE")
        for statement in filter(str.strip, _SCHEMA.split(";\n")):
            con.execute(statement)
        version = con.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()
        if version is None:
            con.execute("INSERT INTO meta VALUES ('schema', ?)", (str(SCHEMA_VERSION),))
        con.execute("COMMIT")
    except sqlite3.DatabaseError as err:
        con.close()
        raise InputError(f"{path}: not a usable label cache ({err})") from None
    if version is not None and int(version[0]) > SCHEMA_VERSION:
        con.close()
        raise InputError(f"{path}: label cache schema {version[0]} is newer than this oedal's ({SCHEMA_VERSION})")
    return con


class _Heartbeat(threading.Thread):
    """Renews this owner's claims every HEARTBEAT_SECONDS (its own connection: sqlite3 is per thread)."""

    def __init__(self, path: Path, owner: str) -> None:
        super().__init__(name="label-cache-heartbeat", daemon=True)
        self.path, self.owner, self.stop = path, owner, threading.Event()

    def run(self) -> None:
        con = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_SECONDS, isolation_level=None)
        try:
            while not self.stop.wait(HEARTBEAT_SECONDS):
                try:
                    con.execute("UPDATE claims SET heartbeat = ? WHERE owner = ?", (time.time(), self.owner))
                except sqlite3.OperationalError as err:  # busy for minutes: try again at the next beat
                    log.warning("%s: could not renew claims (%s)", self.path, err)
        finally:
            con.close()


class LabelCache:
    """The label cache at ``path`` (created when missing); a context manager. Module docstring."""

    def __init__(self, path: str | Path, *, journal: Journal | None = "wal") -> None:
        self.path = Path(path)
        self._con = connect(self.path, journal)
        self.host = socket.gethostname()
        self.owner = f"{self.host}:{os.getpid()}:{uuid.uuid4().hex[:12]}"
        self._heartbeat: _Heartbeat | None = None

    def __enter__(self) -> "LabelCache":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Release this owner's claims and close the connection."""
        if self._heartbeat is not None:
            self._heartbeat.stop.set()
            self._heartbeat.join()
            self._heartbeat = None
        try:
            self._con.execute("DELETE FROM claims WHERE owner = ?", (self.owner,))
        finally:
            self._con.close()

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """BEGIN IMMEDIATE (the write lock, waiting up to BUSY_TIMEOUT_SECONDS) ... COMMIT, or ROLLBACK."""
        self._con.execute("BEGIN IMMEDIATE")
        try:
            yield self._con
        except BaseException:
            self._con.execute("ROLLBACK")
            raise
        self._con.execute("COMMIT")

    def register(self, level: Level) -> None:
        """Record a level of theory (once)."""
        self._con.execute("INSERT OR IGNORE INTO levels VALUES (?, ?, ?, ?)",
                          (level.key, level.kind, level.settings, time.time()))

    def lookup(self, hashes: Sequence[str], level: Level, failures_since: float = 0.0) -> dict[str, Label]:
        """The stored results of ``hashes``: successes, and failures stored at or after ``failures_since``
        (the newest one; pass +inf to ignore failures)."""
        out: dict[str, Label] = {}
        unique = list(dict.fromkeys(hashes))
        for start in range(0, len(unique), QUERY_BATCH):
            part = unique[start : start + QUERY_BATCH]
            rows = self._con.execute(
                f"SELECT {_LABEL_COLUMNS} FROM labels WHERE level = ? AND structure IN ({','.join('?' * len(part))}) "
                "ORDER BY row", [level.key, *part]).fetchall()
            for structure, label in map(_label_of, rows):
                if label.ok or (label.created >= failures_since and not (structure in out and out[structure].ok)):
                    out[structure] = label
        return out

    def _stale(self, claim: tuple) -> bool:
        owner, host, pid, heartbeat = claim
        if heartbeat < time.time() - LEASE_SECONDS:
            return True
        return host == self.host and pid != os.getpid() and not _process_alive(pid)

    def claim(self, structure: str, level: Level, failures_since: float = 0.0) -> ClaimResult:
        """Take ``structure`` to compute, unless it is done (its result) or a live process holds it."""
        with self._transaction() as con:
            done = self.lookup([structure], level, failures_since).get(structure)
            if done is not None:
                return ClaimResult(done, False)
            held = con.execute("SELECT owner, host, pid, heartbeat FROM claims WHERE structure = ? AND level = ?",
                               (structure, level.key)).fetchone()
            if held is not None and held[0] != self.owner and not self._stale(held):
                return ClaimResult(None, False)
            con.execute("INSERT OR REPLACE INTO claims VALUES (?, ?, ?, ?, ?, ?)",
                        (structure, level.key, self.owner, self.host, os.getpid(), time.time()))
        if self._heartbeat is None:
            self._heartbeat = _Heartbeat(self.path, self.owner)
            self._heartbeat.start()
        return ClaimResult(None, True)

    def store(self, structure: str, level: Level, geometry: Geometry, label: Label, oracle: str,
              seconds: float) -> Label:
        """Append ``label`` and release the claim, in one transaction. Returns the stored result: a
        success already stored (by a process whose claim had lapsed) wins over this one."""
        forces = None if label.forces is None else np.ascontiguousarray(label.forces, "<f8").tobytes()
        pbc = int(np.dot(np.asarray(geometry.pbc, dtype=int).reshape(3), [1, 2, 4]))
        row = (structure, level.key, int(label.ok), label.energy if label.ok else None, forces, label.reason,
               int(label.attempts), np.ascontiguousarray(geometry.numbers, "<u2").tobytes(),
               np.ascontiguousarray(geometry.positions, "<f8").tobytes(),
               np.ascontiguousarray(geometry.cell, "<f8").tobytes(), pbc, oracle, float(seconds), time.time())
        with self._transaction() as con:
            con.execute("INSERT OR IGNORE INTO labels (structure, level, ok, energy, forces, reason, attempts, numbers, "
                        "positions, cell, pbc, oracle, seconds, created) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)", row)
            con.execute("DELETE FROM claims WHERE structure = ? AND level = ? AND owner = ?",
                        (structure, level.key, self.owner))
            stored = self.lookup([structure], level, failures_since=float("inf")).get(structure)
        return stored if stored is not None else label

    def summary(self) -> list[dict]:
        """Per level of theory: its kind and settings, structures labeled and failed (no success), the
        commonest failure reasons, and the first and last time a result was stored."""
        con = self._con
        rows = con.execute(
            "SELECT v.level, v.kind, v.settings, COALESCE(SUM(s.best), 0), COUNT(s.structure), MIN(s.first), "
            "MAX(s.last) FROM levels v LEFT JOIN (SELECT level, structure, MAX(ok) AS best, MIN(created) AS first, "
            "MAX(created) AS last FROM labels GROUP BY level, structure) s USING (level) "
            "GROUP BY v.level ORDER BY MIN(v.created)").fetchall()
        out = []
        for level, kind, settings, n_ok, n_structures, first, last in rows:
            reasons = con.execute("SELECT reason, COUNT(*) FROM labels WHERE level = ? AND ok = 0 GROUP BY reason "
                                  "ORDER BY 2 DESC LIMIT 3", (level,)).fetchall()
            out.append({"level": level, "kind": kind, "settings": json.loads(settings), "labeled": int(n_ok),
                        "failed": int(n_structures - n_ok), "failure_reasons": dict(reasons),
                        "first": first, "last": last})
        return out

    def iter_labels(self, level: str | None = None) -> Iterator[tuple[Level, str, Geometry, Label, str]]:
        """Every stored success (of one level, given by its key or a unique prefix of it, or of all):
        (level, structure hash, geometry, label, oracle)."""
        levels = {k: Level(k, kind, s) for k, kind, s in self._con.execute("SELECT level, kind, settings FROM levels")}
        if level is not None:
            matches = [k for k in levels if k.startswith(level)]
            if len(matches) != 1:
                raise InputError(f"{self.path}: {'no' if not matches else 'more than one'} level of theory {level!r} "
                                 f"(known: {', '.join(levels) or 'none'})")
            level = matches[0]
        where, args = ("AND level = ?", (level,)) if level is not None else ("", ())
        cursor = self._con.execute(
            f"SELECT level, {_LABEL_COLUMNS}, numbers, positions, cell, pbc, oracle FROM labels WHERE ok = 1 {where} "
            "ORDER BY row", args)
        while batch := cursor.fetchmany(256):
            for key, *row in batch:
                structure, label = _label_of(tuple(row[:7]))
                numbers, positions, cell, pbc, oracle = row[7:]
                geometry = Geometry(np.frombuffer(numbers, "<u2").astype(np.int64),
                                    np.frombuffer(positions, "<f8").reshape(-1, 3),
                                    np.frombuffer(cell, "<f8").reshape(3, 3), np.array([pbc & 1, pbc & 2, pbc & 4], bool))
                yield levels[key], structure, geometry, label, oracle


def export_labels(cache: str | Path, out: str | Path, level: str | None = None) -> int:
    """Write every success of the cache (or of one level key) to extxyz; each frame's header carries its
    level of theory (``level``, ``oracle_kind``, ``level_of_theory`` = the settings JSON), ``oracle``,
    ``content_hash`` and ``labeled_at`` (UTC). Returns the number of frames."""
    import ase.io
    from ase import Atoms
    from ase.calculators.singlepoint import SinglePointCalculator

    from oedal.files import atomic_path

    if not Path(cache).is_file():
        raise FileNotFoundError(f"{cache}: no such label cache")
    n = 0
    with LabelCache(cache, journal=None) as db, atomic_path(out, suffix=".tmp.extxyz") as tmp, open(tmp, "w") as fh:
        for lev, structure, geometry, label, oracle in db.iter_labels(level):
            atoms = Atoms(numbers=geometry.numbers, positions=geometry.positions, cell=geometry.cell, pbc=geometry.pbc)
            atoms.info.update(level=lev.key, oracle_kind=lev.kind, level_of_theory=lev.settings, oracle=oracle,
                              content_hash=structure,
                              labeled_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(label.created)))
            atoms.calc = SinglePointCalculator(atoms, energy=label.energy, forces=label.forces)
            ase.io.write(fh, atoms, format="extxyz")
            n += 1
    log.info("exported %d labels from %s to %s", n, cache, out)
    return n
