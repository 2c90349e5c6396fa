"""The label cache read with suspicion (issue 21): simultaneous first openers, identity from content, cached
labels checked like fresh ones and quarantined when bad, damaged files refused in one line and a fresh cache
refilled from the labeled stores, another program's database left alone, a full disk, an old schema."""

from __future__ import annotations

import multiprocessing
import resource
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
from ase.calculators.emt import EMT

import counting_calculator
from oedal.cli import main
from oedal.data.identity import content_hashes, hash_text
from oedal.data.store import read_store
from oedal.errors import InputError
from oedal.oracles import LabelCache, label_store, level_of, oracle_settings
from oedal.oracles.cache import Geometry, Label, add_stores, check_cache
from oedal.oracles.cache.schema import SCHEMA_VERSION
from test_label_cache import counting, env_with_tests, frames, shard, stored_rows

EMT_LEVEL = level_of(oracle_settings(kind="emt"))


def _open_and_register(path: str, barrier, errors) -> None:
    try:
        barrier.wait(timeout=30)
        with LabelCache(path) as db:
            db.register(EMT_LEVEL)
    except Exception as err:  # noqa: BLE001 — reported to the parent
        errors.put(f"{type(err).__name__}: {err}")


def test_simultaneous_first_openers_all_open_a_new_cache(tmp_path):
    """50 rounds of 8 processes that open one brand-new cache at the same instant (a barrier): every open
    succeeds (before: 'database is locked' on PRAGMA journal_mode=wal in about half of the 2-process races)."""
    ctx = multiprocessing.get_context("fork")
    errors = ctx.Queue()
    n_rounds, n_procs = 50, 8
    for r in range(n_rounds):
        barrier = ctx.Barrier(n_procs)
        path = str(tmp_path / f"labels{r}.sqlite")
        procs = [ctx.Process(target=_open_and_register, args=(path, barrier, errors)) for _ in range(n_procs)]
        for p in procs:
            p.start()
        for p in procs:
            p.join(timeout=60)
        assert all(p.exitcode == 0 for p in procs)
        with sqlite3.connect(path) as con:
            assert con.execute("SELECT COUNT(*) FROM levels").fetchone()[0] == 1
            assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    failed = []
    while not errors.empty():
        failed.append(errors.get())
    assert not failed, f"{len(failed)} of {n_rounds * n_procs} opens failed; first: {failed[0]}"


def test_a_shard_edited_after_writing_is_labeled_by_its_content(tmp_path):
    """Positions moved by 0.4 Å with the stored hash column left as it was: the moved structure is a new
    structure (computed now, its own energy), never the unmoved geometry's cached label."""
    cache, log = tmp_path / "labels.sqlite", tmp_path / "calls.txt"
    path = shard(tmp_path / "s.h5", 4)
    label_store(path, tmp_path / "l1.h5", None, counting(log), cache=cache)
    with h5py.File(path, "a") as f:
        f["positions"][9] = f["positions"][9] + 0.4  # an atom of structure 1; the hash column untouched
    report = label_store(path, tmp_path / "l2.h5", None, counting(log), cache=cache)
    assert (report.n_cached, report.n_oracle_calls) == (3, 1)
    moved = read_store(path).subset([1]).to_atoms()[0]
    moved.calc = EMT()
    first, second = read_store(tmp_path / "l1.h5"), read_store(tmp_path / "l2.h5")
    assert second.energy[1] == pytest.approx(moved.get_potential_energy(), rel=1e-12)
    assert abs(second.energy[1] - first.energy[1]) > 0.1
    np.testing.assert_array_equal(second.energy[[0, 2, 3]], first.energy[[0, 2, 3]])


def _plant(cache: Path, atoms, energy: float, forces: np.ndarray, *, key: str | None = None) -> None:
    """A row written past oedal (what a bug, a hand edit or another program could leave)."""
    g = Geometry(atoms.numbers, atoms.positions, atoms.cell.array, atoms.pbc)
    with LabelCache(cache) as db:
        db.register(EMT_LEVEL)
    with sqlite3.connect(cache) as con:
        con.execute("INSERT INTO labels (structure, level, ok, energy, forces, reason, attempts, numbers, positions, "
                    "cell, pbc, oracle, seconds, created) VALUES (?,?,1,?,?,'',1,?,?,?,0,'planted',0,0)",
                    (key or g.hash(), EMT_LEVEL.key, energy, np.asarray(forces, "<f8").tobytes(),
                     np.asarray(g.numbers, "<u2").tobytes(), np.asarray(g.positions, "<f8").tobytes(),
                     np.zeros(9).tobytes()))


@pytest.mark.parametrize("plant", ["inf energy", "NaN force", "short forces", "another geometry"])
def test_a_bad_cached_label_is_named_quarantined_and_computed_again(tmp_path, caplog, plant):
    cache = tmp_path / "labels.sqlite"
    atoms = frames(3)
    path = shard(tmp_path / "s.h5", 3)
    key = hash_text(content_hashes(read_store(path).subset([0]))[0])
    good = np.zeros((9, 3))
    planted = {"inf energy": (atoms[0], np.inf, good, None), "NaN force": (atoms[0], -1.0, good + np.nan, None),
               "short forces": (atoms[0], -1.0, good[:8], None), "another geometry": (atoms[1], -1.0, good, key)}[plant]
    _plant(cache, *planted[:3], key=planted[3])
    assert main(["cache", "check", str(cache)]) == 2  # named, exit 2
    report = label_store(path, tmp_path / "l.h5", None, oracle_settings(kind="emt"), cache=cache)
    assert (report.n_labeled, report.n_oracle_calls) == (3, 3)
    assert "entry row 1" in caplog.text and "moved to the quarantine" in caplog.text
    labeled = read_store(tmp_path / "l.h5")
    fresh = atoms[0].copy()
    fresh.calc = EMT()
    assert labeled.energy[0] == pytest.approx(fresh.get_potential_energy(), rel=1e-12)
    assert np.isfinite(labeled.energy).all() and np.isfinite(labeled.forces).all()
    with sqlite3.connect(cache) as con:
        assert con.execute("SELECT row, oracle FROM quarantine").fetchall() == [(1, "planted")]
    assert check_cache(cache)[1] == []  # what is left is sound


def test_cache_check_and_quarantine_by_hand(tmp_path, capsys):
    cache = tmp_path / "labels.sqlite"
    path = shard(tmp_path / "s.h5", 3)
    label_store(path, tmp_path / "l.h5", None, oracle_settings(kind="emt"), cache=cache)
    assert main(["cache", "check", str(cache)]) == 0 and "3 entries checked, 0 bad" in capsys.readouterr().out
    h = stored_rows(cache)[2][0]
    assert main(["cache", "quarantine", str(cache), "--structure", h[:10], "--why", "SCF in a wrong state"]) == 0
    assert "1 entry moved to the quarantine (rows 3)" in capsys.readouterr().out
    assert main(["cache", "info", str(cache)]) == 0 and "2 labeled, 0 failed, 1 in quarantine" in capsys.readouterr().out
    report = label_store(path, tmp_path / "l2.h5", None, oracle_settings(kind="emt"), cache=cache)
    assert (report.n_cached, report.n_oracle_calls) == (2, 1)
    assert main(["cache", "quarantine", str(cache), "--row", "99", "--why", "x"]) == 2


def _labeled_cache(tmp_path: Path, n: int = 40, settings=None) -> tuple[Path, Path]:
    cache = tmp_path / "labels.sqlite"
    path = shard(tmp_path / "s.h5", n)
    label_store(path, tmp_path / "run" / "labeled.h5", None, settings or oracle_settings(kind="emt"), cache=cache)
    return cache, path


@pytest.mark.parametrize("damage", ["cut in half", "garbage"])
def test_a_damaged_cache_is_refused_in_one_line_and_a_fresh_one_refilled_from_the_stores(tmp_path, damage):
    log = tmp_path / "calls.txt"
    cache, path = _labeled_cache(tmp_path, 40, counting(log))
    data = cache.read_bytes()
    cache.write_bytes(data[: len(data) // 2] if damage == "cut in half" else np.random.default_rng(0).bytes(len(data)))
    more = shard(tmp_path / "more.h5", 45)  # the 40 labeled ones (same seed) and 5 new
    out = subprocess.run([sys.executable, "-m", "oedal", "label", "--in", str(more), "--out", str(tmp_path / "m.h5"),
                          "--failed", str(tmp_path / "mf.h5"), "--cache", str(cache), "--oracle-settings",
                          counting(log).model_dump_json()], capture_output=True, text=True, env=env_with_tests())
    assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr
    assert len(out.stderr.strip().splitlines()) == 1 and str(cache) in out.stderr and "oedal cache add" in out.stderr
    assert not (tmp_path / "m.h5").exists() and len(counting_calculator.calls(log)) == 40
    fresh = tmp_path / "fresh.sqlite"
    assert main(["cache", "add", str(fresh), str(tmp_path / "run")]) == 0
    report = label_store(more, tmp_path / "m.h5", None, counting(log), cache=fresh)
    assert (report.n_cached, report.n_oracle_calls) == (40, 5) and len(counting_calculator.calls(log)) == 45
    np.testing.assert_array_equal(read_store(tmp_path / "m.h5").energy[:40], read_store(tmp_path / "run" / "labeled.h5").energy)


def test_cache_verbs_leave_another_programs_database_alone(tmp_path, capsys):
    import ase.db

    other = tmp_path / "structures.db"
    with ase.db.connect(other) as db:
        db.write(frames(1)[0])
    before = other.read_bytes()
    with sqlite3.connect(other) as con:
        tables = con.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()
    for verb in (["info"], ["check"], ["export", "--out", str(tmp_path / "x.extxyz")]):
        assert main(["cache", verb[0], str(other), *verb[1:]]) == 2
        assert "not a label cache" in capsys.readouterr().err
    with pytest.raises(InputError, match="not a label cache"):
        label_store(shard(tmp_path / "s.h5", 1), tmp_path / "l.h5", None, oracle_settings(kind="emt"), cache=other)
    with sqlite3.connect(other) as con:
        assert con.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall() == tables
    assert other.read_bytes() == before and not (tmp_path / "x.extxyz").exists()


def test_export_checks_its_output_before_reading(tmp_path):
    cache, _ = _labeled_cache(tmp_path, 2)
    (tmp_path / "a folder").mkdir()
    assert main(["cache", "export", str(cache), "--out", str(tmp_path / "a folder")]) == 2


def test_a_version_1_cache_is_migrated_and_keeps_its_labels(tmp_path):
    cache, path = _labeled_cache(tmp_path, 3)
    with sqlite3.connect(cache) as con:  # back to what oedal of schema 1 wrote
        con.executescript("DROP TRIGGER labels_no_delete; DROP TABLE quarantine; "
                          "CREATE TRIGGER labels_no_delete BEFORE DELETE ON labels BEGIN SELECT RAISE(ABORT, 'the "
                          "label cache is append-only'); END; UPDATE meta SET value = '1' WHERE key = 'schema';")
    report = label_store(path, tmp_path / "again.h5", None, oracle_settings(kind="emt"), cache=cache)
    assert (report.n_cached, report.n_oracle_calls) == (3, 0)
    with sqlite3.connect(cache) as con:
        assert con.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone() == (str(SCHEMA_VERSION),)
        with pytest.raises(sqlite3.DatabaseError, match="append-only"):
            con.execute("DELETE FROM labels")


def _limit_file_size(limit: int):
    def preexec():  # EFBIG instead of SIGXFSZ: the write fails as on a full disk, the process lives
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return preexec


def test_a_full_disk_while_labeling_keeps_the_cache_consistent(tmp_path):
    """The label job's file size limit is reached midway (as a full disk would): one line, no labeled.h5,
    every label committed before is in the cache and sound, and the rerun computes only the rest."""
    cache, log = tmp_path / "labels.sqlite", tmp_path / "calls.txt"
    path = shard(tmp_path / "s.h5", 400)
    args = [sys.executable, "-m", "oedal", "label", "--in", str(path), "--out", str(tmp_path / "l.h5"), "--failed",
            str(tmp_path / "f.h5"), "--cache", str(cache), "--oracle-settings", counting(log).model_dump_json()]
    out = subprocess.run(args, capture_output=True, text=True, env=env_with_tests(), preexec_fn=_limit_file_size(200_000))
    assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr[-3000:]
    assert "cannot be written" in out.stderr and str(cache) in out.stderr
    assert not (tmp_path / "l.h5").exists()
    done = len(counting_calculator.calls(log))
    stored = len(stored_rows(cache))
    assert 0 < stored <= done < 400 and check_cache(cache)[1] == []
    report = label_store(path, tmp_path / "l.h5", None, counting(log), cache=cache)
    assert report.n_labeled == 400 and report.n_cached == stored
    assert len(counting_calculator.calls(log)) == done + 400 - stored


def test_add_refuses_a_store_without_a_level(tmp_path):
    path = shard(tmp_path / "s.h5", 2)
    with pytest.raises(InputError, match="not a labeled store written by oedal label"):
        add_stores(tmp_path / "c.sqlite", [path])


def test_a_stored_label_passes_the_checks_of_a_fresh_one(tmp_path):
    atoms = frames(1)[0]
    g = Geometry(atoms.numbers, atoms.positions, atoms.cell.array, atoms.pbc)
    with LabelCache(tmp_path / "c.sqlite") as db:
        with pytest.raises(Exception, match="non-finite energy"):
            db.store(g.hash(), EMT_LEVEL, g, Label(True, float("inf"), np.zeros((9, 3))), "emt", 0.0)
        with pytest.raises(Exception, match="shape"):
            db.store(g.hash(), EMT_LEVEL, g, Label(True, 1.0, np.zeros((8, 3))), "emt", 0.0)
    assert stored_rows(tmp_path / "c.sqlite") == []
