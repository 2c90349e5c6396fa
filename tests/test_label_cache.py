"""The label cache (DESIGN §10): every oracle result stored once under (content hash, level of theory),
looked up first by every labeling job; kill -9 at random moments and two processes on one shard compute
no label twice; failures are cached; the cache is append-only; `oedal cache info|export`. And the
labeling edges of issue 12: non-finite results are failures, an all-failed shard exits non-zero,
duplicate ids are refused, spin multiplicities are checked."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import ase.io
import numpy as np
import pytest
from ase import Atoms
from ase.build import molecule

import counting_calculator
from oedal.cli import main
from oedal.data.identity import hash_text
from oedal.data.store import StoreReader, read_store, write_store
from oedal.data.structures import Structures
from oedal.errors import InputError
from oedal.oracles import LabelCache, OracleFailure, get_oracle, label_store, level_of, oracle_settings
from oedal.oracles.cache import Geometry, Label

TESTS = Path(__file__).resolve().parent
SRC = TESTS.parent / "src"


def frames(n: int, seed: int = 0) -> list[Atoms]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        atoms = molecule("CH3CH2OH")
        atoms.positions += rng.normal(0.0, 0.05, atoms.positions.shape)
        out.append(atoms)
    return out


def shard(path: Path, n: int, seed: int = 0, ids=None) -> Path:
    write_store(path, Structures.from_atoms(frames(n, seed), ids=np.arange(n) + 100 if ids is None else ids))
    return path


def counting(log: Path, delay: float = 0.0, fail: bool = False, wait_for: str = ""):
    return oracle_settings(kind="ase", calculator="counting_calculator:counting_emt",
                           calculator_kwargs={"log": str(log), "delay": delay, "fail": fail, "wait_for": wait_for})


def stored_rows(cache: Path) -> list[tuple[str, int]]:
    with sqlite3.connect(cache) as con:
        return con.execute("SELECT structure, ok FROM labels ORDER BY row").fetchall()


def owners_of_claims(cache: Path) -> int:
    try:
        with sqlite3.connect(cache, timeout=1) as con:
            return con.execute("SELECT COUNT(DISTINCT owner) FROM claims").fetchone()[0]
    except sqlite3.OperationalError:  # the schema is not there yet
        return 0


def env_with_tests() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(TESTS), str(SRC), env.get("PYTHONPATH", "")])
    return env


# ---- the level of theory and the cache itself ------------------------------------------------------


def test_level_of_theory_leaves_out_threads_and_attempts():
    emt = level_of(oracle_settings(kind="emt"))
    assert emt == level_of(oracle_settings(kind="emt", threads=4, max_attempts=3))
    xtb = level_of(oracle_settings(kind="xtb"))
    assert xtb != level_of(oracle_settings(kind="xtb", accuracy=0.1)) and xtb.kind == "xtb"
    assert json.loads(xtb.settings)["method"] == "GFN2-xTB" and "threads" not in json.loads(xtb.settings)


def test_the_cache_is_append_only(tmp_path):
    """Successes are stored once and never changed; the only way out of the labels table is into the quarantine,
    which keeps the entry and is append-only too."""
    cache = tmp_path / "labels.sqlite"
    level = level_of(oracle_settings(kind="emt"))
    geometry, other = (Geometry(a.numbers, a.positions, a.cell.array, a.pbc) for a in frames(2))
    h1 = geometry.hash()
    with LabelCache(cache) as db:
        db.store(other.hash(), level, other, Label(True, -3.0, np.zeros((9, 3))), "emt", 0.1)
        assert db.quarantine([1], "a test") == 1 and not db.lookup([other.hash()], level)
        db.register(level)
        assert db.claim(h1, level).mine
        first = db.store(h1, level, geometry, Label(True, -1.0, np.zeros((9, 3))), "emt", 0.1)
        again = db.store(h1, level, geometry, Label(True, -2.0, np.ones((9, 3))), "emt", 0.1)
        assert again.energy == first.energy == -1.0 and not again.forces.any()  # the first success stays
        assert db.claim(h1, level).label.energy == -1.0  # done: nothing to compute
        with pytest.raises(ValueError, match="hashes to another key"):  # a label is stored under its geometry only
            db.store("h2", level, geometry, Label(True, -1.0, np.zeros((9, 3))), "emt", 0.1)
    with sqlite3.connect(cache) as con:
        for statement in ("UPDATE labels SET energy = 0", "DELETE FROM labels", "DELETE FROM quarantine"):
            with pytest.raises(sqlite3.DatabaseError, match="append-only"):
                con.execute(statement)
    assert stored_rows(cache) == [(h1, 1)]  # a success is stored once
    with sqlite3.connect(cache) as con:
        assert con.execute("SELECT structure, energy, why FROM quarantine").fetchall() == [(other.hash(), -3.0, "a test")]


def test_claims_of_live_dead_and_silent_processes(tmp_path):
    level = level_of(oracle_settings(kind="emt"))
    with LabelCache(tmp_path / "c.sqlite") as db:
        db.register(level)
        dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                              text=True).stdout.strip()
        rows = [("live", os.getppid(), time.time()), ("dead", int(dead), time.time()),
                ("silent", os.getppid(), time.time() - 3600)]
        for name, pid, heartbeat in rows:
            db._con.execute("INSERT INTO claims VALUES (?, ?, ?, ?, ?, ?)",
                            (name, level.key, f"{db.host}:{pid}:x", db.host, pid, heartbeat))
        assert db.claim("live", level) == (None, False)  # a live process computes it: wait
        assert db.claim("dead", level).mine  # its process is gone: take it over
        assert db.claim("silent", level).mine  # no heartbeat for an hour: take it over


def test_every_result_is_stored_once_and_reused_by_content(tmp_path):
    """A second shard with the same structures under other ids, plus new ones, computes only the new ones;
    a shard at another level of theory reuses nothing."""
    cache, log = tmp_path / "labels.sqlite", tmp_path / "calls.txt"
    first = shard(tmp_path / "a.h5", 10)
    report = label_store(first, tmp_path / "la.h5", tmp_path / "fa.h5", counting(log), cache=cache)
    assert (report.n_labeled, report.n_cached, report.n_oracle_calls) == (10, 0, 10)
    both = Structures.concatenate([read_store(first).subset(np.arange(4, 10)), Structures.from_atoms(frames(3, 7))])
    both.ids = np.arange(9) + 500
    write_store(tmp_path / "b.h5", both)
    report = label_store(tmp_path / "b.h5", tmp_path / "lb.h5", tmp_path / "fb.h5", counting(log), cache=cache)
    assert (report.n_cached, report.n_oracle_calls) == (6, 3)
    assert len(counting_calculator.calls(log)) == 13
    np.testing.assert_array_equal(read_store(tmp_path / "lb.h5").energy[:6], read_store(tmp_path / "la.h5").energy[4:])
    emt = label_store(first, tmp_path / "le.h5", None, oracle_settings(kind="emt"), cache=cache)
    assert emt.n_cached == 0 and emt.n_oracle_calls == 10
    assert len(stored_rows(cache)) == 23 and all(ok for _, ok in stored_rows(cache))


def test_failures_are_cached_and_retried_on_request(tmp_path):
    cache, log = tmp_path / "labels.sqlite", tmp_path / "calls.txt"
    path = tmp_path / "s.h5"
    structures = Structures.from_atoms(frames(3) + [Atoms("LiH", positions=[[0, 0, 0], [0, 0, 1.6]])])
    write_store(path, structures)  # EMT knows no Li
    settings = oracle_settings(kind="emt", max_attempts=2)
    report = label_store(path, tmp_path / "l1.h5", None, settings, cache=cache)
    assert (report.n_failed, report.n_oracle_calls) == (1, 3 + 2)
    assert "NotImplementedError" in report.first_failure
    again = label_store(path, tmp_path / "l2.h5", None, settings, cache=cache)
    assert (again.n_failed, again.n_cached, again.n_oracle_calls) == (1, 4, 0)  # the failure is reused
    retried = label_store(path, tmp_path / "l3.h5", None, settings, cache=cache, retry_failed=True)
    assert (retried.n_failed, retried.n_cached, retried.n_oracle_calls) == (1, 3, 2)
    assert [ok for _, ok in stored_rows(cache)].count(0) == 2  # both failures recorded, none overwritten


def test_private_cache_is_removed_after_the_outputs(tmp_path):
    path = shard(tmp_path / "s.h5", 3)
    label_store(path, tmp_path / "l.h5", None, oracle_settings(kind="emt"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["l.failed.h5", "l.h5", "s.h5"]


# ---- kill -9 at random moments, and two processes on one shard -------------------------------------


LABEL_CMD = [sys.executable, "-m", "oedal", "label", "--in", "{shard}", "--out", "{out}", "--failed", "{failed}",
             "--cache", "{cache}", "--oracle-settings", "{settings}"]


def label_process(shard_path: Path, out: Path, cache: Path, settings) -> subprocess.Popen:
    args = [a.format(shard=shard_path, out=out, failed=out.with_suffix(".failed.h5"), cache=cache,
                     settings=settings.model_dump_json()) for a in LABEL_CMD]
    return subprocess.Popen(args, env=env_with_tests(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def wait_for_calls(log: Path, n: int, proc: subprocess.Popen, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while len(counting_calculator.calls(log)) < n and proc.poll() is None:
        assert time.monotonic() < deadline, "the labeling process made no progress"
        time.sleep(0.005)


def test_kill_9_at_random_moments_computes_no_label_twice(tmp_path):
    """A labeling job is killed with SIGKILL at a random moment, three times, each rerun resuming from the
    cache; then a last run finishes. Every label is in the cache once; the only label computed twice is
    at most the one a kill interrupted between its computation and its commit."""
    n, cache, log = 30, tmp_path / "labels.sqlite", tmp_path / "calls.txt"
    path, out = shard(tmp_path / "s.h5", n), tmp_path / "l.h5"
    settings = counting(log, delay=0.01)
    rng = np.random.default_rng(13)
    kills = 0
    for _ in range(3):
        proc = label_process(path, out, cache, settings)
        wait_for_calls(log, len(counting_calculator.calls(log)) + int(rng.integers(1, 8)), proc)
        time.sleep(float(rng.uniform(0.0, 0.01)))  # inside a computation, or between two
        proc.send_signal(signal.SIGKILL)
        kills += proc.wait() == -signal.SIGKILL
    assert kills == 3 and not out.exists()
    report = label_store(path, out, None, settings, cache=cache)
    done = counting_calculator.calls(log)
    assert report.n_labeled == n and report.n_cached + report.n_oracle_calls == n
    assert sorted(h for h, _ in stored_rows(cache)) == sorted(set(hash_text(h) for h in StoreReader(path).hashes))
    assert len(done) - n <= kills  # at most one finished-but-uncommitted computation per kill
    print(f"{kills} kills: {len(done)} oracle calls for {n} labels")
    assert len(set(i for _, i in done)) == n


def test_two_processes_on_one_shard_compute_each_structure_once(tmp_path):
    """Two `oedal label` on the same shard and cache at once (a retry beside an orphaned job, two working
    directories on one results folder): each structure is computed once, both outputs are equal."""
    n, cache, log, go = 24, tmp_path / "labels.sqlite", tmp_path / "calls.txt", tmp_path / "go"
    path = shard(tmp_path / "s.h5", n)
    settings = counting(log, delay=0.02, wait_for=str(go))
    procs = [label_process(path, tmp_path / f"l{k}.h5", cache, settings) for k in range(2)]
    deadline = time.monotonic() + 120
    while not (cache.exists() and owners_of_claims(cache) == 2):  # each holds a structure: start them together
        exited = [(p.returncode, p.stderr.read()) for p in procs if p.poll() is not None]
        assert time.monotonic() < deadline and not exited, f"no claims; exited (code, stderr): {exited}"
        time.sleep(0.01)
    go.touch()
    for proc in procs:
        assert proc.wait(timeout=120) == 0, proc.stderr.read()
    done = counting_calculator.calls(log)
    assert sorted(i for _, i in done) == list(range(100, 100 + n))  # each id once
    assert len({pid for pid, _ in done}) == 2  # both did some of the work
    a, b = read_store(tmp_path / "l0.h5"), read_store(tmp_path / "l1.h5")
    np.testing.assert_array_equal(a.energy, b.energy)
    np.testing.assert_array_equal(a.forces, b.forces)


# ---- issue 12: what a shard may hold and what an oracle may return ---------------------------------


def test_duplicate_ids_in_a_shard_are_refused_before_any_work(tmp_path):
    path = shard(tmp_path / "s.h5", 4, ids=[7, 3, 7, 9])
    with pytest.raises(InputError, match=r"id\(s\) occur more than once.*7"):
        label_store(path, tmp_path / "l.h5", None, oracle_settings(kind="emt"), cache=tmp_path / "c.sqlite")
    assert not (tmp_path / "l.h5").exists() and not (tmp_path / "c.sqlite").exists()


def test_a_nan_position_is_a_failure_never_a_label(tmp_path):
    source = Structures.from_atoms(frames(3), ids=np.arange(3))
    source.energy, source.forces = np.zeros(3), np.zeros((source.n_atoms_total, 3))
    write_store(tmp_path / "source.h5", source)
    pool = source.without_labels()
    pool.positions[pool.offsets[1] + 2, 0] = np.nan
    write_store(tmp_path / "pool.h5", pool)
    settings = oracle_settings(kind="replay", source=str(tmp_path / "source.h5"))
    with pytest.raises(OracleFailure, match="positions differ"):
        atoms = pool.to_atoms()[1]
        oracle = get_oracle(settings)
        oracle.label(atoms)
    report = label_store(tmp_path / "pool.h5", tmp_path / "l.h5", tmp_path / "f.h5", settings)
    assert (report.n_labeled, report.n_failed) == (2, 1) and "non-finite positions" in report.first_failure
    assert list(read_store(tmp_path / "f.h5").ids) == [1]


def test_label_exits_non_zero_when_every_structure_failed(tmp_path, capsys):
    log = tmp_path / "calls.txt"
    path = shard(tmp_path / "s.h5", 3)
    args = ["label", "--in", str(path), "--out", str(tmp_path / "l.h5"), "--failed", str(tmp_path / "f.h5"),
            "--oracle-settings", counting(log, fail=True).model_dump_json()]
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "every structure" in err[0] and "always fails" in err[0], err
    assert len(read_store(tmp_path / "f.h5")) == 3 and len(read_store(tmp_path / "l.h5")) == 0  # written first
    write_store(tmp_path / "empty.h5", Structures.empty())
    assert main(["label", "--in", str(tmp_path / "empty.h5"), "--out", str(tmp_path / "e.h5"), "--failed",
                 str(tmp_path / "ef.h5"), "--oracle-settings", '{"kind": "emt"}']) == 0


def test_xtb_refuses_an_electron_count_that_does_not_fit_the_multiplicity():
    pytest.importorskip("tblite")
    methyl = molecule("CH3")  # 9 electrons
    with pytest.raises(OracleFailure, match="9 electrons .* multiplicity 1"):
        get_oracle(oracle_settings(kind="xtb")).label(methyl)
    energy, _ = get_oracle(oracle_settings(kind="xtb", multiplicity=2)).label(methyl)
    assert np.isfinite(energy)
    with pytest.raises(OracleFailure, match="10 electrons .* multiplicity 2"):
        get_oracle(oracle_settings(kind="xtb", multiplicity=2, charge=-1)).label(methyl)


def test_pyscf_refuses_an_electron_count_that_does_not_fit_the_multiplicity():
    pytest.importorskip("pyscf")
    with pytest.raises(OracleFailure, match="1 electrons .* multiplicity 1.*oracle.multiplicity"):
        get_oracle(oracle_settings(kind="pyscf", basis="sto-3g")).label(Atoms("H"))


# ---- oedal cache info | export ------------------------------------------------------------------


def test_cache_info_and_export(tmp_path, capsys):
    cache = tmp_path / "labels.sqlite"
    path = shard(tmp_path / "s.h5", 5)
    label_store(path, tmp_path / "l.h5", None, oracle_settings(kind="emt"), cache=cache)
    level = level_of(oracle_settings(kind="emt"))
    assert main(["cache", "info", str(cache)]) == 0
    out = capsys.readouterr().out
    assert level.key[:16] in out and "emt  5 labeled, 0 failed" in out
    assert main(["cache", "export", str(cache), "--out", str(tmp_path / "x.extxyz"), "--level", level.key[:8]]) == 0
    exported = ase.io.read(tmp_path / "x.extxyz", ":")
    labeled = read_store(tmp_path / "l.h5")
    assert len(exported) == 5
    assert {a.info["level_of_theory"] for a in exported} == {level.settings}
    assert {a.info["oracle_kind"] for a in exported} == {"emt"}
    np.testing.assert_allclose([a.get_potential_energy() for a in exported], labeled.energy)
    np.testing.assert_allclose(np.concatenate([a.get_forces() for a in exported]), labeled.forces, atol=1e-8)
    assert main(["cache", "export", str(cache), "--out", str(tmp_path / "y.extxyz"), "--level", "nope"]) == 2
    assert main(["cache", "info", str(tmp_path / "missing.sqlite")]) == 2
