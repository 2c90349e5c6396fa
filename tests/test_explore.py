"""Exploration walkers: the band decisions, the thermostat, a replayed trajectory, a killed job's rerun."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from ase import Atoms, units

from oedal.campaign.explore.checks import decide
from oedal.campaign.explore.dynamics import Dynamics, run_walkers
from oedal.campaign.explore.walker import Walker, read_walkers, start_walkers, summary
from oedal.gmnn.model import Evaluation

LIMITS = {"min_distance": 0.3, "max_force": 1e3, "max_energy_jump": 1e3, "max_temperature_factor": 10.0}


@pytest.mark.parametrize("values, sanity, expected", [
    ([0.2, 0.9, 1.0, 3.0, 19.9], None, ["accurate", "accurate", "candidate", "candidate", "candidate"]),
    ([20.1, math.nan, math.inf], None, ["stopped"] * 3),
    ([0.1], "atoms 0.20 Å apart", ["stopped"]),
])
def test_band_decisions(values, sanity, expected):
    assert [decide(v, 1.0, 20.0, sanity) for v in values] == expected


class Harmonic:
    """A stand-in model: each walker's atoms tied to their start by springs (k eV/Å²) on the displacement
    relative to the walker's mean displacement (translation invariant: no net force); a constant uncertainty."""

    cutoff, species, d, device = 3.0, [1, 6, 8], 4, torch.device("cpu")

    def __init__(self, x0: np.ndarray, k: float = 5.0):
        self.x0, self.k = torch.as_tensor(x0), k

    def batch(self, structures, dtype=None):
        from oedal.gmnn.batching import make_batch

        return make_batch(structures, self.cutoff, self.species, dtype=dtype or torch.float64)

    def evaluate(self, batch, stress=False, sensitivities=False, bias=None):
        dx = batch.positions.double() - self.x0
        n = torch.bincount(batch.structure, minlength=batch.n_structures).double()
        mean = torch.zeros((batch.n_structures, 3), dtype=torch.float64).index_add(0, batch.structure, dx) / n[:, None]
        rel = dx - mean[batch.structure]
        e_i = 0.5 * self.k * (rel**2).sum(1)
        energy = torch.zeros(batch.n_structures, dtype=torch.float64).index_add(0, batch.structure, e_i)
        g = torch.ones((batch.n_structures, self.d), dtype=torch.float64) if sensitivities else None
        return Evaluation(energy, -self.k * rel, None, g)


class ConstantHead:
    def structure(self, g):
        n = len(g)
        return {"score": np.full(n, 0.1), "informativeness": np.full(n, 0.5), "force_error": np.full(n, 0.01)}


def test_baoab_thermostat_holds_the_temperature_without_drift(monkeypatch):
    """Equipartition: 8 walkers of 3 atoms at 500 K, 8,000 steps: the mean kinetic temperature (3N − 3
    degrees of freedom) is 500 K within 4 %; no centre-of-mass motion; every check accurate."""
    from ase.data import atomic_masses

    from oedal.campaign.explore import dynamics as W

    atoms = Atoms("HCO", positions=[[0, 0, 0], [1.2, 0, 0], [0, 1.3, 0]])
    ws = start_walkers([atoms], [500.0], 8, seed=5)
    x0 = np.concatenate([w.arrays()[0] for w in ws])
    seen = []
    real = W._Batch.temperature

    def spy(self, k, v):
        seen.append(real(self, k, v))
        return seen[-1]

    monkeypatch.setattr(W._Batch, "temperature", spy)
    dyn = Dynamics(steps=8000, timestep=1.0, friction=0.02, check_every=10, low=1.0, high=20.0, limits=LIMITS)
    records: list = []
    run_walkers(Harmonic(x0), ConstantHead(), ws, dyn, 0, records)
    assert np.mean(seen[len(seen) // 4:]) == pytest.approx(500.0, rel=0.04)
    v = np.concatenate([w.arrays()[1] for w in ws]).reshape(8, 3, 3)
    assert np.abs((atomic_masses[[1, 6, 8]][None, :, None] * v).sum(1)).max() < 1e-10
    assert all(w.status == "finished" for w in ws) and not records  # I = 0.5 < low: all accurate
    assert summary(ws)["clean"] == 8 and summary(ws)["clean_share"] == 1.0


@pytest.fixture(scope="module")
def model_file(tmp_path_factory, ethanol_structures):
    """A small GM-NN with its uncertainty, trained briefly by oedal train on 60 ethanol frames."""
    from oedal.cli import main
    from oedal.data.store import write_store

    root = tmp_path_factory.mktemp("explore")
    write_store(root / "train.h5", ethanol_structures.subset(np.arange(60)))
    write_store(root / "valid.h5", ethanol_structures.subset(np.arange(60, 100)))
    assert main(["train", "--train", str(root / "train.h5"), "--valid", str(root / "valid.h5"), "--out",
                 str(root / "m.pt"), "--settings", json.dumps({"epochs": 30, "batch_size": 8}), "--model-settings",
                 json.dumps({"hidden": [32, 16], "descriptor": {"r_cut": 4.0, "n_radial": 3, "n_basis": 5}}),
                 "--threads", "1"]) == 0
    return root / "m.pt"


EXPLORE = {"starts": ["ethanol"], "temperatures": [300.0, 900.0], "walkers_per_start": 3, "steps": 400,
           "check_every": 10, "low": 1.0, "high": 50.0, "max_temperature_factor": 6.0, "ramp": False}


def run_explore(model_file, out, extra=(), wait=True):
    cmd = [sys.executable, "-m", "oedal", "explore", "--model", str(model_file), "--settings", json.dumps(EXPLORE),
           "--candidates", str(out / "c.h5"), "--walkers", str(out / "w.json"), "--seed", "7", *extra]
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE"}
    if wait:
        return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    return subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def candidates(path):
    from oedal.data.store import read_store

    s = read_store(path)
    return s.ids, s.positions


def test_replayed_checks_give_the_recorded_decisions_and_kill_9_reruns_to_the_same_candidates(model_file, tmp_path):
    straight = tmp_path / "straight"
    straight.mkdir()
    proc = run_explore(model_file, straight)
    assert proc.returncode == 0, proc.stderr
    walkers = read_walkers([straight / "w.json"])
    checks = [c for w in walkers for c in w.checks]
    assert checks and any(c[3] == "candidate" for c in checks)
    for step, value, reason, verdict in checks:  # the trigger replayed on the recorded values
        assert decide(value, EXPLORE["low"], EXPLORE["high"], reason) == verdict
    for w in walkers:  # a walker stops at its first stopped check, and records nothing after it
        verdicts = [c[3] for c in w.checks]
        assert "stopped" not in verdicts[:-1] and (w.status == "stopped") == (verdicts[-1] == "stopped")
    ids, positions = candidates(straight / "c.h5")
    # every candidate-band frame, and the frame that stopped a walker unless its geometry is broken
    def broken(reason) -> bool:
        return str(reason).startswith(("non-finite", "atoms ")) or "covalent radii" in str(reason)

    kept = sum(1 for w in walkers if w.status == "stopped" and not broken(w.checks[-1][2]))
    assert len(ids) == sum(w.counts["candidate"] for w in walkers) + kept
    # kill -9 mid-run (after a checkpoint), then rerun: the same candidates, bit for bit
    killed = tmp_path / "killed"
    killed.mkdir()
    job = run_explore(model_file, killed, extra=["--threads", "1"], wait=False)
    deadline = time.time() + 300
    while not (killed / "w.json.partial").exists() and job.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    os.kill(job.pid, signal.SIGKILL)
    job.wait()
    assert not (killed / "c.h5").exists()
    again = run_explore(model_file, killed)
    assert again.returncode == 0, again.stderr
    ids2, positions2 = candidates(killed / "c.h5")
    np.testing.assert_array_equal(ids2, ids)
    np.testing.assert_array_equal(positions2, positions)


def _walker(k: int, status: str, candidates: int) -> Walker:
    return Walker(k, 300.0, [1, 1], [[0, 0, 0], [0, 0, 0.74]], [[0, 0, 0], [0, 0, 0]], np.eye(3).tolist(),
                  [False] * 3, {}, status=status, counts={"accurate": 5, "candidate": candidates})


@pytest.mark.parametrize("converged, expect_stop", [(0.5, True), (0.51, False)])
def test_exploration_converges_when_enough_walkers_run_clean(tmp_path, converged, expect_stop):
    """DP-GEN's accurate ratio: 2 of 4 walkers ran their full length without a candidate (one found
    candidates, one stopped), so the share is exactly 0.5."""
    from oedal.campaign.explore.walker import combined_summary, write_walkers
    from oedal.campaign.records import ExploreCounts
    from oedal.campaign.stop import explore_stop_reason

    write_walkers(tmp_path / "a.json", [_walker(0, "finished", 0), _walker(2, "finished", 3)])
    write_walkers(tmp_path / "b.json", [_walker(1, "finished", 0), _walker(3, "stopped", 1)])
    counts = {**combined_summary([tmp_path / "a.json", tmp_path / "b.json"], converged), "candidates": 4}
    assert (counts["walkers"], counts["clean"], counts["with_candidates"], counts["stopped"]) == (4, 2, 1, 1)
    assert counts["clean_share"] == 0.5 and counts["converged"] is expect_stop
    reason = explore_stop_reason(ExploreCounts.from_dict(counts))
    assert (reason is not None and "converged" in reason) is expect_stop
    assert "no candidate" in explore_stop_reason(ExploreCounts.from_dict({**counts, "converged": False, "candidates": 0}))
    # nothing found while hotter walkers still wait on the ramp: not a reason to stop
    assert explore_stop_reason(ExploreCounts.from_dict({**counts, "converged": False, "candidates": 0,
                                                        "waiting": 2})) is None


def test_rattled_starts_have_the_asked_spread_and_split_keeps_the_test_set_apart(tmp_path, ethanol_structures):
    from oedal.campaign.explore.starts import rattled_structures, starting_structures
    from oedal.campaign.settings import SplitSettings
    from oedal.campaign.split import split_explore
    from oedal.data.store import read_store, write_store
    from oedal.errors import InputError

    rattled = rattled_structures(["ethanol"], 200, 0.1, seed=3)
    start = starting_structures(["ethanol"])[0].positions
    shifts = rattled.positions.reshape(200, len(start), 3) - start
    sigma = 0.1 * np.arange(1, 201) / 200  # copy k rattled by rattle·(k+1)/n
    assert abs((shifts / sigma[:, None, None]).std() - 1) < 0.03 and abs(shifts.mean()) < 0.005  # 5,400 draws
    assert abs(shifts[150:].std() / shifts[:50].std() - 7.0) < 1.0  # the last quarter ≈ 7× the first's spread
    assert not rattled.has_labels
    from oedal.campaign.explore.checks import labelable

    limits = {"min_distance": 0.5, "min_bond_factor": 0.8}
    wild = rattled_structures(["ethanol"], 50, 0.4, seed=3, limits=limits)  # copies with short contacts redrawn
    numbers = starting_structures(["ethanol"])[0].numbers
    assert all(labelable(wild.positions[9 * k: 9 * k + 9], numbers, limits) for k in range(50))
    assert not all(labelable(p, numbers, limits) for p in rattled_structures(["ethanol"], 50, 0.4, seed=3).positions
                   .reshape(50, 9, 3))  # without the bound some copies do have one
    np.testing.assert_array_equal(rattled_structures(["ethanol"], 200, 0.1, seed=3).positions, rattled.positions)
    labeled = ethanol_structures.subset(np.arange(30))  # stand-ins for the oracle's labels
    write_store(tmp_path / "initial.h5", labeled)
    write_store(tmp_path / "md.h5", ethanol_structures.subset(np.arange(100, 150)))
    split_explore(tmp_path / "initial.h5", tmp_path / "md.h5", tmp_path / "it0", tmp_path / "test.h5",
                  SplitSettings(n_train=20, n_valid=10, n_test=40), seed=1)
    train, valid, test = (read_store(tmp_path / p) for p in ("it0/train.h5", "it0/valid.h5", "test.h5"))
    assert sorted([*train.ids, *valid.ids]) == list(range(30)) and len(train) == 20
    assert set(test.ids) <= set(range(100, 150)) and len(test) == 40 and not (tmp_path / "it0" / "pool.h5").exists()
    status = json.loads((tmp_path / "it0" / "status.json").read_text())
    assert (status["n_pool"], status["labels_spent"]) == (0, 30)
    write_store(tmp_path / "unlabeled.h5", rattled)
    with pytest.raises(InputError, match="no labels"):
        split_explore(tmp_path / "unlabeled.h5", tmp_path / "md.h5", tmp_path / "it1", tmp_path / "t.h5",
                      SplitSettings(n_train=20, n_valid=10, n_test=40), seed=1)


def test_short_contacts_are_judged_by_covalent_radii():
    from oedal.campaign.explore.checks import Frame, ShortContact, labelable

    def short_contact(positions, numbers, limits):
        return ShortContact.reason(Frame(positions, np.asarray(numbers), np.zeros((3, 3)), [False] * 3), limits)

    limits = {"min_distance": 0.5, "min_bond_factor": 0.7}  # C–H bound 0.7·(0.76 + 0.31) = 0.749 Å
    ch = lambda d: np.array([[0.0, 0.0, 0.0], [d, 0.0, 0.0]])  # noqa: E731
    assert short_contact(ch(0.74), [6, 1], limits).startswith("C–H 0.74 Å apart")
    assert short_contact(ch(0.76), [6, 1], limits) is None
    loose = {**limits, "min_distance": 0.4}
    assert short_contact(ch(0.45), [1, 1], loose) is None  # H–H: 0.7·0.62 = 0.434 Å
    assert short_contact(ch(0.42), [1, 1], loose).startswith("H–H 0.42 Å apart")
    assert short_contact(ch(0.45), [1, 1], limits).startswith("atoms 0.45 Å apart")  # below min_distance
    assert not labelable(ch(0.7), [6, 1], limits) and labelable(ch(0.7), [1, 1], limits)
    assert not labelable(ch(np.nan), [1, 1], limits)


def test_the_ramp_runs_the_lowest_temperatures_first_and_waiting_walkers_are_never_clean():
    from oedal.campaign.explore.walker import hold_back, resume_walkers

    atoms = Atoms("H2", positions=[[0, 0, 0], [0.74, 0, 0]])
    walkers = start_walkers([atoms], [1000.0, 300.0, 600.0], 2, seed=0)
    hold_back(walkers, 0)
    assert [w.status for w in walkers] == ["waiting", "waiting", "running", "running", "waiting", "waiting"]
    for w in walkers:
        w.status = "finished" if w.status == "running" else w.status
    counts = summary(walkers)
    assert counts["waiting"] == 4 and counts["clean"] == 2 and counts["clean_share"] == pytest.approx(1 / 3)
    again = resume_walkers(walkers)
    hold_back(again, 1)
    assert [w.temperature for w in again if w.status == "running"] == [300.0, 300.0, 600.0, 600.0]
    hold_back(again, 2)
    assert all(w.status == "running" for w in again[2:4]) and summary(resume_walkers(again))["waiting"] == 0


def test_the_initial_md_starts_in_the_basin_and_leaves_it(tmp_path):
    """explore.initial: md — frames of a short xTB MD of the start, unlabeled, one every interval steps."""
    from oedal.campaign.explore.starts import initial_structures, starting_structures
    from oedal.campaign.settings import ExploreSettings, SamplingSettings

    settings = ExploreSettings(initial="md", temperatures=[300.0, 1000.0], initial_interval=5)
    frames = initial_structures(settings, SamplingSettings(), 12, seed=3)
    assert len(frames) == 12 and not frames.has_labels and list(frames.ids) == list(range(12))
    start = starting_structures(["ethanol"])[0].positions
    rms = np.sqrt(((frames.positions.reshape(12, 9, 3) - start) ** 2).mean(axis=(1, 2)))
    assert rms[0] < 0.1 < rms[-4:].max()  # 2.5 fs in: still at the start; 30 fs at 1000 K: away from it
    again = initial_structures(settings, SamplingSettings(), 12, seed=3)
    np.testing.assert_allclose(again.positions, frames.positions, atol=1e-6)  # seeded (xTB: last-bit noise)


def test_strained_copies_of_a_cell_have_the_asked_principal_strains_and_mixed_adds_md_frames(tmp_path):
    """explore.strain: copy k of n of a cell is strained by a symmetric ε whose largest principal strain is
    strain·(k+1)/n (recovered from the cells: ε = h₀⁻¹ h − 1), its atoms at the same fractional positions up to
    the rattle; a molecule is never strained. explore.initial: mixed — ⌈n/2⌉ such copies, then MD frames (EMT)."""
    import ase.io
    from ase.build import bulk

    from oedal.campaign.explore.starts import initial_structures, rattled_structures
    from oedal.campaign.settings import ExploreSettings, SamplingSettings

    crystal = bulk("Cu", "fcc", a=3.61, cubic=True)
    path = tmp_path / "cu.extxyz"
    ase.io.write(path, crystal)
    copies = rattled_structures([str(path)], 8, 0.01, seed=3, strain=0.08)
    for k, atoms in enumerate(copies.to_atoms()):
        eps = np.linalg.solve(crystal.cell[:], atoms.cell[:]) - np.eye(3)
        np.testing.assert_allclose(eps, eps.T, atol=1e-12)
        assert np.abs(np.linalg.eigvalsh(eps)).max() == pytest.approx(0.08 * (k + 1) / 8, rel=1e-9)
        shift = (atoms.get_scaled_positions(wrap=False) - crystal.get_scaled_positions()) @ atoms.cell[:]
        assert np.abs(shift).max() < 6 * 0.01 * (k + 1) / 8  # only the rattle (6σ) moves atoms off the lattice
    molecule = rattled_structures(["ethanol"], 4, 0.01, seed=3, strain=0.08)
    np.testing.assert_array_equal(molecule.positions, rattled_structures(["ethanol"], 4, 0.01, seed=3).positions)

    settings = ExploreSettings(starts=[str(path)], initial="mixed", strain=0.05, rattle=0.02, temperatures=[600.0])
    frames = initial_structures(settings, SamplingSettings(molecule=str(path), potential={"kind": "emt"}), 7, seed=1)
    assert list(frames.ids) == list(range(7)) and not frames.has_labels
    volumes = [abs(np.linalg.det(c)) for c in frames.cell]
    assert len({round(v, 9) for v in volumes[:4]}) == 4  # four strained copies
    assert all(v == pytest.approx(crystal.get_volume(), rel=1e-12) for v in volumes[4:])  # then NVT MD frames


def test_the_md_pool_samples_every_walker_temperature_with_ids_of_its_own(tmp_path):
    """explore.random_pool md: the random baseline's pool is an MD of every start at every walker temperature
    (EMT copper, 2×2×2 cubic cells): pool_frames frames each, unlabeled, ids from MD_POOL_IDS (apart from the
    initial structures' 0 … n − 1 and the walkers' candidates), its MD steps counted, seeded. Equipartition: in the
    harmonic solid the mean squared displacement from the lattice is ∝ T, so the 800 K frames sit ≈ 8× as far
    (anharmonicity and 40 correlated frames: between 5× and 13×) from the sites as the 100 K ones."""
    import ase.io
    from ase.build import bulk

    from oedal.campaign.explore.starts import MD_POOL_IDS, md_pool
    from oedal.campaign.settings import ExploreSettings, SamplingSettings

    crystal = bulk("Cu", "fcc", a=3.61, cubic=True).repeat(2)
    path = tmp_path / "cu.extxyz"
    ase.io.write(path, crystal)
    settings = ExploreSettings(starts=[str(path)], temperatures=[100.0, 800.0], random_pool="md", pool_frames=40)
    sampling = SamplingSettings(molecule=str(path), timestep=2.0, interval=10, equilibration_steps=200,
                                potential={"kind": "emt"})
    pool, steps = md_pool(settings, sampling, seed=4)
    assert len(pool) == 80 and not pool.has_labels and steps == 2 * (200 + 40 * 10)
    assert list(pool.ids) == list(range(MD_POOL_IDS, MD_POOL_IDS + 80)) and MD_POOL_IDS > 10**9 * 1000
    shifts = pool.positions.reshape(80, 32, 3) - crystal.positions
    shifts -= shifts.mean(axis=1, keepdims=True)  # the cell's drift
    msd = (shifts ** 2).sum(axis=-1).mean(axis=1)  # (80,) Å²
    assert 5.0 < msd[40:].mean() / msd[:40].mean() < 13.0
    short = settings.model_copy(update={"pool_frames": 2}), sampling.model_copy(update={"equilibration_steps": 20})
    first = md_pool(*short, seed=4)[0].positions
    np.testing.assert_array_equal(md_pool(*short, seed=4)[0].positions, first)  # seeded
    assert not np.allclose(md_pool(*short, seed=5)[0].positions, first)


def ethanol_box(a: float = 7.0) -> Atoms:
    """Two ethanol molecules in a periodic cube of edge ``a`` Å."""
    from ase.build import molecule

    one = molecule("CH3CH2OH")
    one.center()
    two = one.copy()
    two.positions += a / 2
    box = one + two
    box.set_cell([a, a, a])
    box.pbc = True
    box.wrap()
    return box


def test_npt_walkers_follow_the_pressure_and_a_rerun_from_a_checkpoint_repeats_them(model_file, tmp_path):
    from oedal.campaign.explore.walker import write_walkers
    from oedal.gmnn.model import load_model
    from oedal.oed.uncertainty import model_head

    torch.set_num_threads(1)
    model = load_model(model_file)
    model.eval()
    head = model_head(model)
    limits = {**LIMITS, "max_temperature_factor": 100.0}

    def run(pressure, steps=100, walkers=None, checkpoint=None):
        walkers = walkers or start_walkers([ethanol_box()], [600.0], 1, seed=1, pressures=[pressure])
        records = []
        run_walkers(model, head, walkers, Dynamics(steps, 0.5, 0.01, 10, 1e-9, 1e9, limits),
                    0, records, checkpoint, checkpoint_seconds=0.0)
        return walkers, records

    volume = lambda cell: abs(np.linalg.det(np.asarray(cell)))  # noqa: E731
    v0 = volume(ethanol_box().cell)
    nvt, _ = run(None)
    assert volume(nvt[0].cell) == pytest.approx(v0, rel=1e-12)  # molecules' NVT path: the cell stays
    squeezed, records = run(50.0)
    free, _ = run(0.0)
    assert volume(squeezed[0].cell) < 0.98 * v0 and volume(squeezed[0].cell) < volume(free[0].cell)
    assert len(records) == 10 and volume(records[-1]["cell"]) == pytest.approx(volume(squeezed[0].cell))
    # a job killed after its 4th check and rerun from the checkpoint ends where the straight run does
    saved = tmp_path / "w.json"

    def killed_after_4(walkers, recs):
        write_walkers(saved, walkers, records=recs)
        if len(recs) == 4:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run(50.0, checkpoint=killed_after_4)
    data = json.loads(saved.read_text())
    resumed, rest = run(50.0, walkers=read_walkers([saved]))
    again = data["records"] + rest
    assert [r["id"] for r in again] == [r["id"] for r in records]
    np.testing.assert_array_equal([r["positions"] for r in again], [r["positions"] for r in records])  # bit for bit
    np.testing.assert_array_equal(resumed[0].cell, squeezed[0].cell)
    # a list of pressures: one walker per pressure, each at its own (the squeezed one as above, bit for bit)
    both = start_walkers([ethanol_box()], [600.0], 1, seed=1, pressures=[0.0, 50.0])
    assert [w.pressure for w in both] == [0.0, 50.0]
    run(None, walkers=both)
    assert volume(both[1].cell) < 0.98 * v0 and volume(both[1].cell) < volume(both[0].cell)
    # a walker file written before walkers carried their pressure resumes at the campaign's one pressure
    from oedal.campaign.explore.shard import with_pressure
    from oedal.campaign.settings import ExploreSettings

    for w in data["walkers"]:
        del w["pressure"]
    saved.write_text(json.dumps(data))
    old = read_walkers([saved])
    assert old[0].pressure is None
    assert with_pressure(old, ExploreSettings(pressure=50.0))[0].pressure == 50.0


def test_a_walker_stopped_at_its_first_check_resumes_from_where_it_started_not_where_it_stopped():
    from oedal.campaign.explore.walker import resume_walkers

    x0 = np.array([[0.0, 0.0, 0.0], [1.1, 0.0, 0.0], [0.0, 1.1, 0.0]])
    atoms = Atoms("CHH", positions=x0)
    walkers = start_walkers([atoms], [300.0], 1, seed=2)
    start = np.array(walkers[0].positions)
    hot = {**LIMITS, "max_temperature_factor": 1.0001}  # any kinetic temperature above T stops it
    for _ in range(3):  # round after round: the first check stops it, the next round starts where this one did
        walkers[0].velocities = (np.array(walkers[0].velocities) * 3.0).tolist()  # well above 300 K
        run_walkers(Harmonic(x0), ConstantHead(), walkers, Dynamics(50, 0.5, 0.01, 10, 1.0, 20.0, hot), 0, [])
        assert walkers[0].status == "stopped" and walkers[0].step == 10
        assert not np.allclose(walkers[0].positions, start)  # it moved for 10 steps before it stopped
        walkers = resume_walkers(walkers)
        np.testing.assert_array_equal(walkers[0].positions, start)


def test_a_walker_stuck_at_its_first_check_round_after_round_restarts_from_its_start_geometry():
    """restart_after = 2: stopped at the first check once, it resumes from its last accepted frame; twice
    in a row, it starts again at its start geometry with fresh Maxwell–Boltzmann velocities from its own
    random stream (the same on a rerun), and its count is reset. A stop at a later check is no stuck
    round; restart_after = 0 never restarts."""
    from oedal.campaign.explore.walker import resume_walkers

    atoms = Atoms("OHH", positions=[[0.0, 0.0, 0.0], [0.96, 0.0, 0.0], [-0.24, 0.93, 0.0]])
    w = start_walkers([atoms], [600.0], 1, seed=4)[0]
    elsewhere = {"positions": (np.array(w.positions) + 0.05).tolist(), "velocities": (np.array(w.velocities) * 0.5).tolist(),
                 "cell": w.cell, "cell_momentum": None}

    def stopped_at(w, checks: int):
        w.status, w.accepted = "stopped", elsewhere
        w.checks = [[10 * (k + 1), 30.0, None, "stopped" if k == checks - 1 else "accurate"] for k in range(checks)]
        return w

    once = resume_walkers([stopped_at(w, 1)], restart_after=2)[0]
    assert once.stuck == 1 and once.positions == elsewhere["positions"]
    twice = resume_walkers([stopped_at(once, 1)], restart_after=2)[0]
    assert twice.stuck == 0 and twice.status == "running"
    np.testing.assert_array_equal(twice.positions, atoms.positions)
    v = np.array(twice.velocities)
    assert not np.allclose(v, elsewhere["velocities"]) and not np.allclose(v, w.velocities)
    masses = atoms.get_masses()[:, None]
    np.testing.assert_allclose((masses * v).sum(0), 0.0, atol=1e-12)  # no centre-of-mass drift
    assert twice.rng != once.rng  # the stream moved on: the next round's noise is new too
    again = resume_walkers([stopped_at(dataclasses.replace(once), 1)], restart_after=2)[0]
    np.testing.assert_array_equal(again.velocities, twice.velocities)  # a rerun draws the same
    later = resume_walkers([stopped_at(dataclasses.replace(once), 3)], restart_after=2)[0]
    assert later.stuck == 0 and later.positions == elsewhere["positions"]
    never = resume_walkers([stopped_at(dataclasses.replace(once), 1)], restart_after=0)[0]
    assert never.stuck == 2 and never.positions == elsewhere["positions"]


def test_each_sanity_check_owns_its_limit_keys_and_they_reach_the_walkers():
    """The checks are a registry (campaign/explore/checks.py): each check's keys are keys of the explore section
    with the check's default and bounds, the walkers' Dynamics carry them with the model's cutoff, and the
    first failing check in registry order gives the reason."""
    from pydantic import ValidationError

    from oedal.campaign.explore.checks import CHECKS, Frame, limit_fields, sanity_reason
    from oedal.campaign.explore.shard import dynamics
    from oedal.campaign.settings import ExploreSettings

    for check in CHECKS:
        for key, field in check.keys.items():
            assert ExploreSettings.model_fields[key].default == field.default, key
    with pytest.raises(ValidationError, match="max_force"):
        ExploreSettings(max_force=-1.0)
    limits = dynamics(ExploreSettings(max_force=12.5), cutoff=4.0).limits
    assert limits["max_force"] == 12.5 and limits["cutoff"] == 4.0 and set(limit_fields()) <= set(limits)
    x = np.array([[0.0, 0.0, 0.0], [1.2, 0.0, 0.0]])
    frame = Frame(x, np.array([6, 8]), np.zeros((3, 3)), [False] * 3, np.array([[13.0, 0, 0], [-13.0, 0, 0]]),
                  -1.0, -1.0, 300.0, 300.0)
    assert sanity_reason(frame, limits) == "a force of 13.0 eV/Å (> 12.5)"
    assert sanity_reason(frame._replace(temperature=1e4), limits) == "a force of 13.0 eV/Å (> 12.5)"  # the order
    assert sanity_reason(frame._replace(forces=np.zeros((2, 3)), temperature=1e4), limits).startswith("a temperature")


def _untrained_ethanol_model(ethanol_structures):
    """A small GM-NN, its σ_Z, μ_Z fitted to the ethanol energies (no training: smooth, finite forces)."""
    from oedal.gmnn.model import GMNN
    from oedal.settings import ModelSettings

    torch.manual_seed(0)
    s = ethanol_structures.subset(np.arange(50))
    model = GMNN(ModelSettings.model_validate({"descriptor": {"r_cut": 4.0, "n_basis": 5, "n_radial": 3},
                                               "hidden": [32, 16]}), [1, 6, 8])
    model.init_scale_shift(s.numbers, s.n_atoms, s.energy)
    return model.eval()


def _walk(model, ethanol_structures, steps: int, skin: float) -> np.ndarray:
    """Positions (N, 3) after ``steps`` BAOAB steps of 4 ethanol walkers at 1000 K (a check every 10)."""
    atoms = ethanol_structures.subset(np.arange(2)).to_atoms()
    ws = start_walkers(atoms, [1000.0], 2, seed=3)
    dyn = Dynamics(steps=steps, timestep=0.5, friction=0.01, check_every=10, low=1.0, high=20.0, limits=LIMITS,
                   skin=skin)
    run_walkers(model, ConstantHead(), ws, dyn, 0, [])
    return np.concatenate([w.arrays()[0] for w in ws])


def _step_bound(forces_delta: float, steps: int) -> float:
    """|Δx| (Å) after ``steps`` steps from a force difference ``forces_delta`` (eV/Å) in every step: the kicks
    of n steps add up to Σ_k k·dt²·δF/m = ½ n(n+1) dt² δF/m (m the lightest mass; a few steps, no chaos yet)."""
    from ase.data import atomic_masses

    dt = 0.5 * units.fs
    return 0.5 * steps * (steps + 1) * dt * dt * forces_delta / atomic_masses[1]


def _rounding(model, ethanol_structures) -> float:
    """The float32 model's rounding of its forces (eV/Å), measured: max |F(float32) − F(float64 copy)| on
    two frames. A different order of the same float sums (another pair list, another device) moves the
    forces by that much, not more."""
    import copy

    batch64 = model.batch(ethanol_structures.subset(np.arange(2)), dtype=torch.float64)
    twin = copy.deepcopy(model).double()
    twin.dtype = torch.float64
    return float((model.evaluate(batch64).forces.double() - twin.evaluate(batch64).forces).abs().max())


@pytest.mark.parametrize("skin", [0.1, 0.5])
def test_the_skin_pair_list_gives_the_trajectory_of_a_list_rebuilt_every_step(ethanol_structures, skin):
    """The batched walkers keep their neighbour list while no atom has moved skin/2: pairs beyond r_c add
    exactly nothing, so 40 steps end where a list rebuilt every step (skin 0: the walkers before the skin)
    ends, to the rounding of the float32 model carried through the steps."""
    from oedal.campaign.explore import dynamics as D

    model = _untrained_ethanol_model(ethanol_structures)
    builds = []
    real = D.make_batch

    def counting(*args, **kwargs):
        builds.append(1)
        return real(*args, **kwargs)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(D, "make_batch", counting)
        x_skin = _walk(model, ethanol_structures, 40, skin)
    n_skin, builds[:] = len(builds), []
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(D, "make_batch", counting)
        x_every = _walk(model, ethanol_structures, 40, 0.0)
    assert len(builds) == 41 and 1 < n_skin < 41  # rebuilt when due, not every step (here 24 and 7 times)
    bound = _step_bound(_rounding(model, ethanol_structures), 40)
    assert 0 < bound < 1e-3 and np.abs(x_skin - x_every).max() <= bound


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_walkers_on_cuda_follow_the_cpu_trajectory(ethanol_structures):
    """The step loop on the GPU (tensors on the device, the noise from the walkers' own streams): 20 steps
    end where the CPU's end, to the force difference of the two devices carried through the steps."""
    import copy

    model = _untrained_ethanol_model(ethanol_structures)
    gpu = copy.deepcopy(model).to("cuda")
    batch = model.batch(ethanol_structures.subset(np.arange(2)), dtype=torch.float64)
    delta = float((model.evaluate(batch).forces.double()
                   - gpu.evaluate(gpu.batch(ethanol_structures.subset(np.arange(2)), dtype=torch.float64))
                   .forces.double().cpu()).abs().max())
    delta = max(delta, _rounding(model, ethanol_structures))
    x_cpu, x_gpu = _walk(model, ethanol_structures, 20, 0.5), _walk(gpu, ethanol_structures, 20, 0.5)
    assert np.abs(x_cpu - x_gpu).max() <= _step_bound(delta, 20)
