"""The label cache's SQLite file: its tables, opening it safely, and its errors as one line each.

* ``labels`` — append-only (triggers refuse UPDATE, and DELETE of any row not first copied to
  ``quarantine``): per row the content hash of the structure, the level of theory, ``ok``, energy (eV)
  and forces (eV/Å, float64; NULL for an energy-only label), or the failure's reason, the attempts, the
  geometry, the oracle's name and the time; since schema 3 the stress (eV/Å³, nine float64, row-major 3×3;
  NULL: no stress label, and every label stored before schema 3). At most one success per (structure,
  level) (a unique index); a failure may be followed by a retry's rows.
* ``quarantine`` — entries moved aside (a label that failed its checks on the way out, or one a user
  named): the whole row, why, and when. Append-only as well: nothing a cache ever held is lost.
* ``levels`` — level key → oracle kind and the JSON of the settings that change a label.
* ``claims`` — scratch: who computes which structure now.
* ``meta`` — the schema version. An older file is migrated in place when opened (:func:`_migrate`): nothing
  it holds is rewritten or lost.

Opening is safe under any number of simultaneous first openers: SQLite answers ``PRAGMA journal_mode``
(and the first read of a file another process is creating) with "database is locked" at once, without
its busy timeout (it would otherwise have to upgrade a shared lock while another process holds one), so
the whole initialisation is retried with a jittered backoff for up to ``BUSY_TIMEOUT_SECONDS``.
"""

from __future__ import annotations

import logging
import random
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Literal, TypeVar

from oedal.errors import InputError, OutputError

log = logging.getLogger(__name__)

SCHEMA_VERSION = 3  # 1: no quarantine, DELETE refused outright; 2: no stress column
BUSY_TIMEOUT_SECONDS = 300.0  # how long a transaction waits for another writer
Journal = Literal["wal", "delete"]
JOURNALS: tuple[str, ...] = ("wal", "delete")
QUICK_CHECK_MAX_BYTES = 2 << 30  # files up to this size get SQLite's quick_check at every open (≈ 0.17 s per 100 MB)
T = TypeVar("T")

_ROW_COLUMNS = """structure TEXT NOT NULL, level TEXT NOT NULL,
    ok INTEGER NOT NULL, energy REAL, forces BLOB, reason TEXT NOT NULL, attempts INTEGER NOT NULL,
    numbers BLOB NOT NULL, positions BLOB NOT NULL, cell BLOB NOT NULL, pbc INTEGER NOT NULL,
    oracle TEXT NOT NULL, seconds REAL NOT NULL, created REAL NOT NULL"""
_ADDED_COLUMNS = "stress BLOB"
"""Columns added since schema 2, last in both tables (where ALTER TABLE ... ADD COLUMN puts them): a migrated
file has a new file's column order."""
ROW_NAMES = ", ".join(column.split()[0] for column in f"{_ROW_COLUMNS}, {_ADDED_COLUMNS}".split(","))
"""The columns ``labels`` and ``quarantine`` share besides ``row``, by name (never ``SELECT *``: their order
differs)."""

_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS levels (
    level TEXT PRIMARY KEY, kind TEXT NOT NULL, settings TEXT NOT NULL, created REAL NOT NULL);
CREATE TABLE IF NOT EXISTS labels (row INTEGER PRIMARY KEY AUTOINCREMENT, {_ROW_COLUMNS}, {_ADDED_COLUMNS});
CREATE UNIQUE INDEX IF NOT EXISTS one_label ON labels (structure, level) WHERE ok = 1;
CREATE INDEX IF NOT EXISTS by_key ON labels (level, structure);
CREATE TABLE IF NOT EXISTS quarantine (row INTEGER PRIMARY KEY, {_ROW_COLUMNS},
    why TEXT NOT NULL, quarantined REAL NOT NULL, {_ADDED_COLUMNS});
CREATE TRIGGER IF NOT EXISTS labels_no_update BEFORE UPDATE ON labels
    BEGIN SELECT RAISE(ABORT, 'the label cache is append-only'); END;
CREATE TRIGGER IF NOT EXISTS labels_no_delete BEFORE DELETE ON labels
    WHEN NOT EXISTS (SELECT 1 FROM quarantine WHERE quarantine.row = OLD.row)
    BEGIN SELECT RAISE(ABORT, 'the label cache is append-only (oedal cache quarantine moves an entry aside)'); END;
CREATE TRIGGER IF NOT EXISTS quarantine_no_update BEFORE UPDATE ON quarantine
    BEGIN SELECT RAISE(ABORT, 'the quarantine is append-only'); END;
CREATE TRIGGER IF NOT EXISTS quarantine_no_delete BEFORE DELETE ON quarantine
    BEGIN SELECT RAISE(ABORT, 'the quarantine is append-only'); END;
CREATE TABLE IF NOT EXISTS claims (
    structure TEXT NOT NULL, level TEXT NOT NULL, owner TEXT NOT NULL, host TEXT NOT NULL,
    pid INTEGER NOT NULL, heartbeat REAL NOT NULL, PRIMARY KEY (structure, level));
"""

DAMAGED = ("move it aside (the next run starts a fresh cache) and refill a fresh one from the labeled stores: "
           "oedal cache add NEW.sqlite RESULTS_DIR")


def _locked(err: sqlite3.OperationalError) -> bool:
    text = str(err)
    return "locked" in text or "busy" in text


def retry_locked(action: Callable[[], T], deadline: float) -> T:
    """``action()``, tried again after a jittered pause (1 ms doubling to 50 ms) while SQLite says the file
    is locked, until ``deadline`` (time.monotonic())."""
    pause = 0.001
    while True:
        try:
            return action()
        except sqlite3.OperationalError as err:
            if not _locked(err) or time.monotonic() > deadline:
                raise
        time.sleep(pause * random.uniform(0.5, 1.5))
        pause = min(2 * pause, 0.05)


def _tables(con: sqlite3.Connection) -> set[str]:
    rows = con.execute("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'")
    return {name for (name,) in rows}


def _schema_version(con: sqlite3.Connection, path: Path, create: bool) -> int | None:
    """The file's schema version (None: an empty database, to be made a cache); InputError for a
    database that is not a label cache (another program's tables) or an empty one not to be created."""
    tables = _tables(con)
    if not tables:
        if create:
            return None
        raise InputError(f"{path}: not a label cache (an empty database)")
    row = con.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone() if "meta" in tables else None
    if row is None or not {"labels", "levels"} <= tables:
        shown = ", ".join(sorted(tables)[:6])
        raise InputError(f"{path}: not a label cache (it holds the tables {shown}: another program's database?); "
                         "give a new file or an existing label cache")
    version = int(row[0])
    if version > SCHEMA_VERSION:
        raise InputError(f"{path}: label cache schema {version} is newer than this oedal's ({SCHEMA_VERSION})")
    return version


def _quick_check(con: sqlite3.Connection, path: Path) -> None:
    """SQLite's ``PRAGMA quick_check`` (every page and record well formed) on files up to
    QUICK_CHECK_MAX_BYTES: a file cut short or overwritten is refused before a job reads or adds a label.
    Larger files are checked by ``oedal cache check``; every operation still turns an error into one line."""
    if path.stat().st_size > QUICK_CHECK_MAX_BYTES:
        return
    found = con.execute("PRAGMA quick_check(1)").fetchone()[0]
    if found != "ok":
        raise sqlite3.DatabaseError(f"database disk image is malformed: {found}")


def _migrate(con: sqlite3.Connection, version: int) -> None:
    """Bring a file of schema ``version`` to SCHEMA_VERSION, inside the caller's write transaction; the tables
    and triggers it lacks are then created by _SCHEMA. v1 → v2: DELETE only of quarantined rows (the
    trigger is made again). v2 → v3: the nullable stress column, added to each table that lacks it (ALTER
    TABLE ... ADD COLUMN: no row rewritten, every label kept and served as before, without stress)."""
    if version < 2:
        con.execute("DROP TRIGGER IF EXISTS labels_no_delete")
    if version < 3:
        name, kind = _ADDED_COLUMNS.split()
        for table in ("labels", "quarantine"):  # a v1 file has no quarantine yet: _SCHEMA makes it whole
            have = {info[1] for info in con.execute(f"PRAGMA table_info({table})")}
            if have and name not in have:
                con.execute(f"ALTER TABLE {table} ADD COLUMN {name} {kind}")


def _initialise(con: sqlite3.Connection, path: Path, journal: Journal | None, create: bool) -> None:
    """Check what the file is (a damaged file or another program's database is refused before anything in
    it changes), set the journal mode, then in one write transaction: check again, create or migrate."""
    _quick_check(con, path)
    _schema_version(con, path, create)
    if journal is not None:
        mode = con.execute(f"PRAGMA journal_mode={journal}").fetchone()[0]
        if mode != journal:
            log.warning("%s: journal mode stays %s (another process has it open)", path, mode)
    con.execute("PRAGMA synchronous=NORMAL")
    con.execute("BEGIN IMMEDIATE")
    try:
        version = _schema_version(con, path, create)
        if version is not None:
            _migrate(con, version)
        for statement in filter(str.strip, _SCHEMA.split(";\n")):
            con.execute(statement)
        con.execute("INSERT OR REPLACE INTO meta VALUES ('schema', ?)", (str(SCHEMA_VERSION),))
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise


def connect(path: str | Path, journal: Journal | None = None, *, create: bool = True) -> sqlite3.Connection:
    """An autocommit connection (transactions are explicit) to the label cache at ``path``, with its schema
    in place. ``create``: make a missing or empty file a cache (else FileNotFoundError / InputError).
    Refuses, in one line naming the file, another program's database, a damaged file and a newer schema."""
    path = Path(path)
    if not create and not path.is_file():
        raise FileNotFoundError(f"{path}: no such label cache")
    path.parent.mkdir(parents=True, exist_ok=True)
    con = sqlite3.connect(path, timeout=BUSY_TIMEOUT_SECONDS, isolation_level=None)
    try:
        retry_locked(lambda: _initialise(con, path, journal, create), time.monotonic() + BUSY_TIMEOUT_SECONDS)
    except sqlite3.DatabaseError as err:
        con.close()
        raise one_line(err, path) from None
    except BaseException:
        con.close()
        raise
    return con


def one_line(err: sqlite3.DatabaseError, path: Path) -> Exception:
    """The SQLite error ``err`` on the cache ``path`` as oedal's one-line error: a full disk is an
    OutputError (what was stored before is kept), anything else a damaged or unusable file (InputError)."""
    text = str(err)
    if "full" in text or "disk I/O" in text:
        return OutputError(f"{path}: the label cache cannot be written ({text}); every label stored before is "
                           "kept: free space and run again")
    if _locked(err):
        return OutputError(f"{path}: the label cache stayed locked by another process for "
                           f"{BUSY_TIMEOUT_SECONDS:.0f} s ({text})")
    return InputError(f"{path}: not a usable label cache ({text}); {DAMAGED}")
