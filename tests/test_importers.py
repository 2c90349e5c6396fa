"""Importers on the real reference data, export round trips, and every bad-input error."""

from __future__ import annotations

from pathlib import Path

import ase.io
import numpy as np
import pytest
from ase import Atoms, units
from ase.calculators.singlepoint import SinglePointCalculator

from oedal.cli import main
from oedal.data import export_file, import_file, read_store, validate_structures
from oedal.data.importers import qm9_data_dir
from oedal.errors import InputError

KCAL = units.kcal / units.mol


def test_gmnn_ethanol_units_and_first_frame(shared_data: Path) -> None:
    path = shared_data / "gmnn_ethanol" / "ethanol_1000K.npz"
    s = import_file(path, limit=20)
    raw = np.load(path)
    assert len(s) == 20 and (s.n_atoms == 9).all()
    np.testing.assert_array_equal(s.positions[:9], raw["R"][0].astype(np.float64))
    np.testing.assert_array_equal(s.numbers[:9], [1, 6, 1, 1, 6, 1, 1, 8, 1])
    assert raw["E"][0, 0] == pytest.approx(-97_137, abs=30)  # kcal/mol
    assert s.energy[0] == pytest.approx(float(raw["E"][0, 0]) * KCAL, rel=1e-12)
    assert s.energy[0] == pytest.approx(-4212.2, abs=1.5)  # eV
    np.testing.assert_allclose(s.forces[:9], raw["F"][0].astype(np.float64) * KCAL, rtol=1e-12)
    np.testing.assert_array_equal(s.ids, np.arange(20))
    assert not s.pbc.any()


def test_ethanol_fixture(ethanol_structures) -> None:
    assert len(ethanol_structures) == 300 and ethanol_structures.has_forces


def test_wbe_periodic_cells(shared_data: Path) -> None:
    s = import_file(shared_data / "wbe" / "WBe_PRB2019_JSON.tar.gz", limit=40)
    assert len(s) == 40 and s.pbc.all() and s.has_forces
    assert (np.abs(np.linalg.det(s.cell)) > 1).all()
    per_atom = s.energy / s.n_atoms
    assert ((per_atom > -14) & (per_atom < -2)).all()  # eV/atom for W and Be
    assert set(np.unique(s.numbers)) <= {4, 74}
    # first member by name: Elast_BCC_Shear/Elastic_BCC_243.json is not first alphabetically, so check order
    assert s.ids.tolist() == list(range(40))


def test_qm9_first_molecules() -> None:
    s = import_file("qm9", "qm9", limit=5)
    assert s.n_atoms.tolist() == [5, 4, 3, 4, 3]
    np.testing.assert_array_equal(s.numbers[:5], [6, 1, 1, 1, 1])
    np.testing.assert_allclose(s.positions[0], [-0.0126981359, 1.0858041578, 0.0080009958])
    assert s.energy[0] == pytest.approx(-40.47893 * units.Hartree, rel=1e-12)
    assert s.forces is None and qm9_data_dir().is_dir()


def test_rmd17_npz(tmp_path: Path, ethanol_structures) -> None:
    e = ethanol_structures.subset(range(4))
    path = tmp_path / "rmd17_ethanol.npz"
    np.savez(path, coords=e.positions.reshape(4, 9, 3), energies=e.energy / KCAL,
             forces=e.forces.reshape(4, 9, 3) / KCAL, nuclear_charges=e.numbers[:9])
    s = import_file(path)
    np.testing.assert_allclose(s.energy, e.energy, rtol=1e-12)
    np.testing.assert_allclose(s.forces, e.forces, rtol=1e-12)
    np.testing.assert_array_equal(s.numbers, e.numbers)


@pytest.mark.parametrize("suffix", [".extxyz", ".db"])
def test_ase_round_trip(tmp_path: Path, ethanol_structures, suffix: str) -> None:
    e = ethanol_structures.subset(range(5))
    ase.io.write(tmp_path / f"x{suffix}", e.to_atoms())
    s = import_file(tmp_path / f"x{suffix}")
    np.testing.assert_allclose(s.positions, e.positions, atol=1e-8)
    np.testing.assert_allclose(s.energy, e.energy, rtol=1e-12)
    np.testing.assert_allclose(s.forces, e.forces, atol=1e-8)


def test_periodic_extxyz_and_export_import_round_trip(tmp_path: Path, shared_data: Path) -> None:
    w = import_file(shared_data / "wbe" / "WBe_PRB2019_JSON.tar.gz", limit=6)
    export_file(w, tmp_path / "w.extxyz")
    back = import_file(tmp_path / "w.extxyz")
    np.testing.assert_allclose(back.cell, w.cell, atol=1e-10)
    np.testing.assert_array_equal(back.pbc, w.pbc)
    np.testing.assert_array_equal(back.ids, w.ids)
    np.testing.assert_allclose(back.energy, w.energy, rtol=1e-12)


def test_cli_import_export_info(tmp_path: Path, shared_data: Path, capsys: pytest.CaptureFixture) -> None:
    src = shared_data / "gmnn_ethanol" / "ethanol_500K.npz"
    assert main(["import", str(src), "--out", str(tmp_path / "a.h5"), "--limit", "30"]) == 0
    assert main(["export", str(tmp_path / "a.h5"), "--out", str(tmp_path / "a.extxyz")]) == 0
    assert main(["import", str(tmp_path / "a.extxyz"), "--out", str(tmp_path / "b.h5"), "--format", "ase"]) == 0
    a, b = read_store(tmp_path / "a.h5"), read_store(tmp_path / "b.h5")
    np.testing.assert_allclose(b.positions, a.positions, atol=1e-8)
    np.testing.assert_allclose(b.energy, a.energy, rtol=1e-12)
    capsys.readouterr()
    assert main(["info", str(tmp_path / "b.h5"), "--json"]) == 0
    out = capsys.readouterr().out
    assert '"n_structures": 30' in out and '"has_forces": true' in out and '"O": 30' in out


# ---------------------------------------------------------------- bad input


def ethanol_npz(tmp_path: Path, shared_data: Path, name: str = "bad.npz", n: int = 6, **change) -> Path:
    raw = dict(np.load(shared_data / "gmnn_ethanol" / "ethanol_1000K.npz"))
    data = {k: raw[k][:n].copy() for k in ("R", "E", "F", "Z", "N")}
    for key, fn in change.items():
        data[key] = fn(data[key])
    np.savez(tmp_path / name, **data)
    return tmp_path / name


def _set(arr: np.ndarray, index: tuple, value) -> np.ndarray:
    arr[index] = value
    return arr


BAD_NPZ = {
    "nan": (dict(R=lambda r: _set(r, (3, 2, 1), np.nan)), 3, "not finite"),
    "inf": (dict(F=lambda f: _set(f, (4, 0, 0), np.inf)), 4, "not finite"),
    "energy-nan": (dict(E=lambda e: _set(e, (2, 0), np.nan)), 2, "energy is not finite"),
    "shape": (dict(F=lambda f: f[:, :8]), 0, "shape mismatch"),
    "close": (dict(R=lambda r: _set(r, (5, 3), r[5, 1] + 0.2)), 5, "closer than"),
    "element": (dict(Z=lambda z: _set(z, (1, 4), 92)), 1, "unknown element U"),
}


@pytest.mark.parametrize("case", sorted(BAD_NPZ))
def test_bad_npz_names_file_and_structure(tmp_path: Path, shared_data: Path, case: str) -> None:
    change, index, text = BAD_NPZ[case]
    path = ethanol_npz(tmp_path, shared_data, f"{case}.npz", **change)
    known = [1, 6, 8] if case == "element" else None
    with pytest.raises(InputError) as err:
        import_file(path, known_numbers=known)
    msg = str(err.value)
    assert str(path) in msg and f"structure {index}" in msg and text in msg, msg
    out = tmp_path / "out.h5"
    argv = ["import", str(path), "--out", str(out)] + (["--elements", "H,C,O"] if known else [])
    assert main(argv) == 2
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"{case}.npz"]


def test_min_distance_is_settable(tmp_path: Path, shared_data: Path) -> None:
    path = ethanol_npz(tmp_path, shared_data, R=lambda r: _set(r, (5, 3), r[5, 1] + 0.2))
    assert len(import_file(path, min_distance=0.1)) == 6
    assert main(["import", str(path), "--out", str(tmp_path / "o.h5"), "--min-distance", "0.1"]) == 0
    with pytest.raises(InputError, match="structure 0"):
        import_file(ethanol_npz(tmp_path, shared_data, "ok.npz"), min_distance=1.5)


def test_close_periodic_image(tmp_path: Path) -> None:
    frames = [Atoms("W2", positions=[[0.5, 0.5, 0.5], [2.0, 2.0, 2.0]], cell=np.eye(3) * 4, pbc=True),
              Atoms("W2", positions=[[0.1, 2.0, 2.0], [3.9, 2.0, 2.0]], cell=np.eye(3) * 4, pbc=True)]
    path = tmp_path / "pbc.extxyz"
    ase.io.write(path, frames)
    with pytest.raises(InputError) as err:
        import_file(path)
    assert str(path) in str(err.value) and "structure 1" in str(err.value) and "0.200 Å" in str(err.value)
    # the same pair without periodicity is fine; a self image in a thin cell is not
    frames[1].pbc = False
    ase.io.write(path, frames)
    assert len(import_file(path)) == 2
    thin = Atoms("W", positions=[[0, 0, 0]], cell=[[0.3, 0, 0], [0, 4, 0], [0, 0, 4]], pbc=True)
    ase.io.write(path, [frames[0], thin])
    with pytest.raises(InputError, match="structure 1"):
        import_file(path)


def test_mixed_pbc_slab_uses_neighbour_list(tmp_path: Path) -> None:
    slab = Atoms("W2", positions=[[0.1, 1, 1], [2.9, 1, 1]], cell=[3, 3, 0], pbc=[True, True, False])
    with pytest.raises(InputError, match="structure 0.*0.200 Å"):
        validate_structures(import_file_atoms([slab]), "slab")


def import_file_atoms(frames):
    from oedal.data import Structures

    return Structures.from_atoms(frames)


def test_missing_labels(tmp_path: Path) -> None:
    a = Atoms("H2", positions=[[0, 0, 0], [0, 0, 0.74]])
    b = a.copy()
    a.calc = SinglePointCalculator(a, energy=-1.0)
    path = tmp_path / "labels.extxyz"
    ase.io.write(path, [a, b])
    with pytest.raises(InputError) as err:
        import_file(path)
    assert str(path) in str(err.value) and "structure 1" in str(err.value) and "missing labels" in str(err.value)
    ase.io.write(path, [b, b])
    assert len(import_file(path)) == 2
    with pytest.raises(InputError, match=r"labels.extxyz: structure 0.*missing labels"):
        import_file(path, require_labels=True)
    out = tmp_path / "o.h5"
    assert main(["import", str(path), "--out", str(out), "--require-labels"]) == 2 and not out.exists()


def test_unknown_format_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="unknown format"):
        import_file(tmp_path / "x.xyz", "nope")
    assert main(["import", str(tmp_path / "none.npz"), "--out", str(tmp_path / "o.h5")]) == 2


def test_cli_subprocess_exit_code(tmp_path: Path, shared_data: Path) -> None:
    import subprocess
    import sys

    path = ethanol_npz(tmp_path, shared_data, R=lambda r: _set(r, (2, 0, 0), np.inf))
    out = tmp_path / "o.h5"
    proc = subprocess.run([sys.executable, "-m", "oedal", "import", str(path), "--out", str(out)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "structure 2" in proc.stderr and str(path) in proc.stderr
    assert not out.exists()
