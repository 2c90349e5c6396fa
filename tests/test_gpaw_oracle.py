"""The GPAW oracle (plane-wave PAW DFT, DESIGN §12), the materials campaign's labeling engine: its forces are the
position derivative and its stress the strain derivative of its own energy, on the 2-atom Si cell. GPAW is built
by `make gpaw` when missing (as the report test installs Chromium): the suite tests the oracle a user runs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from ase.build import bulk

from oedal.oracles.base import OracleFailure
from oedal.oracles.gpaw import GPAWSettings, import_gpaw, k_mesh
from oedal.oracles.registry import get_oracle, oracle_settings

ROOT = Path(__file__).resolve().parents[1]
TIGHT = {"kind": "gpaw", "kpts": [2, 2, 2], "energy_tolerance": 1e-9, "density_tolerance": 1e-7}
"""2×2×2 k, SCF to 1e-9 eV per electron (8e-9 eV in all): finite differences of the energy see the stress."""


@pytest.fixture(scope="module")
def gpaw_installed() -> None:
    """GPAW importable in this interpreter: `make gpaw` (apt-get as root, then a pip build) when it is not."""
    try:
        import_gpaw()
        return
    except ImportError:
        pass
    if os.geteuid() != 0:
        pytest.fail("GPAW is not installed and cannot be built here (needs root for apt-get): run `make gpaw`")
    venv = Path(sys.prefix)
    proc = subprocess.run(["make", "-C", str(ROOT), "gpaw", f"VENV={venv}"], capture_output=True, text=True,
                          timeout=1200)
    if proc.returncode != 0:
        pytest.fail(f"make gpaw failed ({proc.returncode}):\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    import importlib

    importlib.invalidate_caches()


def test_importing_gpaw_under_pytest_leaves_numpy_as_it_was(gpaw_installed):
    """GPAW patches np.empty and np.seterr for the whole process when pytest is imported; the oracle undoes it
    (numba's kernels and every later test would fail otherwise), and a fresh import in a subprocess under a
    module named pytest shows that GPAW does patch."""
    empty, errors = np.empty, np.geterr()
    get_oracle(oracle_settings(kind="gpaw"))
    assert np.empty is empty and np.geterr() == errors
    probe = ("import sys, types; sys.modules['pytest'] = types.ModuleType('pytest'); import numpy as np; "
             "e = np.empty; import gpaw; print(np.empty is e)")
    assert subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout.strip() \
        == "False"


def sheared_silicon():
    """The 2-atom Si cell, sheared and rattled: no symmetry hides an error in a stress component or a force."""
    atoms = bulk("Si", "diamond", a=5.43)
    atoms.set_cell(atoms.cell[:] @ np.array([[1.01, 0.02, 0.0], [0.0, 0.99, 0.0], [0.0, 0.0, 1.0]]), scale_atoms=True)
    atoms.rattle(0.05, seed=1)
    return atoms


def strained(atoms, a: int, b: int, eps: float):
    """``atoms`` under the symmetric strain ε_ab = ε_ba (ε_aa = ε on the diagonal), positions scaled along."""
    e = np.zeros((3, 3))
    e[a, b] = e[b, a] = eps / (1.0 if a == b else 2.0)
    out = atoms.copy()
    out.set_cell(atoms.cell[:] @ (np.eye(3) + e), scale_atoms=True)
    return out


def test_the_k_mesh_from_its_density_is_one_mesh_across_strains_and_one_point_across_vacuum():
    """kpt_density 1.3 Å: the 8-atom cubic cell gets 2×2×2 from −10 % to +10 % strain (no k-point appears
    under strain: the labels of one campaign share a mesh), its slab with 10 Å of vacuum 2×2×1."""
    from ase.build import diamond100

    settings = GPAWSettings()
    cell = bulk("Si", "diamond", a=5.43, cubic=True)
    for scale in (0.9, 1.0, 1.1):
        squeezed = cell.copy()
        squeezed.set_cell(cell.cell[:] * scale, scale_atoms=True)
        assert k_mesh(squeezed, settings) == (2, 2, 2), scale
    slab = diamond100("Si", size=(2, 2, 4), vacuum=5.0, a=5.43)
    slab.pbc = True
    assert k_mesh(slab, settings) == (2, 2, 1)
    assert k_mesh(cell, GPAWSettings(kpts=[3, 1, 2])) == (3, 1, 2)


def test_gpaw_forces_and_stress_are_the_derivatives_of_its_energy(gpaw_installed):
    """PBE, plane waves at 200 eV, 2×2×2 k on the sheared, rattled 2-atom Si cell (≈ 1.5 s per SCF here).

    Forces: Σ F = 0 and F_x of atom 0 = −∂E/∂x by central differences (h = 1e-3 Å; the SCF error over 2h is
    ~1e-5 eV/Å, the O(h²) truncation below that for forces of ~1.6 eV/Å).
    Stress: a plane-wave energy at fixed cutoff jumps a little whenever the strain moves a plane wave across the
    cutoff sphere, so σ_ab is compared with the slope at ε = 0 of a quadratic fitted to E(ε) at 7 strains in
    ±6e-3 (the jumps average out), within 4 standard errors of that slope. On the diagonal the fixed-cutoff
    derivative also holds the Pulay stress (2 E_cut / 3V) ∂E/∂E_cut (Francis & Payne, J. Phys. Condens. Matter
    2, 4395 (1990)), which GPAW's analytical stress leaves out; it is estimated from one more energy at
    E_cut + 10 eV and allowed a quarter of its size (its forward difference is that rough)."""
    oracle = get_oracle(oracle_settings(ecut=200.0, **TIGHT))
    atoms = sheared_silicon()
    result = oracle.label(atoms)
    volume = atoms.get_volume()
    np.testing.assert_allclose(result[1].sum(axis=0), 0.0, atol=1e-5)
    h = 1e-3
    plus, minus = atoms.copy(), atoms.copy()
    plus.positions[0, 0] += h
    minus.positions[0, 0] -= h
    assert result[1][0, 0] == pytest.approx(-(oracle.energy(plus) - oracle.energy(minus)) / (2 * h), abs=1e-4)

    higher = get_oracle(oracle_settings(ecut=210.0, **TIGHT))
    pulay = 2 * 200.0 * (higher.energy(atoms) - result[0]) / 10.0 / (3 * volume)  # eV/Å³, diagonal only
    assert abs(pulay) > 1e-4  # large enough that leaving it out would fail the diagonal check below
    eps = np.linspace(-6e-3, 6e-3, 7)
    for a, b in ((0, 0), (0, 1)):
        energies = np.array([oracle.energy(strained(atoms, a, b, e)) for e in eps])
        coefficients, covariance = np.polyfit(eps, energies, 2, cov=True)
        slope, slope_error = coefficients[1] / volume, np.sqrt(covariance[1, 1]) / volume
        expected = result.stress[a, b] + (pulay if a == b else 0.0)
        allowed = 4 * slope_error + (abs(pulay) / 4 if a == b else 0.0)
        assert abs(expected - slope) <= allowed, (a, b, result.stress[a, b], slope, slope_error, pulay)


def test_gpaw_refuses_a_molecule_with_a_way_out(gpaw_installed):
    from ase.build import molecule

    oracle = get_oracle(oracle_settings(kind="gpaw"))
    with pytest.raises(OracleFailure, match="pbc = True"):
        oracle.label(molecule("H2O"))
