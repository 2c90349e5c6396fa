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
