"""Oracles for materials (DESIGN §12): periodic KS-DFT through pyscf.pbc and the CHGNet universal potential,
both giving energy, forces and stress of a cell; their stress is the strain derivative of their own energy."""

from __future__ import annotations

import socket

import numpy as np
import pytest
from ase.build import bulk

from oedal.oracles.registry import get_oracle, oracle_settings


def strain_derivative(oracle, atoms, a: int, b: int, eps: float, energy=None) -> float:
    """σ_ab = (1/V) ∂E/∂ε_ab by central differences of the oracle's energy under r → (1 + ε) r (eV/Å³);
    ``energy``: a function of the atoms (default: the label's energy)."""
    energy = energy or (lambda atoms: oracle.label(atoms)[0])
    energies = []
    for sign in (1.0, -1.0):
        strained = atoms.copy()
        e = np.zeros((3, 3))
        e[a, b] = e[b, a] = sign * eps / (1.0 if a == b else 2.0)
        strained.set_cell(atoms.cell[:] @ (np.eye(3) + e), scale_atoms=True)
        energies.append(energy(strained))
    return (energies[0] - energies[1]) / (2 * eps) / atoms.get_volume()


@pytest.fixture(scope="module")
def chgnet():
    """CHGNet built with every socket refused: its weights come from the wheel, never from the network."""
    pytest.importorskip("chgnet")
    connect = socket.socket.connect

    def refuse(*args, **kwargs):
        raise OSError("network access attempted")

    socket.socket.connect = refuse
    try:
        return get_oracle(oracle_settings(kind="chgnet"))
    finally:
        socket.socket.connect = connect


def test_chgnet_labels_a_cell_with_the_strain_derivative_of_its_energy_as_stress(chgnet):
    """A rattled, sheared Si cell: the stress CHGNet reports (GPa → eV/Å³, sign as ASE's) = (1/V) ∂E/∂ε by central
    differences, xx and xy. Tolerance: CHGNet's float32 energy (|E| ≈ 42 eV) rounds at ~32 ulps ≈ 1.6e-4 eV, over
    2εV ≈ 0.32 eV·Å³/(eV/Å³) at ε = 1e-3, plus the O(ε²) truncation, which two steps bound (ε and 2ε agree)."""
    atoms = bulk("Si", "diamond", a=5.43, cubic=True)
    atoms.set_cell(atoms.cell[:] @ np.array([[1.01, 0.02, 0.0], [0.0, 0.99, 0.0], [0.0, 0.0, 1.0]]), scale_atoms=True)
    atoms.rattle(0.03, seed=1)
    result = chgnet.label(atoms)
    assert result.stress is not None and result.stress.shape == (3, 3)
    np.testing.assert_allclose(result[1].sum(axis=0), 0.0, atol=1e-4)  # Σ F = 0 (float32 forces, 8 atoms)
    roundoff = 32 * np.finfo(np.float32).eps * abs(result[0]) / (2e-3 * atoms.get_volume())  # eV/Å³
    for a, b in ((0, 0), (0, 1)):
        fine, coarse = (strain_derivative(chgnet, atoms, a, b, eps) for eps in (1e-3, 2e-3))
        truncation = abs(coarse - fine) / 3  # Richardson: the O(ε²) error at ε is a third of the difference
        assert abs(result.stress[a, b] - fine) <= 2 * roundoff + 2 * truncation, (a, b, result.stress[a, b], fine)


def test_chgnet_drives_the_sampling_md_of_a_crystal_and_its_frames_carry_stress(chgnet, tmp_path):
    """sampling.potential kind chgnet: a Langevin MD of an 8-atom Si cell from a file; every frame is labeled
    with energy, forces and the stress of the calculator that drove it."""
    import ase.io

    from oedal.campaign.sampling import run_md
    from oedal.campaign.settings import SamplingSettings

    crystal = tmp_path / "si.extxyz"
    ase.io.write(crystal, bulk("Si", "diamond", a=5.43, cubic=True))
    settings = SamplingSettings(molecule=str(crystal), potential={"kind": "chgnet"}, temperature=600.0,
                                n_frames=2, interval=2, equilibration_steps=0, timestep=1.0, seed=0)
    result = run_md(ase.io.read(crystal), settings, calculator=chgnet.calculator)
    frames = result.structures
    assert len(frames) == 2 and frames.stress is not None and np.isfinite(frames.stress).all()
    again = chgnet.label(frames.to_atoms()[1])
    np.testing.assert_allclose(frames.stress[1], again.stress, rtol=1e-5, atol=1e-7)


def test_pyscf_pbc_labels_a_cell_with_its_analytical_stress():
    """Periodic PBE (GTH-PBE, gth-szv, Γ, an 80 Ha density cutoff) on H₂ in a small skewed cell (the cheapest cell
    that tests the same code as silicon: 2.6–7 s per label here; the 2-atom Si cell takes 35 s): Σ F ≈ 0 (the FFT
    mesh breaks translation a little), and σ_xx, σ_xy = (1/V) ∂E/∂ε by central differences. The SCF converges
    to 1e-9 Ha (≈ 3e-8 eV), over 2εV ≈ 0.6 Å³ at ε = 1e-2 that is 5e-8 eV/Å³; the O(ε²) truncation is bounded by
    comparing ε and 2ε (Richardson)."""
    pytest.importorskip("pyscf")
    from ase import Atoms

    oracle = get_oracle(oracle_settings(kind="pyscf_pbc", ke_cutoff=80.0))
    atoms = Atoms("H2", positions=[[0, 0, 0], [0.75, 0.1, 0.05]],
                  cell=[[3.0, 0, 0], [0.2, 3.1, 0], [0, 0.1, 3.2]], pbc=True)
    result = oracle.label(atoms)
    np.testing.assert_allclose(result[1].sum(axis=0), 0.0, atol=0.02)  # eV/Å, against forces of ~1 eV/Å
    for a, b in ((0, 0), (0, 1)):
        fine, coarse = (strain_derivative(oracle, atoms, a, b, eps, energy=oracle.energy) for eps in (1e-2, 2e-2))
        assert abs(result.stress[a, b] - fine) <= 2 * abs(coarse - fine) / 3 + 1e-7, (a, b, result.stress[a, b], fine)


def test_oedal_baseline_gives_a_potentials_errors_on_a_labeled_store(tmp_path):
    """`oedal baseline`: the potential's errors (here EMT's, against labels EMT made of other cells plus
    per-element offsets of +0.1 eV per Cu and −0.3 eV per Au atom) are the errors computed by hand. Raw
    (--no-align): each energy error is the structure's offset, force and stress errors 0. Aligned (the default):
    the fitted per-element constants are the injected ones and the energy errors vanish."""
    import json

    from ase.calculators.emt import EMT

    from oedal.cli import main
    from oedal.data.store import write_store
    from oedal.data.structures import Structures

    frames = []
    for k in range(4):
        atoms = bulk("Cu", "fcc", a=3.7 + 0.02 * k, cubic=True)
        atoms.symbols[: k + 1] = "Au"  # compositions Cu3Au, Cu2Au2, CuAu3, Au4: the offsets are identifiable
        atoms.rattle(0.03, seed=k)
        atoms.calc = EMT()
        atoms.get_stress()
        frames.append(atoms)
    labeled = Structures.from_atoms(frames)
    n_au = np.array([k + 1 for k in range(4)])
    offsets = 0.1 * (4 - n_au) - 0.3 * n_au  # eV: the labels sit this far from EMT
    labeled.energy = labeled.energy + offsets
    write_store(tmp_path / "test.h5", labeled)
    for flags, out in (["--no-align"], tmp_path / "raw.json"), ([], tmp_path / "aligned.json"):
        assert main(["baseline", "--oracle-settings", '{"kind": "emt"}', "--data", str(tmp_path / "test.h5"),
                     "--out", str(out), *flags]) == 0
    raw, aligned = (json.loads((tmp_path / f).read_text()) for f in ("raw.json", "aligned.json"))
    assert raw["potential"] == "emt" and raw["n_stress"] == 4 and raw["energy_aligned"] is False
    assert raw["energy_mae_eV"] == pytest.approx(np.abs(offsets).mean(), rel=1e-12)
    assert raw["energy_per_atom_mae_meV/atom"] == pytest.approx(1000 * np.abs(offsets / 4).mean(), rel=1e-12)
    assert raw["forces_mae_eV/A"] == 0.0 and raw["stress_maxe_GPa"] == 0.0
    assert aligned["element_offsets_eV"] == pytest.approx({"29": 0.1, "79": -0.3}, abs=1e-12)
    assert aligned["energy_maxe_eV"] == pytest.approx(0.0, abs=1e-12) and aligned["forces_mae_eV/A"] == 0.0
