"""The label cache (DESIGN §10): every oracle result, stored once under (structure hash, level of theory).

One SQLite file (tables in :mod:`~oedal.oracles.cache.schema`). Every label is committed in its own
transaction, so a kill at any moment (SIGKILL included) leaves a readable file holding every finished
label. Journal mode ``wal`` (default) lets readers and one writer work at once, but needs every process
on one machine; for jobs on several nodes that share a network filesystem use ``delete`` (POSIX locks
must work there: NFSv4, Lustre mounted with ``flock``) — see docs/oracles.md.

Nothing read from it is trusted blindly: every entry a lookup finds is checked as a fresh result would be
(:func:`~oedal.oracles.cache.entries.problem`: its geometry must hash to its key, a success must hold a
finite energy and finite forces of the right shape, or no forces: an energy-only label, and a finite stress of
nine values, or none). An entry that fails is moved to the quarantine (kept, never used) with a warning that
names it, and its structure is computed again. ``oedal cache quarantine`` moves an entry aside by hand (a label
known to be wrong).
"""

from __future__ import annotations

import logging
import os
import socket
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import NamedTuple

import numpy as np

from oedal.errors import InputError
from oedal.oracles.base import check_label
from oedal.oracles.cache.entries import (ENTRY_COLUMNS, Entry, Geometry, Label, Level, checked, decode, describe,
                                         encode_pbc, problem)
from oedal.oracles.cache.schema import BUSY_TIMEOUT_SECONDS, ROW_NAMES, Journal, connect, one_line

log = logging.getLogger(__name__)

LEASE_SECONDS = 120.0  # a claim without a heartbeat for this long is taken over (another host, hung job)
HEARTBEAT_SECONDS = 15.0  # how often a labeling process renews its claims
QUERY_BATCH = 500  # hashes per SELECT ... IN (...)


class ClaimResult(NamedTuple):
    label: Label | None  # the structure is done (by someone): its result
    mine: bool  # this process holds the claim now and must compute it


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


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
                except sqlite3.DatabaseError as err:  # busy for minutes, a full disk: try again at the next beat
                    log.warning("%s: could not renew claims (%s)", self.path, err)
        finally:
            con.close()


class LabelCache:
    """The label cache at ``path`` (created when missing, unless ``create`` is false); a context manager.
    Any SQLite error becomes a one-line :class:`~oedal.errors.InputError` (a damaged file) or
    :class:`~oedal.errors.OutputError` (a full disk) naming the file."""

    def __init__(self, path: str | Path, *, journal: Journal | None = "wal", create: bool = True) -> None:
        self.path = Path(path)
        self._con = connect(self.path, journal, create=create)
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
        except sqlite3.DatabaseError as err:  # claims are scratch: a stale one lapses after LEASE_SECONDS
            log.warning("%s: could not release this job's claims (%s)", self.path, err)
        finally:
            self._con.close()

    @contextmanager
    def _guard(self) -> Iterator[None]:
        """SQLite errors as oedal's one-line errors naming the cache."""
        try:
            yield
        except sqlite3.DatabaseError as err:
            raise one_line(err, self.path) from None

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """BEGIN IMMEDIATE (the write lock, waiting up to BUSY_TIMEOUT_SECONDS) ... COMMIT, or ROLLBACK;
        inside a transaction already, just that one."""
        if self._con.in_transaction:
            yield self._con
            return
        with self._guard():
            self._con.execute("BEGIN IMMEDIATE")
            try:
                yield self._con
            except BaseException:
                self._con.execute("ROLLBACK")
                raise
            self._con.execute("COMMIT")

    def register(self, level: Level) -> None:
        """Record a level of theory (once)."""
        with self._guard():
            self._con.execute("INSERT OR IGNORE INTO levels VALUES (?, ?, ?, ?)",
                              (level.key, level.kind, level.settings, time.time()))

    def levels(self) -> dict[str, Level]:
        """Every level of theory the cache knows, by key."""
        with self._guard():
            rows = self._con.execute("SELECT level, kind, settings FROM levels").fetchall()
        return {key: Level(key, kind, settings) for key, kind, settings in rows}

    def _rows(self, level: Level, part: Sequence[str]) -> list[Entry]:
        with self._guard():
            rows = self._con.execute(
                f"SELECT {ENTRY_COLUMNS} FROM labels WHERE level = ? AND structure IN ({','.join('?' * len(part))}) "
                "ORDER BY row", [level.key, *part]).fetchall()
        return [decode(row) for row in rows]

    def lookup(self, hashes: Sequence[str], level: Level, failures_since: float = 0.0) -> dict[str, Label]:
        """The stored results of ``hashes``: successes, and failures stored at or after ``failures_since``
        (the newest one; pass +inf to ignore failures). Entries that fail their checks are quarantined
        (with a warning naming them) and left out: their structures count as not computed."""
        out: dict[str, Label] = {}
        unique = list(dict.fromkeys(hashes))
        for start in range(0, len(unique), QUERY_BATCH):
            bad: list[tuple[Entry, str]] = []
            for entry in self._rows(level, unique[start : start + QUERY_BATCH]):
                why = problem(entry)
                if why is not None:
                    bad.append((entry, why))
                    continue
                label, known = checked(entry), out.get(entry.structure)
                if label.ok or (label.created >= failures_since and not (known is not None and known.ok)):
                    out[entry.structure] = label
            for entry, why in bad:
                log.warning("%s: %s; moved to the quarantine and not used (its structure is computed again)",
                            describe(entry, self.path), why)
            self.quarantine([entry.row for entry, _ in bad], "failed its check on the way out: " +
                            "; ".join(sorted({why for _, why in bad})))
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
        success already stored (by a process whose claim had lapsed) wins over this one. A geometry
        that does not hash to ``structure``, or a success that is no label (:func:`check_label`), is a
        ValueError: nothing is stored that a later read would refuse."""
        if geometry.hash() != structure:
            raise ValueError(f"{self.path}: the geometry of structure {structure[:12]}… hashes to another key")
        if label.ok:
            check_label(label.energy, label.forces, len(geometry.numbers), stress=label.stress)
        forces = None if label.forces is None else np.ascontiguousarray(label.forces, "<f8").tobytes()
        stress = None if label.stress is None else np.ascontiguousarray(label.stress, "<f8").tobytes()
        row = (structure, level.key, int(label.ok), label.energy if label.ok else None, forces, label.reason,
               int(label.attempts), np.ascontiguousarray(geometry.numbers, "<u2").tobytes(),
               np.ascontiguousarray(geometry.positions, "<f8").tobytes(),
               np.ascontiguousarray(geometry.cell, "<f8").tobytes(), encode_pbc(geometry.pbc), oracle, float(seconds),
               time.time(), stress)  # in ROW_NAMES' order
        with self._transaction() as con:
            con.execute(f"INSERT OR IGNORE INTO labels ({ROW_NAMES}) VALUES ({','.join('?' * len(row))})", row)
            con.execute("DELETE FROM claims WHERE structure = ? AND level = ? AND owner = ?",
                        (structure, level.key, self.owner))
            stored = self.lookup([structure], level, failures_since=float("inf")).get(structure)
        return stored if stored is not None else label

    def quarantine(self, rows: Iterable[int], why: str) -> int:
        """Move the entries ``rows`` (of the labels table) to the quarantine with ``why``: they are kept there,
        never used again, and their structures count as not computed. Returns how many moved."""
        rows = sorted(set(int(r) for r in rows))
        if not rows:
            return 0
        with self._transaction() as con:
            marks = ",".join("?" * len(rows))
            moved = con.execute(f"INSERT INTO quarantine (row, {ROW_NAMES}, why, quarantined) SELECT row, {ROW_NAMES}, "
                                f"?, ? FROM labels WHERE row IN ({marks})", [why, time.time(), *rows]).rowcount
            con.execute(f"DELETE FROM labels WHERE row IN ({marks})", rows)
        return moved

    def entries(self, level: str | None = None, *, successes_only: bool = True) -> Iterator[Entry]:
        """Every stored entry (successes only, unless told), of one level (its key or a unique prefix of it,
        as `oedal cache info` shows) or of all, in the order stored; nothing checked yet."""
        where, args = [], []
        if successes_only:
            where.append("ok = 1")
        if level is not None:
            where.append("level = ?")
            args.append(self.level_key(level))
        sql = f"SELECT {ENTRY_COLUMNS} FROM labels {'WHERE ' + ' AND '.join(where) if where else ''} ORDER BY row"
        with self._guard():
            cursor = self._con.execute(sql, args)
            while batch := cursor.fetchmany(256):
                yield from map(decode, batch)

    def level_key(self, prefix: str) -> str:
        """The one level key that starts with ``prefix`` (InputError naming the known ones otherwise)."""
        known = self.levels()
        matches = [k for k in known if k.startswith(prefix)]
        if len(matches) != 1:
            raise InputError(f"{self.path}: {'no' if not matches else 'more than one'} level of theory {prefix!r} "
                             f"(known: {', '.join(known) or 'none'})")
        return matches[0]

    def summary(self) -> list[dict]:
        """Per level of theory: its kind and settings, structures labeled and failed (no success), entries
        in quarantine, the commonest failure reasons, and the first and last time a result was stored."""
        import json

        with self._guard():
            con = self._con
            rows = con.execute(
                "SELECT v.level, v.kind, v.settings, COALESCE(SUM(s.best), 0), COUNT(s.structure), MIN(s.first), "
                "MAX(s.last), (SELECT COUNT(*) FROM quarantine q WHERE q.level = v.level) FROM levels v LEFT JOIN "
                "(SELECT level, structure, MAX(ok) AS best, MIN(created) AS first, MAX(created) AS last FROM labels "
                "GROUP BY level, structure) s USING (level) GROUP BY v.level ORDER BY MIN(v.created)").fetchall()
            out = []
            for level, kind, settings, n_ok, n_structures, first, last, n_quarantined in rows:
                reasons = con.execute("SELECT reason, COUNT(*) FROM labels WHERE level = ? AND ok = 0 GROUP BY reason "
                                      "ORDER BY 2 DESC LIMIT 3", (level,)).fetchall()
                out.append({"level": level, "kind": kind, "settings": json.loads(settings), "labeled": int(n_ok),
                            "failed": int(n_structures - n_ok), "quarantined": int(n_quarantined),
                            "failure_reasons": dict(reasons), "first": first, "last": last})
        return out
