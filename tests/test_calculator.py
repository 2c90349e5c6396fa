"""The ASE calculator: agrees with the model, runs MD, works for periodic cells."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase import units
from ase.build import bulk, molecule
from ase.md.verlet import VelocityVerlet

from oedal.gmnn.calculator import GMNNCalculator
from oedal.errors import InputError
from oedal.gmnn.model import GMNN, save_model
from oedal.settings import DescriptorSettings, ModelSettings


def small_model(species, path, dtype="float32"):
    torch.manual_seed(0)
    ms = ModelSettings(descriptor=DescriptorSettings(r_cut=4.0, n_radial=3, n_basis=5), hidden=[16, 16], dtype=dtype)
    model = GMNN(ms, species)
    save_model(model, path)
    return path


def test_md_with_calculator(tmp_path):
    atoms = molecule("CH3CH2OH")
    atoms.calc = GMNNCalculator(small_model([1, 6, 8], tmp_path / "m.pt", "float64"))
    e0 = atoms.get_potential_energy()
    assert atoms.get_forces().shape == (9, 3)
    assert atoms.calc.get_property("free_energy") == e0
    atoms.set_momenta(np.random.default_rng(0).normal(size=(9, 3)) * 0.1)
    etot0 = atoms.get_potential_energy() + atoms.get_kinetic_energy()
    VelocityVerlet(atoms, 0.1 * units.fs).run(20)
    etot1 = atoms.get_potential_energy() + atoms.get_kinetic_energy()
    assert abs(etot1 - etot0) < 1e-3  # energy conserving: forces are the true gradient


def test_periodic_cell_and_unknown_element(tmp_path):
    path = small_model([74], tmp_path / "w.pt")
    atoms = bulk("W", "bcc", a=3.16).repeat((2, 2, 2))
    atoms.rattle(0.02, seed=1)
    atoms.calc = GMNNCalculator(path)
    f = atoms.get_forces()
    assert np.abs(f.sum(axis=0)).max() < 1e-4  # translation invariance: no net force
    bad = molecule("H2O")
    bad.calc = GMNNCalculator(path)
    with pytest.raises(InputError):
        bad.get_potential_energy()


def test_stress_is_the_strain_derivative(tmp_path):
    """σ = (1/V) ∂E/∂ε: the calculator's stress equals ASE's finite-difference stress of a rattled,
    sheared W cell, and a cell relaxation lowers the energy."""
    from ase.filters import FrechetCellFilter
    from ase.optimize import BFGS

    path = small_model([74], tmp_path / "w.pt", "float64")
    atoms = bulk("W", "bcc", a=3.16).repeat((2, 2, 1))
    atoms.set_cell(atoms.cell[:] @ np.array([[1.0, 0.05, 0.0], [0.0, 1.0, 0.03], [0.0, 0.0, 1.02]]), scale_atoms=True)
    atoms.rattle(0.03, seed=2)
    atoms.calc = GMNNCalculator(path)
    stress = atoms.get_stress()
    from ase.calculators.fd import calculate_numerical_stress

    numerical = calculate_numerical_stress(atoms, eps=1e-5, force_consistent=False)
    np.testing.assert_allclose(stress, numerical, atol=1e-7)
    assert np.abs(stress).max() > 1e-4
    e0 = atoms.get_potential_energy()
    BFGS(FrechetCellFilter(atoms), logfile=None).run(fmax=0.01, steps=30)
    assert atoms.get_potential_energy() < e0


def test_threads_stay_as_set(tmp_path):
    """threads=1 holds after the first call (numba's pool used to reset OpenMP's count to every core)."""
    saved = torch.get_num_threads()
    try:
        atoms = molecule("CH3CH2OH")
        atoms.calc = GMNNCalculator(small_model([1, 6, 8], tmp_path / "m.pt"), threads=1)
        atoms.get_forces()
        atoms.positions[0, 0] += 0.01
        atoms.get_forces()
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(saved)
