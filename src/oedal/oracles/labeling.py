"""Label one shard: unlabeled store in, labeled.h5 and failed.h5 out, with the same ids (DESIGN §7, §10).

Labels are precious:
* every structure is first looked up in the label cache (:mod:`oedal.oracles.cache`) by its content
  hash and level of theory: only what is missing is computed, so no label is ever computed twice,
  whatever reruns this job (a retry, ``--forcerun``, ``rerun-incomplete``, another campaign);
* a missing structure is claimed, computed (tried ``max_attempts`` times) and stored with its claim
  released in one transaction: a kill at any moment (SIGKILL included) loses at most the structure
  being computed. Two jobs on one shard, or on overlapping shards, share the work: a structure claimed
  by a live process is waited for, not computed again;
* a structure the oracle cannot label (exception, NaN/inf, SCF not converged, non-finite positions) is
  a failure with its reason; it is cached too and reused, unless ``retry_failed``;
* without a shared cache a private one beside the output (``OUT.partial.sqlite``) is the checkpoint of
  a killed job; it is removed once the outputs are written;
* the outputs are written atomically, failed.h5 first, labeled.h5 last; an existing labeled.h5 is never
  overwritten (one written meanwhile by another job on the same shard is accepted when equal);
* energy-only labels (replay of a data set without forces, e.g. QM9) give a labeled.h5 without forces; a
  shard whose labels mix both kinds is an error, never forces silently dropped;
* a labeled.h5 has a stress (eV/Å³) when any of its labels has one, NaN rows for the others (a molecule, an
  oracle without stress): mixing is fine for stress.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from oedal.data import keys
from oedal.data.identity import duplicate_ids, hash_text
from oedal.errors import InputError
from oedal.interrupt import StopOnSigterm
from oedal.oracles.base import ID_KEY, Oracle, OracleSettingsBase, call_with_timeout, check_label, stress_of
from oedal.oracles.cache import Geometry, Journal, Label, LabelCache, Level, level_of
from oedal.oracles.cache.transfer import LEVEL_ATTR, LEVEL_OF_THEORY_ATTR
from oedal.oracles.registry import get_oracle

log = logging.getLogger(__name__)

CHUNK = 256  # structures read from the shard at a time
WAIT_SECONDS = (0.2, 2.0)  # first and longest pause while another process computes a structure


@dataclass
class LabelReport:
    n_structures: int
    n_labeled: int
    n_failed: int
    n_cached: int  # structures whose result was already in the cache
    n_oracle_calls: int  # in this run
    seconds: float
    first_failure: str = ""  # the reason of the first failure, in shard order


def checkpoint_path(out_path: str | Path) -> Path:
    """The private label cache of a job run without a shared one: ``OUT.partial.sqlite`` beside ``OUT``."""
    out_path = Path(out_path)
    return out_path.with_name(out_path.name.removesuffix(".h5") + ".partial.sqlite")


def _remove_cache_files(path: Path) -> None:
    for suffix in ("", "-wal", "-shm", "-journal"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)


def _label_one(oracle: Oracle, atoms, max_attempts: int, timeout: float | None = None) -> tuple[Label, int]:
    """Try the oracle up to ``max_attempts`` times, each call limited to ``timeout`` seconds → (result, oracle
    calls). Never raises for an oracle error."""
    if not np.all(np.isfinite(atoms.positions)) or not np.all(np.isfinite(atoms.cell.array)):
        return Label(False, float("nan"), None, "OracleFailure: non-finite positions or cell: not labeled", 0), 0
    reason = ""
    for attempt in range(1, max_attempts + 1):
        try:
            result = call_with_timeout(lambda: oracle.label(atoms), timeout)
            fresh = check_label(result[0], result[1], len(atoms), stress=stress_of(result))
            return Label(True, fresh[0], fresh[1], "", attempt, stress=fresh.stress), attempt
        except Exception as err:  # noqa: BLE001 — any oracle error is recorded, never swallowed
            reason = f"{type(err).__name__}: {err}"[:1000]
            log.debug("id %s attempt %d failed: %s", atoms.info.get(ID_KEY), attempt, reason)
            try:
                oracle.reset()
            except Exception:  # noqa: BLE001
                pass
    return Label(False, float("nan"), None, reason, max_attempts), max_attempts


@dataclass
class _Job:
    """The state of one labeling run: the shard, the cache, the level and the oracle (built when needed)."""

    reader: object
    hashes: list[str]
    db: LabelCache
    level: Level
    settings: OracleSettingsBase
    oracle: Oracle | None
    failures_since: float
    results: dict
    calls: int = 0
    started: float = dataclasses.field(default_factory=time.monotonic)
    last_log: float = dataclasses.field(default_factory=time.monotonic)

    def prepare(self, rows: list[int]) -> Oracle:
        """The oracle (built now unless given), prepared for the ids of ``rows`` (replay preloads them)."""
        if self.oracle is None:
            self.oracle = get_oracle(self.settings)
        self.oracle.prepare(np.asarray(self.reader.ids, dtype=np.int64)[rows])  # type: ignore[attr-defined]
        log.info("%s: labeling %d structure(s) with %s", self.reader.path, len(rows), self.oracle.name)  # type: ignore
        return self.oracle

    def attempt(self, row: int, atoms, ident: int, pending: list[int]) -> None:
        """Take the cached result of ``row``, or claim and compute it; a structure another process holds
        goes to ``pending``."""
        h = self.hashes[row]
        if h in self.results:
            return
        claim = self.db.claim(h, self.level, self.failures_since)
        if claim.label is not None:
            self.results[h] = claim.label
        elif not claim.mine:
            pending.append(row)
        else:
            atoms.info[ID_KEY] = int(ident)
            started = time.perf_counter()
            label, calls = _label_one(self.oracle, atoms, self.settings.max_attempts,  # type: ignore[arg-type]
                                      self.settings.timeout)
            self.calls += calls
            if not label.ok:
                log.warning("%s: id %d failed after %d attempt(s): %s", self.reader.path, ident,  # type: ignore
                            label.attempts, label.reason)
            geometry = Geometry(atoms.numbers, atoms.positions, atoms.cell.array, atoms.pbc)
            self.results[h] = self.db.store(h, self.level, geometry, label, self.oracle.name,  # type: ignore
                                            time.perf_counter() - started)
            self.log_progress()

    def log_progress(self, every: float = 30.0) -> None:
        """Done/total, failures, seconds per oracle call and time left, at most every ``every`` seconds."""
        now = time.monotonic()
        if now - self.last_log < every:
            return
        self.last_log = now
        done = sum(h in self.results for h in self.hashes)
        failed = sum(not self.results[h].ok for h in self.hashes if h in self.results)
        rate = (now - self.started) / max(self.calls, 1)
        log.info("%s: %d/%d done (%d failed), %.3g s per oracle call, about %.0f s left", self.reader.path,  # type: ignore
                 done, len(self.hashes), failed, rate, rate * (len(self.hashes) - done))

    def run(self, rows: list[int]) -> None:
        """Every row of ``rows`` decided: computed here, or by another process that held it."""
        if rows:
            self.prepare(rows)
        pause = WAIT_SECONDS[0]
        while rows:
            pending: list[int] = []
            for start in range(0, len(rows), CHUNK):
                part = rows[start : start + CHUNK]
                chunk = self.reader.read(part)  # type: ignore[attr-defined]
                for row, atoms, ident in zip(part, chunk.to_atoms(), chunk.ids):
                    self.attempt(row, atoms, int(ident), pending)
            if pending:
                log.info("%s: waiting for %d structure(s) another process is labeling", self.reader.path,  # type: ignore
                         len(pending))
                time.sleep(pause)
                pause = min(2 * pause, WAIT_SECONDS[1])
            rows = pending


def _refuse_duplicate_ids(reader) -> None:
    dup = duplicate_ids(reader.ids)
    if len(dup):
        shown = ", ".join(str(int(i)) for i in dup[:5]) + (" ..." if len(dup) > 5 else "")
        raise InputError(f"{reader.path}: {len(dup)} id(s) occur more than once in the shard ({shown}); "
                         "every structure to label needs its own id")


def _same(a: np.ndarray | None, b: np.ndarray | None) -> bool:
    """Both absent, or equal arrays (NaN equal to NaN: a stress row without a label)."""
    if a is None or b is None:
        return a is None and b is None
    return np.array_equal(a, b, equal_nan=True)


def _accept_existing(out: Path, good) -> None:
    """``out`` appeared while this job ran (another job on the same shard): accept it when it is equal."""
    from oedal.data.store import read_store

    have = read_store(out)
    same = (np.array_equal(have.ids, good.ids) and np.array_equal(have.energy, good.energy)
            and np.array_equal(have.forces, good.forces) and np.array_equal(have.positions, good.positions)
            and _same(have.stress, good.stress))
    if not same:
        raise FileExistsError(f"{out} was written by another process with other labels; labeled data are never "
                              "overwritten (move it away to relabel)")
    log.info("%s: already written by another process with the same labels", out)


def _labeled_forces(reader, labels: list[Label], out: Path) -> np.ndarray | None:
    """The forces of the successes, concatenated (eV/Å); None when they are energy-only labels. A shard
    whose successes mix labels with and without forces is an InputError naming the first odd one."""
    good = [(int(ident), lab) for ident, lab in zip(reader.ids, labels) if lab.ok]
    if not good:
        return np.zeros((0, 3))
    first_id, first = good[0]
    odd = next(((ident, lab) for ident, lab in good if (lab.forces is None) != (first.forces is None)), None)
    if odd is not None:
        with_f, without = (odd[0], first_id) if first.forces is None else (first_id, odd[0])
        raise InputError(f"{out}: id {without} has no forces but id {with_f} has: a batch mixes labels with and "
                         "without forces (energy-only and full labels cannot share one labeled store)")
    if first.forces is None:
        return None
    return np.concatenate([lab.forces for _, lab in good])


def _labeled_stress(labels: list[Label]) -> np.ndarray | None:
    """(n_successes, 3, 3) eV/Å³ of the successes, a NaN row where a label has no stress; None when none has."""
    good = [lab for lab in labels if lab.ok]
    if all(lab.stress is None for lab in good):
        return None
    return np.stack([np.full((3, 3), np.nan) if lab.stress is None else lab.stress for lab in good])


def _write_outputs(reader, hashes: list[str], results: dict, out: Path, failed: Path, attrs: dict) -> None:
    from oedal.data.store import write_store

    labels = [results[h] for h in hashes]
    forces = _labeled_forces(reader, labels, out)  # before anything is written
    ok = np.array([lab.ok for lab in labels], dtype=bool)
    bad = reader.read(np.flatnonzero(~ok)).without_labels()
    write_store(failed, bad, attrs={**attrs, "content": "structures the oracle failed to label"},
                extra={keys.REASON: np.array([lab.reason for lab in labels if not lab.ok], dtype=h5py.string_dtype()),
                       keys.ATTEMPTS: np.array([lab.attempts for lab in labels if not lab.ok], dtype=np.int64)})
    good = reader.read(np.flatnonzero(ok)).without_labels()
    good = dataclasses.replace(good, energy=np.array([lab.energy for lab in labels if lab.ok], dtype=np.float64),
                               forces=forces, stress=_labeled_stress(labels))  # eV, eV/Å, eV/Å³ (None: not labeled)
    try:
        write_store(out, good, attrs={**attrs, "content": "labeled structures"}, overwrite=False)
    except FileExistsError:
        _accept_existing(out, good)


def label_store(
    unlabeled_path: str | Path,
    out_path: str | Path,
    failed_path: str | Path | None,
    settings: OracleSettingsBase,
    *,
    oracle: Oracle | None = None,
    cache: str | Path | None = None,
    retry_failed: bool = False,
    journal: Journal = "wal",
) -> LabelReport:
    """Label every structure of the shard ``unlabeled_path``; write ``out_path`` and ``failed_path``.

    ``cache``: the label cache to read and extend (default: a private one, removed at the end);
    ``retry_failed``: compute again the structures whose cached result is a failure; ``oracle``
    overrides the one ``settings`` describe (tests, custom Python oracles).
    """
    from oedal.data.store import StoreReader

    start = time.perf_counter()
    unlabeled_path, out = Path(unlabeled_path), Path(out_path)
    failed = Path(failed_path) if failed_path else out.with_name(out.name.removesuffix(".h5") + ".failed.h5")
    if out.exists():
        raise FileExistsError(f"{out} exists: labeled data are never overwritten (move it away to relabel)")
    if not unlabeled_path.exists():
        raise FileNotFoundError(f"shard {unlabeled_path} not found")
    os.environ.setdefault("OMP_NUM_THREADS", str(settings.threads))
    level, cache_path = level_of(settings), Path(cache) if cache is not None else checkpoint_path(out)
    with StoreReader(unlabeled_path) as reader:
        _refuse_duplicate_ids(reader)
        hashes = [hash_text(h) for h in reader.hashes]
        with LabelCache(cache_path, journal=journal) as db, StopOnSigterm(exit_at_once=True):
            db.register(level)
            since = time.time() if retry_failed else 0.0
            results = db.lookup(hashes, level, failures_since=since)
            n_cached = sum(h in results for h in hashes)
            log.info("%s: %d structures, %d in the cache %s (level %s, %s)", unlabeled_path, len(hashes), n_cached,
                     cache_path, level.key[:12], level.kind)
            job = _Job(reader, hashes, db, level, settings, oracle, since, results)
            job.run([row for row, h in enumerate(hashes) if h not in results])
        _write_outputs(reader, hashes, results, out, failed, {"input": str(unlabeled_path), LEVEL_ATTR: level.key,
                                                              LEVEL_OF_THEORY_ATTR: level.settings})
    if cache is None:
        _remove_cache_files(cache_path)
    return _report(unlabeled_path, out, hashes, results, n_cached, job.calls, time.perf_counter() - start)


def _report(shard: Path, out: Path, hashes: list[str], results: dict, n_cached: int, calls: int,
            seconds: float) -> LabelReport:
    labels = [results[h] for h in hashes]
    n_ok = sum(lab.ok for lab in labels)
    first = next((lab.reason for lab in labels if not lab.ok), "")
    report = LabelReport(len(labels), n_ok, len(labels) - n_ok, n_cached, calls, seconds, first)
    log.info("%s: done, %d labeled, %d failed, %d from the cache, %d oracle calls in %.1f s -> %s",
             shard, report.n_labeled, report.n_failed, n_cached, calls, seconds, out)
    return report
