"""Label one shard: unlabeled store in, labeled.h5 and failed.h5 out, with the same ids (DESIGN §7).

Labels are precious:
* an existing output is never overwritten (``FileExistsError``);
* a structure the oracle cannot label (exception, NaN/inf, SCF not converged) is tried
  ``max_attempts`` times, then written to failed.h5 with the reason, and the shard goes on;
* progress is checkpointed to ``OUT.partial.h5`` (rewritten atomically every
  ``checkpoint_seconds`` (or every ``checkpoint_every`` structures), and on SIGTERM/Ctrl-C); a rerun of a
  killed job resumes from it and labels nothing twice. A SIGKILL loses at most the structures
  labeled since the last checkpoint (they are labeled again, and still appear once);
* the final files are written atomically (temp + rename): failed.h5 first, labeled.h5 last, and
  the checkpoint is removed only then.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

from oedal.data import keys
from oedal.errors import InputError
from oedal.files import atomic_path
from oedal.interrupt import StopOnSigterm
from oedal.oracles.base import ID_KEY, RUNTIME_FIELDS, Oracle, OracleFailure, OracleSettingsBase
from oedal.oracles.registry import get_oracle

log = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "oedal-label-checkpoint/1"
CHUNK = 256


@dataclass
class LabelReport:
    n_structures: int
    n_labeled: int
    n_failed: int
    n_resumed: int  # structures taken from a checkpoint
    n_oracle_calls: int  # in this run
    seconds: float


def checkpoint_path(out_path: str | Path) -> Path:
    out_path = Path(out_path)
    return out_path.with_name(out_path.name.removesuffix(".h5") + ".partial.h5")


@dataclass
class _Progress:
    """What has been decided so far, in the order it was decided."""

    index: list[int] = field(default_factory=list)  # row in the shard
    ident: list[int] = field(default_factory=list)
    ok: list[bool] = field(default_factory=list)
    energy: list[float] = field(default_factory=list)  # eV, NaN when failed
    forces: list[np.ndarray] = field(default_factory=list)  # (n_atoms, 3) eV/Å, NaN when failed
    reason: list[str] = field(default_factory=list)
    attempts: list[int] = field(default_factory=list)

    def add(self, index, ident, ok, energy, forces, reason, attempts) -> None:
        self.index.append(int(index))
        self.ident.append(int(ident))
        self.ok.append(bool(ok))
        self.energy.append(float(energy))
        self.forces.append(np.asarray(forces, dtype=np.float64).reshape(-1, 3))
        self.reason.append(reason)
        self.attempts.append(int(attempts))

    def __len__(self) -> int:
        return len(self.index)


def _label_settings_json(settings: OracleSettingsBase) -> str:
    """The settings that change a label (a checkpoint made with other runtime settings may be resumed)."""
    return json.dumps(settings.model_dump(exclude=set(RUNTIME_FIELDS)), sort_keys=True)


def _fingerprint(reader) -> str:
    """sha256 over ids, numbers and positions of the shard."""
    digest = hashlib.sha256()
    for chunk in reader.iter_chunks(CHUNK):
        for array in (chunk.ids, chunk.n_atoms, chunk.numbers, chunk.positions):
            digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()


def _write_checkpoint(path: Path, progress: _Progress, attrs: dict) -> None:
    with atomic_path(path, fsync=True) as tmp, h5py.File(tmp, "w") as f:
        for key, value in attrs.items():
            f.attrs[key] = value
        f[keys.INDEX] = np.array(progress.index, dtype=np.int64)
        f[keys.ID] = np.array(progress.ident, dtype=np.int64)
        f[keys.OK] = np.array(progress.ok, dtype=bool)
        f[keys.ENERGY] = np.array(progress.energy, dtype=np.float64)
        f[keys.N_ATOMS] = np.array([len(x) for x in progress.forces], dtype=np.int64)
        f[keys.FORCES] = np.concatenate(progress.forces) if progress.forces else np.zeros((0, 3))
        f[keys.REASON] = np.array(progress.reason, dtype=h5py.string_dtype())
        f[keys.ATTEMPTS] = np.array(progress.attempts, dtype=np.int64)


def _read_checkpoint(path: Path, attrs: dict) -> _Progress:
    progress = _Progress()
    with h5py.File(path, "r") as f:
        for key in ("format", "fingerprint", "settings"):
            if str(f.attrs.get(key, "")) != str(attrs[key]):
                raise InputError(
                    f"checkpoint {path} was made for a different {'input' if key == 'fingerprint' else key}; "
                    f"delete it to start this shard afresh"
                )
        offsets = np.concatenate([[0], np.cumsum(f[keys.N_ATOMS][:])])
        forces = f[keys.FORCES][:]
        columns = (f[keys.INDEX][:], f[keys.ID][:], f[keys.OK][:], f[keys.ENERGY][:], f[keys.REASON].asstr()[:],
                   f[keys.ATTEMPTS][:])
        for k, (index, ident, ok, energy, reason, attempts) in enumerate(zip(*columns)):
            progress.add(index, ident, ok, energy, forces[offsets[k] : offsets[k + 1]], reason, attempts)
    return progress


def _check_label(energy, forces, n_atoms: int) -> tuple[float, np.ndarray]:
    energy = float(energy)
    forces = np.asarray(forces, dtype=np.float64)
    if forces.shape != (n_atoms, 3):
        raise OracleFailure(f"forces have shape {forces.shape}, expected ({n_atoms}, 3)")
    if not np.isfinite(energy):
        raise OracleFailure(f"non-finite energy {energy}")
    if not np.all(np.isfinite(forces)):
        raise OracleFailure("non-finite forces")
    return energy, forces


def _label_one(oracle: Oracle, atoms, max_attempts: int) -> tuple[bool, float, np.ndarray, str, int, int]:
    """Try the oracle up to ``max_attempts`` times → (ok, energy, forces, reason, attempts, calls)."""
    reason = ""
    for attempt in range(1, max_attempts + 1):
        try:
            energy, forces = _check_label(*oracle.label(atoms), len(atoms))
            return True, energy, forces, "", attempt, attempt
        except Exception as err:  # noqa: BLE001 — any oracle error is recorded, never swallowed
            reason = f"{type(err).__name__}: {err}"[:1000]
            log.debug("id %s attempt %d failed: %s", atoms.info.get(ID_KEY), attempt, reason)
            try:
                oracle.reset()
            except Exception:  # noqa: BLE001
                pass
    nan = np.full((len(atoms), 3), np.nan)
    return False, float("nan"), nan, reason, max_attempts, max_attempts


def _read_unlabeled(reader, rows: np.ndarray):
    structures = reader.read(rows)
    return structures.without_labels() if structures.has_labels else structures


def _write_outputs(reader, progress: _Progress, out: Path, failed: Path, attrs: dict) -> None:
    from oedal.data.store import write_store

    order = np.argsort(progress.index, kind="stable")
    rows = np.array(progress.index, dtype=np.int64)[order]
    ok = np.array(progress.ok, dtype=bool)[order]

    bad_rows = rows[~ok]
    bad = _read_unlabeled(reader, bad_rows)
    with atomic_path(failed) as tmp:
        write_store(tmp, bad, attrs={**attrs, "content": "structures the oracle failed to label"})
        with h5py.File(tmp, "a") as f:
            f[keys.REASON] = np.array([progress.reason[k] for k in order[~ok]], dtype=h5py.string_dtype())
            f[keys.ATTEMPTS] = np.array([progress.attempts[k] for k in order[~ok]], dtype=np.int64)

    good_rows = rows[ok]
    good = _read_unlabeled(reader, good_rows)
    energy = np.array([progress.energy[k] for k in order[ok]], dtype=np.float64)  # (n,) eV
    forces_list = [progress.forces[k] for k in order[ok]]
    forces = np.concatenate(forces_list) if forces_list else np.zeros((0, 3))  # (n_atoms, 3) eV/Å
    if not np.array_equal(np.asarray(good.ids), np.array([progress.ident[k] for k in order[ok]])):
        raise RuntimeError("internal error: labeled ids do not match the shard")  # pragma: no cover
    good = dataclasses.replace(good, energy=energy, forces=forces)
    write_store(out, good, attrs={**attrs, "content": "labeled structures"}, overwrite=False)


def label_store(
    unlabeled_path: str | Path,
    out_path: str | Path,
    failed_path: str | Path | None,
    settings: OracleSettingsBase,
    *,
    oracle: Oracle | None = None,
) -> LabelReport:
    """Label every structure of the shard ``unlabeled_path``; write ``out_path`` and ``failed_path``.

    ``oracle`` overrides the one ``settings`` describes (tests, custom Python oracles).
    """
    from oedal.data.store import StoreReader

    start = time.perf_counter()
    unlabeled_path, out = Path(unlabeled_path), Path(out_path)
    failed = Path(failed_path) if failed_path else out.with_name(out.name.removesuffix(".h5") + ".failed.h5")
    if out.exists():
        raise FileExistsError(f"{out} exists: labeled data are never overwritten (move it away to relabel)")
    if not unlabeled_path.exists():
        raise FileNotFoundError(f"shard {unlabeled_path} not found")
    out.parent.mkdir(parents=True, exist_ok=True)
    failed.parent.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("OMP_NUM_THREADS", str(settings.threads))
    partial = checkpoint_path(out)

    with StoreReader(unlabeled_path) as reader:
        n = len(reader)
        attrs = {
            "format": CHECKPOINT_FORMAT,
            "fingerprint": _fingerprint(reader),
            "settings": _label_settings_json(settings),
            "input": str(unlabeled_path),
        }
        progress = _read_checkpoint(partial, attrs) if partial.exists() else _Progress()
        n_resumed = len(progress)
        done = np.zeros(n, dtype=bool)
        done[np.array(progress.index, dtype=np.int64)] = True
        oracle = oracle or get_oracle(settings)
        log.info(
            "%s: %d structures, %d resumed from %s, oracle %s",
            unlabeled_path, n, n_resumed, partial.name if n_resumed else "-", oracle.name,
        )
        oracle.prepare(np.asarray(reader.ids, dtype=np.int64)[~done])

        with StopOnSigterm(exit_at_once=True):  # SystemExit: the finally block writes the checkpoint
            calls = _label_remaining(reader, oracle, settings, progress, done, partial, attrs)

        _write_outputs(reader, progress, out, failed, {k: v for k, v in attrs.items() if k != "format"})
    partial.unlink(missing_ok=True)
    n_failed = len(progress) - int(np.sum(progress.ok))
    report = LabelReport(n, n - n_failed, n_failed, n_resumed, calls, time.perf_counter() - start)
    log.info(
        "%s: done, %d labeled, %d failed, %d oracle calls in %.1f s -> %s",
        unlabeled_path, report.n_labeled, report.n_failed, calls, report.seconds, out,
    )
    return report


def _label_remaining(reader, oracle: Oracle, settings: OracleSettingsBase, progress: _Progress, done: np.ndarray,
                     partial: Path, attrs: dict) -> int:
    """Label the structures not ``done`` in store order, checkpointing; returns the oracle calls."""
    start, n, n_resumed = time.perf_counter(), len(reader), len(progress)
    calls = since_checkpoint = row = 0
    last_checkpoint = last_log = time.monotonic()
    try:
        for chunk in reader.iter_chunks(CHUNK):
            for atoms, ident in zip(chunk.to_atoms(), np.asarray(chunk.ids)):
                row += 1
                if done[row - 1]:
                    continue
                atoms.info[ID_KEY] = int(ident)
                ok, energy, forces, reason, attempts, n_calls = _label_one(oracle, atoms, settings.max_attempts)
                calls += n_calls
                if not ok:
                    log.warning("%s: id %d failed after %d attempt(s): %s", reader.path, ident, attempts, reason)
                progress.add(row - 1, ident, ok, energy, forces, reason, attempts)
                done[row - 1] = True
                since_checkpoint += 1
                now = time.monotonic()
                every = settings.checkpoint_every
                if (every and since_checkpoint >= every) or now - last_checkpoint >= settings.checkpoint_seconds:
                    _write_checkpoint(partial, progress, attrs)
                    since_checkpoint, last_checkpoint = 0, now
                if now - last_log >= 30:
                    _log_progress(reader.path, progress, n, time.perf_counter() - start, n_resumed)
                    last_log = now
    finally:
        if since_checkpoint:  # interrupted (or finished): keep what was labeled
            _write_checkpoint(partial, progress, attrs)
    return calls


def _log_progress(path, progress: _Progress, n: int, seconds: float, n_resumed: int) -> None:
    n_done = len(progress)
    n_failed = n_done - int(np.sum(progress.ok))
    rate = seconds / max(n_done - n_resumed, 1)
    log.info(
        "%s: %d/%d done (%d failed), %.3g s/structure, about %.0f s left",
        path, n_done, n, n_failed, rate, rate * (n - n_done),
    )
