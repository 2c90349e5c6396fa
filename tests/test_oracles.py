"""Oracles and shard labeling: labels equal their reference, failures are kept, labels are never
overwritten, and a killed job resumes without labeling anything twice."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import h5py
import numpy as np
import pytest
from ase import Atoms
from ase.build import molecule
from ase.calculators.emt import EMT

from oedal.data.store import read_store, write_store
from oedal.data.structures import Structures
from oedal.oracles import Oracle, OracleFailure, checkpoint_path, get_oracle, label_store
from oedal.data.keys import REASON
from oedal.oracles.base import ID_KEY
from oedal.oracles import OracleSettings, oracle_settings
from oedal.settings import load_settings

REPO = Path(__file__).resolve().parents[1]


def ethanol_frames(n: int, seed: int = 0, sigma: float = 0.05) -> list[Atoms]:
    rng = np.random.default_rng(seed)
    frames = []
    for _ in range(n):
        atoms = molecule("CH3CH2OH")
        atoms.positions += rng.normal(0.0, sigma, atoms.positions.shape)
        frames.append(atoms)
    return frames


@pytest.fixture
def pool(tmp_path) -> Path:
    """12 unlabeled ethanol structures with non-contiguous ids."""
    path = tmp_path / "pool.h5"
    write_store(path, Structures.from_atoms(ethanol_frames(12), ids=np.arange(12) * 7 + 3))
    return path


class CountingOracle(Oracle):
    """Wraps an oracle; records the id of every call; can interrupt after ``stop_after`` calls."""

    def __init__(self, inner: Oracle, stop_after: int | None = None, exc: type[BaseException] = KeyboardInterrupt):
        self.inner, self.stop_after, self.exc = inner, stop_after, exc
        self.calls: list[int] = []
        self.name = "counting " + inner.name

    def label(self, atoms):
        if self.stop_after is not None and len(self.calls) >= self.stop_after:
            raise self.exc()
        result = self.inner.label(atoms)
        self.calls.append(int(atoms.info[ID_KEY]))
        return result


# ---- built-in oracles equal their reference ------------------------------------------------------


def test_replay_returns_source_labels_by_id(tmp_path):
    rng = np.random.default_rng(1)
    n = 30
    source = Structures.from_atoms(ethanol_frames(n, seed=1), ids=np.arange(n))
    source.energy = rng.normal(-1000, 5, n)  # labels only the source knows
    source.forces = rng.normal(0, 1, (source.n_atoms_total, 3))
    write_store(tmp_path / "source.h5", source)
    rows = rng.permutation(n)[:11]  # shuffled ids
    write_store(tmp_path / "pool.h5", source.subset(rows).without_labels())
    settings = oracle_settings(kind="replay", source=str(tmp_path / "source.h5"))
    report = label_store(tmp_path / "pool.h5", tmp_path / "lab.h5", tmp_path / "fail.h5", settings)
    assert (report.n_labeled, report.n_failed) == (11, 0)
    labeled = read_store(tmp_path / "lab.h5")
    expected = source.subset(rows)
    np.testing.assert_array_equal(labeled.ids, rows)
    np.testing.assert_array_equal(labeled.energy, expected.energy)
    np.testing.assert_array_equal(labeled.forces, expected.forces)
    np.testing.assert_array_equal(labeled.positions, expected.positions)


def test_replay_with_non_index_ids_and_mismatches(tmp_path):
    """Source ids that are not row numbers; an unknown id and moved atoms are failures, not labels."""
    rng = np.random.default_rng(2)
    n = 10
    ids = rng.permutation(n) * 10 + 1000
    source = Structures.from_atoms(ethanol_frames(n, seed=2), ids=ids)
    source.energy = rng.normal(size=n)
    source.forces = rng.normal(size=(source.n_atoms_total, 3))
    write_store(tmp_path / "source.h5", source)
    pool = source.subset([4, 1, 7, 2]).without_labels()
    pool.ids[2] = 5  # not in the source
    pool.positions[pool.offsets[3]] += 0.01  # structure 3 moved: its id points at another geometry
    write_store(tmp_path / "pool.h5", pool)
    settings = oracle_settings(kind="replay", source=str(tmp_path / "source.h5"))
    label_store(tmp_path / "pool.h5", tmp_path / "lab.h5", tmp_path / "fail.h5", settings)
    labeled = read_store(tmp_path / "lab.h5")
    np.testing.assert_array_equal(labeled.ids, ids[[4, 1]])
    np.testing.assert_array_equal(labeled.energy, source.energy[[4, 1]])
    with h5py.File(tmp_path / "fail.h5") as f:
        reasons = list(f[REASON].asstr()[:])
        assert list(f["id"][:]) == [5, ids[2]]
    assert "not in the source" in reasons[0] and "positions differ" in reasons[1]


@pytest.mark.parametrize("kind", ["emt", "xtb"])
def test_labels_equal_direct_ase_calculator(pool, tmp_path, kind):
    if kind == "xtb":
        tblite_ase = pytest.importorskip("tblite.ase")
        make = lambda: tblite_ase.TBLite(method="GFN2-xTB", verbosity=0)  # noqa: E731
    else:
        make = EMT
    report = label_store(pool, tmp_path / "lab.h5", tmp_path / "fail.h5", oracle_settings(kind=kind))
    assert report.n_labeled == 12 and report.n_failed == 0
    labeled = read_store(pool), read_store(tmp_path / "lab.h5")
    np.testing.assert_array_equal(labeled[0].ids, labeled[1].ids)
    for k, atoms in enumerate(labeled[1].to_atoms()):
        ref = atoms.copy()
        ref.calc = make()  # a fresh calculator per structure: no guess carried over
        a, b = labeled[1].offsets[k], labeled[1].offsets[k + 1]
        assert labeled[1].energy[k] == pytest.approx(ref.get_potential_energy(), abs=1e-6)
        np.testing.assert_allclose(labeled[1].forces[a:b], ref.get_forces(), atol=1e-5)


def test_ase_kind_calls_a_factory(pool, tmp_path):
    settings = oracle_settings(kind="ase", calculator="ase.calculators.emt:EMT")
    label_store(pool, tmp_path / "a.h5", tmp_path / "af.h5", settings)
    label_store(pool, tmp_path / "e.h5", tmp_path / "ef.h5", oracle_settings(kind="emt"))
    np.testing.assert_array_equal(read_store(tmp_path / "a.h5").energy, read_store(tmp_path / "e.h5").energy)
    with pytest.raises(ValueError, match="calculator"):
        oracle_settings(kind="ase", calculator="no_colon")
    with pytest.raises(ValueError, match="cannot import"):
        get_oracle(oracle_settings(kind="ase", calculator="no_such_module_xyz:f"))


def test_xtb_forces_are_minus_energy_gradient():
    pytest.importorskip("tblite")
    oracle = get_oracle(oracle_settings(kind="xtb", accuracy=0.01))
    atoms = ethanol_frames(1, seed=5, sigma=0.1)[0]
    energy, forces = oracle.label(atoms)
    h = 1e-3  # Å
    for i, k in [(0, 0), (2, 1), (5, 2), (8, 0)]:
        plus, minus = atoms.copy(), atoms.copy()
        plus.positions[i, k] += h
        minus.positions[i, k] -= h
        fd = -(oracle.label(plus)[0] - oracle.label(minus)[0]) / (2 * h)
        assert forces[i, k] == pytest.approx(fd, abs=1e-3), (i, k)
    assert np.abs(forces).max() > 0.1  # a distorted structure has real forces


def test_xtb_scf_failure_is_an_exception():
    pytest.importorskip("tblite")
    oracle = get_oracle(oracle_settings(kind="xtb", max_iterations=1))
    with pytest.raises(Exception, match="(?i)converge"):
        oracle.label(molecule("CH3CH2OH"))


def test_pyscf_forces_and_default_level():
    pytest.importorskip("pyscf")
    settings = oracle_settings(kind="pyscf", basis="sto-3g", conv_tol=1e-11)
    oracle = get_oracle(settings)
    atoms = molecule("H2O")
    atoms.positions[0, 0] += 0.05
    energy, forces = oracle.label(atoms)
    h = 1e-4
    plus, minus = atoms.copy(), atoms.copy()
    plus.positions[1, 2] += h
    minus.positions[1, 2] -= h
    fd = -(oracle.label(plus)[0] - oracle.label(minus)[0]) / (2 * h)
    assert forces[1, 2] == pytest.approx(fd, abs=1e-3)
    assert energy == pytest.approx(-2047.1, abs=0.5)  # PBE/STO-3G water, eV
    # default level: PBE-D3(BJ)/6-31G*, spherical d; the dispersion term is really there
    default = oracle_settings(kind="pyscf")
    assert (default.xc, default.basis, default.dispersion, default.cart) == ("pbe", "6-31g*", "d3bj", False)
    h2 = Atoms("H2", positions=[[0, 0, 0], [0, 0, 0.74]])
    e_d3 = get_oracle(default.model_copy(update={"grid_level": 1}))
    e_no = get_oracle(default.model_copy(update={"grid_level": 1, "dispersion": None}))
    assert e_d3.label(h2)[0] != pytest.approx(e_no.label(h2)[0], abs=1e-7)
    with pytest.raises(OracleFailure, match="not converged"):
        get_oracle(settings.model_copy(update={"max_iterations": 2})).label(atoms)


# ---- failures, overwrite protection, resume --------------------------------------------------------


class NaNOracle(Oracle):
    """EMT, but NaN forces for one id and an exception for another."""

    name = "nan"

    def __init__(self, nan_id: int, raise_id: int):
        self.nan_id, self.raise_id, self.emt = nan_id, raise_id, get_oracle(oracle_settings(kind="emt"))
        self.calls: list[int] = []

    def label(self, atoms):
        ident = atoms.info[ID_KEY]
        self.calls.append(ident)
        if ident == self.raise_id:
            raise RuntimeError("SCF exploded")
        energy, forces = self.emt.label(atoms)
        return energy, forces * np.nan if ident == self.nan_id else forces


def test_failures_are_recorded_with_reasons_and_excluded(tmp_path):
    frames = ethanol_frames(6)
    frames[2] = Atoms("LiH", positions=[[0, 0, 0], [0, 0, 1.6]])  # EMT knows no Li
    write_store(tmp_path / "pool.h5", Structures.from_atoms(frames, ids=np.arange(6) + 100))
    report = label_store(tmp_path / "pool.h5", tmp_path / "lab.h5", tmp_path / "f.h5", oracle_settings(kind="emt"))
    assert (report.n_labeled, report.n_failed) == (5, 1)
    assert 102 not in read_store(tmp_path / "lab.h5").ids
    failed = read_store(tmp_path / "f.h5")
    assert list(failed.ids) == [102] and not failed.has_labels and list(failed.numbers) == [3, 1]
    with h5py.File(tmp_path / "f.h5") as f:
        assert "NotImplementedError" in f[REASON].asstr()[0]

    oracle = NaNOracle(nan_id=101, raise_id=104)
    settings = oracle_settings(kind="emt", max_attempts=3)
    report = label_store(tmp_path / "pool.h5", tmp_path / "lab2.h5", tmp_path / "f2.h5", settings, oracle=oracle)
    assert (report.n_labeled, report.n_failed) == (3, 3)
    assert oracle.calls.count(104) == 3 and oracle.calls.count(101) == 3 and oracle.calls.count(100) == 1
    labeled = read_store(tmp_path / "lab2.h5")
    assert list(labeled.ids) == [100, 103, 105]
    assert np.all(np.isfinite(labeled.forces))
    with h5py.File(tmp_path / "f2.h5") as f:
        reasons = dict(zip(f["id"][:], f[REASON].asstr()[:]))
        assert list(f["attempts"][:]) == [3, 3, 3]
    assert "non-finite forces" in reasons[101] and "SCF exploded" in reasons[104]


class SlowOracle(Oracle):
    """EMT that sleeps ``delay`` seconds on the structure with id ``slow_id``."""

    def __init__(self, slow_id: int, delay: float) -> None:
        self.slow_id, self.delay, self.calls = slow_id, delay, []

    def label(self, atoms):
        import time

        self.calls.append(atoms.info[ID_KEY])
        if atoms.info[ID_KEY] == self.slow_id:
            time.sleep(self.delay)
        atoms = atoms.copy()
        atoms.calc = EMT()
        return atoms.get_potential_energy(), atoms.get_forces()


def test_a_call_past_its_timeout_is_a_recorded_failure_and_the_rest_is_labeled(tmp_path):
    """``timeout``: the structure whose call hangs (10 s) fails after 0.3 s per attempt, twice (max_attempts 2),
    with the reason recorded; the others are labeled; the timeout does not key the label cache (a runtime
    setting) and the alarm is off afterwards."""
    import time

    from oedal.oracles.cache import level_of

    write_store(tmp_path / "pool.h5", Structures.from_atoms(ethanol_frames(4), ids=np.arange(4) + 100))
    settings = oracle_settings(kind="emt", timeout=0.3, max_attempts=2)
    oracle = SlowOracle(slow_id=102, delay=10.0)
    start = time.perf_counter()
    report = label_store(tmp_path / "pool.h5", tmp_path / "lab.h5", tmp_path / "f.h5", settings, oracle=oracle)
    assert time.perf_counter() - start < 5.0
    assert (report.n_labeled, report.n_failed) == (3, 1) and oracle.calls.count(102) == 2
    with h5py.File(tmp_path / "f.h5") as f:
        assert "OracleTimeout" in f[REASON].asstr()[0] and "0.3 s" in f[REASON].asstr()[0]
    assert level_of(settings) == level_of(oracle_settings(kind="emt"))
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)


def test_existing_labels_are_never_overwritten(pool, tmp_path):
    out = tmp_path / "lab.h5"
    out.write_bytes(b"precious")
    with pytest.raises(FileExistsError, match="never overwritten"):
        label_store(pool, out, tmp_path / "f.h5", oracle_settings(kind="emt"))
    assert out.read_bytes() == b"precious"
    from oedal.cli import main

    args = ["label", "--oracle-settings", '{"kind": "emt"}', "--in", str(pool), "--out", str(out),
            "--failed", str(tmp_path / "f.h5")]
    assert main(args) == 2
    assert out.read_bytes() == b"precious"


def test_cli_label(pool, tmp_path, capsys):
    from oedal.cli import main

    args = ["label", "--oracle-settings", '{"kind": "emt"}', "--in", str(pool), "--out", str(tmp_path / "l.h5"),
            "--failed", str(tmp_path / "f.h5"), "--threads", "1"]
    assert main(args) == 0
    assert len(read_store(tmp_path / "l.h5")) == 12 and len(read_store(tmp_path / "f.h5")) == 0
    assert main(["label", "--oracle-settings", '{"kind": "emt", "bogus": 1}', "--in", str(pool),
                 "--out", str(tmp_path / "x.h5"), "--failed", str(tmp_path / "y.h5")]) == 2
    assert "bogus" in capsys.readouterr().err
    assert main(["label", "--oracle-settings", '{"kind": "replay"}', "--in", str(pool),
                 "--out", str(tmp_path / "x.h5"), "--failed", str(tmp_path / "y.h5")]) == 2


def test_empty_shard(tmp_path):
    write_store(tmp_path / "pool.h5", Structures.empty())
    report = label_store(tmp_path / "pool.h5", tmp_path / "l.h5", tmp_path / "f.h5", oracle_settings(kind="emt"))
    assert report.n_structures == 0 and len(read_store(tmp_path / "l.h5")) == 0


@pytest.mark.parametrize("stop_after", [0, 5, 11])
def test_interrupt_and_resume_labels_each_id_once(pool, tmp_path, stop_after):
    settings = oracle_settings(kind="emt")
    label_store(pool, tmp_path / "straight.h5", tmp_path / "sf.h5", settings)
    out, failed = tmp_path / "lab.h5", tmp_path / "f.h5"
    first = CountingOracle(get_oracle(settings), stop_after=stop_after)
    with pytest.raises(KeyboardInterrupt):
        label_store(pool, out, failed, settings, oracle=first)
    assert not out.exists() and checkpoint_path(out).exists()  # the private cache holds every finished label
    second = CountingOracle(get_oracle(settings))
    report = label_store(pool, out, failed, settings, oracle=second)
    assert report.n_cached == stop_after and not checkpoint_path(out).exists()
    calls = first.calls + second.calls
    assert sorted(calls) == sorted(read_store(pool).ids)  # each id labeled exactly once
    straight, resumed = read_store(tmp_path / "straight.h5"), read_store(out)
    np.testing.assert_array_equal(resumed.ids, straight.ids)
    np.testing.assert_array_equal(resumed.energy, straight.energy)
    np.testing.assert_array_equal(resumed.forces, straight.forces)


def test_resume_is_by_content_and_level(pool, tmp_path):
    """What a killed job left is reused only for the same structures at the same level of theory: another
    input under the same ids, or other label-changing settings, reuse nothing; threads change nothing."""
    settings = oracle_settings(kind="emt")
    with pytest.raises(KeyboardInterrupt):
        label_store(pool, tmp_path / "lab.h5", None, settings, oracle=CountingOracle(get_oracle(settings), 3))
    other = tmp_path / "other.h5"
    write_store(other, Structures.from_atoms(ethanol_frames(12, seed=9), ids=read_store(pool).ids))
    counting = CountingOracle(get_oracle(settings))
    report = label_store(other, tmp_path / "lab.h5", None, settings, oracle=counting)
    assert report.n_cached == 0 and len(counting.calls) == 12
    label_store(other, tmp_path / "straight.h5", None, settings)
    np.testing.assert_array_equal(read_store(tmp_path / "lab.h5").energy, read_store(tmp_path / "straight.h5").energy)
    with pytest.raises(KeyboardInterrupt):
        label_store(pool, tmp_path / "b.h5", None, settings, oracle=CountingOracle(get_oracle(settings), 3))
    assert label_store(pool, tmp_path / "b.h5", None, settings.model_copy(update={"threads": 2})).n_cached == 3
    assert (tmp_path / "b.failed.h5").exists()


SIGKILL_SCRIPT = textwrap.dedent(
    """
    import os, signal, sys
    from oedal.oracles import Oracle, get_oracle, label_store
    from oedal.oracles import oracle_settings

    pool, out, log, kill_at = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    settings = oracle_settings(kind="emt")

    class Killer(Oracle):
        name = "killer"
        def __init__(self):
            self.emt, self.n = get_oracle(settings), 0
        def label(self, atoms):
            if self.n == kill_at:
                os.kill(os.getpid(), signal.SIGKILL)  # no cleanup, no finally: a real hard kill
            result = self.emt.label(atoms)
            self.n += 1
            with open(log, "a") as f:
                f.write(f"{atoms.info['id']}\\n")
            return result

    label_store(pool, out, None, settings, oracle=Killer())
    """
)


def test_sigkill_and_resume(pool, tmp_path):
    """A job killed with SIGKILL after 7 labels; the rerun labels the other 5 and nothing twice (each
    label is committed to the cache as it is made); the final file equals a straight run."""
    out, log = tmp_path / "lab.h5", tmp_path / "calls.txt"
    proc = subprocess.run(
        [sys.executable, "-c", SIGKILL_SCRIPT, str(pool), str(out), str(log), "7"],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert not out.exists() and checkpoint_path(out).exists()
    first = [int(x) for x in log.read_text().split()]
    assert len(first) == 7
    settings = oracle_settings(kind="emt")
    second = CountingOracle(get_oracle(settings))
    report = label_store(pool, out, None, settings, oracle=second)
    assert report.n_cached == 7
    assert second.calls == read_store(pool).ids[7:].tolist()
    label_store(pool, tmp_path / "straight.h5", None, settings)
    straight, resumed = read_store(tmp_path / "straight.h5"), read_store(out)
    np.testing.assert_array_equal(resumed.ids, straight.ids)
    np.testing.assert_array_equal(resumed.energy, straight.energy)


def test_sigterm_keeps_the_labels(pool, tmp_path):
    """Slurm and Snakemake stop jobs with SIGTERM: the labels so far are kept."""
    script = SIGKILL_SCRIPT.replace("signal.SIGKILL", "signal.SIGTERM")
    out, log = tmp_path / "lab.h5", tmp_path / "calls.txt"
    proc = subprocess.run(
        [sys.executable, "-c", script, str(pool), str(out), str(log), "5"],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 128 + signal.SIGTERM, proc.stderr
    settings = oracle_settings(kind="emt")
    second = CountingOracle(get_oracle(settings))
    assert label_store(pool, out, None, settings, oracle=second).n_cached == 5
    assert len(second.calls) == 7


def test_settings_reject_unknown_keys():
    with pytest.raises(ValueError, match="basis_set"):
        load_settings(OracleSettings, {"kind": "pyscf", "basis_set": "sto-3g"})
    assert load_settings(OracleSettings, '{"kind": "xtb"}', threads=3).threads == 3


def test_replay_from_a_named_data_set(shared_data, ethanol_structures, tmp_path):
    """The campaign's default: pool ids index into the GM-NN ethanol data set."""
    rows = np.array([250, 3, 77, 120])
    write_store(tmp_path / "pool.h5", ethanol_structures.subset(rows).without_labels())
    settings = oracle_settings(kind="replay", source="ethanol_1000K", data_dir=str(shared_data / "gmnn_ethanol"))
    label_store(tmp_path / "pool.h5", tmp_path / "lab.h5", None, settings)
    labeled, expected = read_store(tmp_path / "lab.h5"), ethanol_structures.subset(rows)
    np.testing.assert_array_equal(labeled.ids, rows)
    np.testing.assert_allclose(labeled.energy, expected.energy, rtol=0, atol=1e-9)
    np.testing.assert_allclose(labeled.forces, expected.forces, rtol=0, atol=1e-9)
