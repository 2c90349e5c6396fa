"""Stress labels on the oracle side: an ASE oracle gives σ = (1/V) ∂E/∂ε (eV/Å³, ASE's sign) for a cell periodic
in all three directions, and nothing for a molecule or a slab; the labeled store, the label cache (bit for bit,
an old schema migrated, a damaged stress blob quarantined), export and replay carry it."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import ase.io
import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk, fcc111, molecule
from ase.calculators.emt import EMT, parameters

from oedal.data.identity import content_hashes, hash_text
from oedal.data.store import StoreReader, read_store, write_store
from oedal.data.structures import Structures
from oedal.oracles import LabelCache, OracleFailure, export_labels, get_oracle, label_store, level_of, oracle_settings
from oedal.oracles.base import OracleResult, check_label, stress_of
from oedal.oracles.cache import Geometry, Label, add_stores, check_cache
from oedal.oracles.cache.entries import encode_pbc
from oedal.oracles.cache.schema import SCHEMA_VERSION
from tolerances import tolerance

EMT_SETTINGS = oracle_settings(kind="emt")
EMT_LEVEL = level_of(EMT_SETTINGS)
STRAIN = np.array([[0.010, 0.004, -0.003], [0.004, -0.020, 0.002], [-0.003, 0.002, 0.015]])  # symmetric, dimensionless


def strained_cell(symbol: str, a: float, seed: int) -> Atoms:
    """A 2×2×2 cubic fcc supercell (32 atoms), rattled by 0.05 Å and strained by STRAIN: a stress in every
    component."""
    atoms = bulk(symbol, "fcc", a=a, cubic=True).repeat((2, 2, 2))
    atoms.positions += np.random.default_rng(seed).normal(0.0, 0.05, atoms.positions.shape)  # Å
    atoms.set_cell(atoms.cell.array @ (np.eye(3) + STRAIN), scale_atoms=True)
    return atoms


def emt_stress(atoms: Atoms) -> np.ndarray:
    """ASE's EMT stress of ``atoms``, (3, 3) eV/Å³, from a fresh calculator."""
    atoms = atoms.copy()
    atoms.calc = EMT()
    return atoms.get_stress(voigt=False)


def write_shard(path: Path, frames: list[Atoms]) -> Path:
    write_store(path, Structures.from_atoms(frames, ids=np.arange(len(frames)) + 10))
    return path


def mixed_frames() -> list[Atoms]:
    """[strained Cu cell, strained Al cell, ethanol molecule, Cu(111) slab (pbc T T F)]."""
    ethanol = molecule("CH3CH2OH")
    slab = fcc111("Cu", (2, 2, 3), vacuum=5.0)
    return [strained_cell("Cu", 3.6, 0), strained_cell("Al", 4.05, 1), ethanol, slab]


def central_difference(atoms: Atoms, h: float) -> np.ndarray:
    """(1/V) ∂E/∂ε_ij by central differences of step ``h`` along the symmetric strain ε_ij = ε_ji = h/2
    (dE/dh = V σ_ij for a symmetric σ); (3, 3) eV/Å³."""
    volume = atoms.get_volume()  # Å³
    out = np.zeros((3, 3))
    for i in range(3):
        for j in range(i, 3):
            eps = np.zeros((3, 3))
            eps[i, j] += h / 2
            eps[j, i] += h / 2
            energies = []
            for sign in (1, -1):
                moved = atoms.copy()
                moved.set_cell(atoms.cell.array @ (np.eye(3) + sign * eps), scale_atoms=True)
                moved.calc = EMT()
                energies.append(moved.get_potential_energy())  # eV
            out[i, j] = out[j, i] = (energies[0] - energies[1]) / (2 * h * volume)
    return out


# ---- (a), (e) the ASE oracle ----------------------------------------------------------------------------


def test_an_emt_labeled_strained_cell_has_ases_stress_and_the_strain_derivative_of_its_energy(tmp_path):
    cell = strained_cell("Cu", 3.6, 0)
    report = label_store(write_shard(tmp_path / "s.h5", [cell]), tmp_path / "l.h5", None, EMT_SETTINGS)
    assert report.n_labeled == 1
    stress = read_store(tmp_path / "l.h5").stress[0]  # (3, 3) eV/Å³
    np.testing.assert_array_equal(stress, emt_stress(cell))  # the same computation in one process: exact
    assert np.abs(stress).min() > 1e-3  # every component is really there (the test below could fail)
    # Central differences err by c h² (c ∝ ∂³E/∂ε³). With steps h and 2h, D(2h) − D(h) ≈ 3 c h², so
    # max_ij |D(2h) − D(h)| bounds the error of D(h) in every component with a factor ≈ 3 to spare. Roundoff of
    # the energy difference adds ULPS·eps·S/(h V), S = Σ_i (|E_i| + |E0_i|) the magnitude summed into E.
    h = 5e-4
    d_h, d_2h = central_difference(cell, h), central_difference(cell, 2 * h)
    fresh = cell.copy()
    fresh.calc = EMT()
    fresh.get_potential_energy()
    summed = np.abs(fresh.calc.results["energies"]).sum() + sum(abs(parameters[s][0]) for s in cell.symbols)  # eV
    tol = np.abs(d_2h - d_h).max() + tolerance(summed / (h * cell.get_volume()))
    assert tol < 1e-3 * np.abs(stress).max()  # the FD check is sharp: a wrong sign, V or factor ½ fails it
    np.testing.assert_allclose(stress, d_h, rtol=0, atol=tol)


def test_a_molecule_and_a_slab_get_no_stress_beside_cells_and_a_shard_of_molecules_none_at_all(tmp_path):
    frames = mixed_frames()
    label_store(write_shard(tmp_path / "s.h5", frames), tmp_path / "l.h5", None, EMT_SETTINGS)
    stress = read_store(tmp_path / "l.h5").stress  # (4, 3, 3) eV/Å³
    np.testing.assert_array_equal(stress[0], emt_stress(frames[0]))
    np.testing.assert_array_equal(stress[1], emt_stress(frames[1]))
    assert np.isnan(stress[2]).all() and np.isnan(stress[3]).all()  # molecule, slab: no stress label
    label_store(write_shard(tmp_path / "m.h5", frames[2:]), tmp_path / "ml.h5", None, EMT_SETTINGS)
    with StoreReader(tmp_path / "ml.h5") as reader:
        assert not reader.has_stress
    result = get_oracle(EMT_SETTINGS).label(frames[2])
    energy, forces = result  # the pair every caller unpacks
    assert stress_of(result) is None and forces.shape == (9, 3)


def test_check_label_validates_a_stress_and_keeps_its_old_answer_without_one():
    forces = np.zeros((2, 3))
    assert check_label(-1.0, forces, 2) == (-1.0, forces) and stress_of(check_label(-1.0, forces, 2)) is None
    ok = check_label(-1.0, forces, 2, stress=np.eye(3))
    assert isinstance(ok, OracleResult) and ok.stress.shape == (3, 3)
    with pytest.raises(OracleFailure, match=r"stress has shape \(6,\)"):
        check_label(-1.0, forces, 2, stress=np.zeros(6))
    with pytest.raises(OracleFailure, match="non-finite stress"):
        check_label(-1.0, forces, 2, stress=np.full((3, 3), np.nan))


# ---- (b), (c) the label cache ---------------------------------------------------------------------------


def test_the_stress_survives_the_label_cache_export_and_refill_bit_for_bit(tmp_path):
    cache = tmp_path / "labels.sqlite"
    shard = write_shard(tmp_path / "s.h5", mixed_frames())
    label_store(shard, tmp_path / "l1.h5", None, EMT_SETTINGS, cache=cache)
    first = read_store(tmp_path / "l1.h5").stress
    report = label_store(shard, tmp_path / "l2.h5", None, EMT_SETTINGS, cache=cache)
    assert report.n_oracle_calls == 0
    np.testing.assert_array_equal(read_store(tmp_path / "l2.h5").stress, first)  # NaN rows in place too
    with sqlite3.connect(cache) as con:
        blobs = [b for (b,) in con.execute("SELECT stress FROM labels ORDER BY row")]
    assert [b is None for b in blobs] == [False, False, True, True]
    assert blobs[0] == np.ascontiguousarray(first[0], "<f8").tobytes()
    assert export_labels(cache, tmp_path / "out.extxyz") == 4
    exported = Structures.from_atoms(ase.io.read(tmp_path / "out.extxyz", index=":"))
    np.testing.assert_array_equal(exported.stress, first)  # Voigt in the frames, the same 3×3 back
    refilled = tmp_path / "refilled.sqlite"
    assert add_stores(refilled, [tmp_path / "l1.h5"]).labels == 4
    with LabelCache(refilled) as db:
        hashes = [hash_text(h) for h in content_hashes(read_store(shard))]
        labels = db.lookup(hashes, EMT_LEVEL)
    np.testing.assert_array_equal(labels[hashes[1]].stress, first[1])
    assert labels[hashes[2]].stress is None


def _schema_2_cache(path) -> None:
    """A cache as oedal of schema 2 wrote it: a new one turned back (no stress column in either table), as
    tests/test_cache_trust.py turns one back to schema 1; the levels table holds the EMT level."""
    with LabelCache(path) as db:
        db.register(EMT_LEVEL)
    with sqlite3.connect(path) as con:
        con.executescript("ALTER TABLE labels DROP COLUMN stress; ALTER TABLE quarantine DROP COLUMN stress; "
                          "UPDATE meta SET value = '2' WHERE key = 'schema';")


def _insert_row(con: sqlite3.Connection, atoms: Atoms, energy: float, forces: np.ndarray, key: str | None = None,
                stress: bytes | None = None, with_stress: bool = True) -> None:
    """A success row written past oedal (by oedal of schema 2 when ``with_stress`` is false)."""
    g = Geometry(atoms.numbers, atoms.positions, atoms.cell.array, atoms.pbc)
    values = [key or g.hash(), EMT_LEVEL.key, energy, np.asarray(forces, "<f8").tobytes(),
              np.asarray(g.numbers, "<u2").tobytes(), np.asarray(g.positions, "<f8").tobytes(),
              np.asarray(g.cell, "<f8").tobytes(), encode_pbc(g.pbc)]
    columns = ("structure, level, ok, energy, forces, reason, attempts, numbers, positions, cell, pbc, oracle, seconds, "
               "created")
    marks = "?,?,1,?,?,'',1,?,?,?,?,'planted',0,0"
    if with_stress:
        columns, marks, values = columns + ", stress", marks + ",?", values + [stress]
    con.execute(f"INSERT INTO labels ({columns}) VALUES ({marks})", values)


def test_a_schema_2_cache_is_migrated_keeps_its_labels_and_serves_them_without_stress(tmp_path):
    cache, cell = tmp_path / "old.sqlite", strained_cell("Cu", 3.6, 0)
    shard = write_shard(tmp_path / "s.h5", [cell])
    cell = read_store(shard).to_atoms()[0]  # the geometry as stored (its hash is the key)
    calc = cell.copy()
    calc.calc = EMT()
    energy, forces = calc.get_potential_energy(), calc.get_forces()
    _schema_2_cache(cache)
    with sqlite3.connect(cache) as con:
        _insert_row(con, cell, energy, forces, with_stress=False)
    report = label_store(shard, tmp_path / "l.h5", None, EMT_SETTINGS, cache=cache)
    assert (report.n_cached, report.n_oracle_calls) == (1, 0)  # kept, not recomputed
    labeled = read_store(tmp_path / "l.h5")
    assert labeled.energy[0] == energy and labeled.stress is None  # served as stored: without stress
    fresh = tmp_path / "fresh.sqlite"
    LabelCache(fresh).close()
    with sqlite3.connect(cache) as con, sqlite3.connect(fresh) as new:
        assert con.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone() == (str(SCHEMA_VERSION),)
        for table in ("labels", "quarantine"):  # a new file's column order: nothing depends on how a file was made
            assert (con.execute(f"PRAGMA table_info({table})").fetchall()
                    == new.execute(f"PRAGMA table_info({table})").fetchall())
    with LabelCache(cache) as db:  # the migrated file takes a stress, and moves an entry aside whole
        assert db.quarantine([1], "by hand") == 1
        stress = emt_stress(cell)
        g = Geometry(cell.numbers, cell.positions, cell.cell.array, cell.pbc)
        stored = db.store(g.hash(), EMT_LEVEL, g, Label(True, energy, forces, stress=stress), "emt", 0.0)
        np.testing.assert_array_equal(stored.stress, stress)
    with sqlite3.connect(cache) as con:
        assert con.execute("SELECT row, why, stress FROM quarantine").fetchall() == [(1, "by hand", None)]


@pytest.mark.parametrize("damage", ["8 values", "12 values", "NaN", "inf", "71 bytes"])
def test_a_cached_label_with_a_damaged_stress_is_quarantined_and_computed_again(tmp_path, caplog, damage):
    cache = tmp_path / "labels.sqlite"
    shard = write_shard(tmp_path / "s.h5", [strained_cell("Cu", 3.6, 0)])
    cell = read_store(shard).to_atoms()[0]
    stress = emt_stress(cell).reshape(-1)  # 9 values eV/Å³
    blob = {"8 values": stress[:8].tobytes(), "12 values": np.r_[stress, stress[:3]].tobytes(),
            "NaN": np.r_[stress[:4], np.nan, stress[5:]].tobytes(), "inf": np.r_[np.inf, stress[1:]].tobytes(),
            "71 bytes": stress.tobytes()[:71]}[damage]
    with LabelCache(cache) as db:
        db.register(EMT_LEVEL)
    with sqlite3.connect(cache) as con:
        _insert_row(con, cell, -1.0, np.zeros((len(cell), 3)), stress=blob)
    assert [p.entry.row for p in check_cache(cache)[1]] == [1]
    report = label_store(shard, tmp_path / "l.h5", None, EMT_SETTINGS, cache=cache)
    assert (report.n_cached, report.n_oracle_calls) == (0, 1)
    assert "entry row 1" in caplog.text and "moved to the quarantine" in caplog.text
    labeled = read_store(tmp_path / "l.h5")
    assert labeled.energy[0] != -1.0
    np.testing.assert_array_equal(labeled.stress[0], stress.reshape(3, 3))
    with sqlite3.connect(cache) as con:
        assert con.execute("SELECT row, oracle FROM quarantine").fetchall() == [(1, "planted")]
    assert check_cache(cache)[1] == []


# ---- (d) replay ---------------------------------------------------------------------------------------


def test_replay_serves_the_source_stress_and_a_nan_row_as_none(tmp_path):
    source = Structures.from_atoms(mixed_frames(), ids=np.arange(4) + 20)
    rng = np.random.default_rng(3)
    source.energy = rng.normal(-50.0, 5.0, 4)  # eV: labels only the source knows
    source.forces = rng.normal(0.0, 1.0, (source.n_atoms_total, 3))  # eV/Å
    sigma = rng.normal(0.0, 1e-2, (4, 3, 3))
    source.stress = (sigma + sigma.transpose(0, 2, 1)) / 2  # eV/Å³
    source.stress[2] = np.nan  # the molecule: no stress label
    write_store(tmp_path / "source.h5", source)
    write_store(tmp_path / "pool.h5", source.subset([3, 0, 2]).without_labels())
    settings = oracle_settings(kind="replay", source=str(tmp_path / "source.h5"))
    report = label_store(tmp_path / "pool.h5", tmp_path / "l.h5", None, settings)
    assert report.n_labeled == 3
    np.testing.assert_array_equal(read_store(tmp_path / "l.h5").stress, source.stress[[3, 0, 2]])
    oracle = get_oracle(settings)
    atoms = source.without_labels().to_atoms()
    served = [stress_of(oracle.label(atoms[k])) for k in (1, 2)]
    np.testing.assert_array_equal(served[0], source.stress[1])
    assert served[1] is None
