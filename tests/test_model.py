"""GM-NN physics: invariances, forces = −dE/dR, batching, cutoff smoothness, periodic cells, files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from ase.build import bulk

from oedal.gmnn.batching import BatchLoader, make_batch
from oedal.gmnn.calculator import atoms_as_structures
from oedal.data.datasets import load_dataset
from oedal.errors import InputError, SettingsError
from oedal.gmnn.model import GMNN, load_model, save_model
from oedal.settings import DescriptorSettings, ModelSettings

ETHANOL = Path(__file__).resolve().parents[2] / "shared" / "data" / "gmnn_ethanol" / "ethanol_1000K.npz"


@pytest.fixture(scope="module")
def ethanol():
    assert ETHANOL.exists(), f"reference data {ETHANOL} not found"
    return load_dataset(ETHANOL).subset(np.arange(8))


def make_model(dtype="float64", species=(1, 6, 8), r_cut=4.0, seed=0, data=None):
    torch.manual_seed(seed)
    ms = ModelSettings(descriptor=DescriptorSettings(r_cut=r_cut, n_radial=3, n_basis=5), hidden=[32, 16],
                       dtype=dtype)
    model = GMNN(ms, list(species))
    if data is not None:
        model.init_scale_shift(data.numbers, data.n_atoms, data.energy)
    with torch.no_grad():  # non-trivial σ so every term matters
        model.scale.copy_(torch.linspace(0.5, 1.5, len(species), dtype=model.scale.dtype))
    return model


def energy_forces(model, structures, pos_dtype=torch.float64):
    batch = make_batch(structures, model.cutoff, model.species, dtype=pos_dtype)
    e, f = model.energy_and_forces(batch)
    return e.detach().numpy(), f.detach().double().numpy()


def moved(structures, positions):
    s = structures.subset(np.arange(len(structures)))
    s.positions = np.asarray(positions, np.float64)
    return s


def random_rotation(rng):
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    return q if np.linalg.det(q) > 0 else -q


@pytest.mark.parametrize("dtype,tol", [("float64", 1e-9), ("float32", 2e-4)])
def test_rotation_translation_permutation(ethanol, dtype, tol):
    model = make_model(dtype, data=ethanol)
    s = ethanol.subset([0, 1])
    e0, f0 = energy_forces(model, s)
    rng = np.random.default_rng(1)
    rot = random_rotation(rng)
    e1, f1 = energy_forces(model, moved(s, s.positions @ rot.T + rng.normal(size=3) * 3.0))
    np.testing.assert_allclose(e1, e0, rtol=0, atol=tol * 10)
    np.testing.assert_allclose(f1, f0 @ rot.T, rtol=0, atol=tol * 10)
    # permute the atoms within each structure
    perm = np.concatenate([rng.permutation(9), 9 + rng.permutation(9)])
    sp = moved(s, s.positions[perm])
    sp.numbers = s.numbers[perm]
    sp.forces = s.forces[perm]
    e2, f2 = energy_forces(model, sp)
    np.testing.assert_allclose(e2, e0, rtol=0, atol=tol * 10)
    np.testing.assert_allclose(f2, f0[perm], rtol=0, atol=tol)


@pytest.mark.parametrize("dtype,h,tol", [("float64", 1e-4, 1e-7), ("float32", 1e-2, 3e-3)])
def test_forces_are_minus_gradient(ethanol, dtype, h, tol):
    """Central differences on the total energy; float32 works because totals and μ are float64."""
    model = make_model(dtype, data=ethanol)
    s = ethanol.subset([3])
    _, f = energy_forces(model, s)
    # all 2·27 displaced copies in one batch
    n = len(s.positions)
    steps = np.zeros((2 * 3 * n, n, 3))
    for k in range(3 * n):
        steps[2 * k, k // 3, k % 3], steps[2 * k + 1, k // 3, k % 3] = h, -h
    copies = s.subset(np.zeros(len(steps), dtype=np.int64))
    copies.positions = (s.positions[None] + steps).reshape(-1, 3)
    e, _ = energy_forces(model, copies)
    fd = (-(e[0::2] - e[1::2]) / (2 * h)).reshape(n, 3)
    assert abs(energy_forces(model, s)[0][0]) > 1000.0  # a large total: float64 accumulation matters
    np.testing.assert_allclose(f, fd, rtol=0, atol=tol)


def test_batched_equals_one_by_one(ethanol):
    model = make_model("float64", data=ethanol)
    loader = BatchLoader(ethanol, model.cutoff, model.species, batch_size=3, shuffle=True, seed=4,
                         dtype=torch.float64)
    e_all = np.zeros(len(ethanol))
    f_all = np.zeros_like(ethanol.positions)
    for batch in loader:
        e, f = model.energy_and_forces(batch)
        idx = batch.index.numpy()
        e_all[idx] = e.detach().numpy()
        atoms = np.concatenate([np.arange(9 * i, 9 * i + 9) for i in idx])
        f_all[atoms] = f.detach().numpy()
    for i in range(len(ethanol)):
        e, f = energy_forces(model, ethanol.subset([i]))
        assert e[0] == pytest.approx(e_all[i], abs=1e-9)
        np.testing.assert_allclose(f, f_all[9 * i : 9 * i + 9], atol=1e-10)


def test_smooth_at_cutoff():
    """An atom crossing r_c: energy and forces are continuous (cosine cutoff, C¹)."""
    model = make_model("float64", species=(1, 6), r_cut=3.0)
    from oedal.data.structures import Structures

    def ef(x):
        pos = np.array([[0.0, 0, 0], [1.1, 0, 0], [-x, 0.0, 0.0]])
        s = Structures(positions=pos, numbers=np.array([6, 1, 1]), n_atoms=np.array([3]), cell=np.zeros((1, 3, 3)),
                       pbc=np.zeros((1, 3), bool), ids=np.array([0]))
        return energy_forces(model, s)

    e_in, f_in = ef(3.0 - 1e-6)
    e_out, f_out = ef(3.0 + 1e-6)
    assert abs(e_in[0] - e_out[0]) < 1e-9
    np.testing.assert_allclose(f_in, f_out, atol=1e-7)
    e_far, f_far = ef(3.5)
    assert abs(e_far[0] - e_out[0]) < 1e-9
    assert np.abs(f_far[2]).max() < 1e-12


def test_periodic_supercell_energy_and_forces():
    model = make_model("float64", species=(74,), r_cut=5.0)
    atoms = bulk("W", "bcc", a=3.16, cubic=True)
    atoms.rattle(0.05, seed=3)
    e1, f1 = energy_forces(model, atoms_as_structures(atoms))
    sup = atoms.repeat((2, 2, 2))
    e8, f8 = energy_forces(model, atoms_as_structures(sup))
    assert e8[0] == pytest.approx(8 * e1[0], rel=1e-10)
    np.testing.assert_allclose(f8, np.tile(f1, (8, 1)), atol=1e-9)
    assert np.abs(f1).max() > 1e-4  # rattled: forces are not trivially zero


def test_save_load_round_trip(ethanol, tmp_path):
    model = make_model("float32", data=ethanol)
    path = tmp_path / "m.pt"
    save_model(model, path, note="x")
    loaded = load_model(path)
    assert loaded.species == model.species and loaded.meta["note"] == "x"
    e0, f0 = energy_forces(model, ethanol)
    e1, f1 = energy_forces(loaded, ethanol)
    np.testing.assert_array_equal(e0, e1)
    np.testing.assert_array_equal(f0, f1)
    other = model.settings.model_copy(update={"hidden": [8]})
    with pytest.raises(SettingsError, match="hidden"):
        load_model(path, settings=other)


def test_unknown_element_raises(ethanol):
    model = make_model("float32", species=(1, 6))
    with pytest.raises(InputError, match="Z=8"):
        energy_forces(model, ethanol.subset([0]))


def test_float32_total_keeps_float64_digits(ethanol):
    model = make_model("float32", data=ethanol)
    e, _ = energy_forces(model, ethanol.subset([0]))
    assert e.dtype == np.float64
    assert abs(float(model.shift.detach().sum())) > 100  # shifts are the large part and live in float64


def test_jvp_through_atomic_features_matches_autograd(ethanol):
    """Force sensitivities (DESIGN §6) use forward-mode JVPs over displacement tangents."""
    model = make_model("float64", data=ethanol)
    batch = make_batch(ethanol.subset([0, 1]), model.cutoff, model.species, dtype=torch.float64)
    disp = batch.displacements()
    w = torch.randn(model.d, dtype=torch.float64)

    def f(d):
        return (model.atomic_scale(batch)[:, None] * model.atomic_features(batch, d) * w).sum()

    tangent = torch.randn_like(disp)
    _, jvp = torch.func.jvp(f, (disp,), (tangent,))
    d = disp.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(f(d), d)
    assert torch.allclose(jvp, (grad * tangent).sum(), rtol=1e-9)
    h = torch.func.vmap(lambda t: torch.func.jvp(lambda d: model.atomic_features(batch, d), (disp,), (t,))[1])(
        torch.stack([tangent, 2 * tangent]))
    assert h.shape == (2, 18, model.d) and torch.allclose(h[1], 2 * h[0])


def test_evaluate_gives_forces_virial_and_sensitivities_of_one_pass(ethanol):
    """evaluate() = energy_and_forces(); its virial = ∂E/∂ε by finite differences of a strained cell
    (triclinic, with periodic images); its sensitivities = Σ_i σ_i h_i."""
    model = make_model("float64", r_cut=3.5, data=ethanol)
    rng = np.random.default_rng(4)
    from ase import Atoms

    atoms = Atoms(numbers=rng.choice([1, 6, 8], 6), scaled_positions=rng.random((6, 3)),
                  cell=np.diag([3.2, 3.5, 3.0]) + 0.3 * rng.random((3, 3)), pbc=True)
    batch = make_batch(atoms_as_structures(atoms), model.cutoff, model.species, dtype=torch.float64)
    ev = model.evaluate(batch, stress=True, sensitivities=True)
    e, f = model.energy_and_forces(batch)
    assert torch.equal(ev.energy, e.detach()) and torch.equal(ev.forces, f.detach())
    h = 1e-6
    for a in range(3):
        for b in range(3):
            eps = np.zeros((3, 3))
            eps[a, b] = h
            energies = []
            for sign in (1, -1):
                strained = atoms.copy()
                strained.set_cell(atoms.cell[:] @ (np.eye(3) + sign * eps).T, scale_atoms=True)
                energies.append(energy_forces(model, atoms_as_structures(strained))[0][0])
            assert float(ev.virial[0, a, b]) == pytest.approx((energies[0] - energies[1]) / (2 * h), abs=1e-6)
    y = model.atomic_scale(batch)[:, None] * model.atomic_features(batch)
    torch.testing.assert_close(ev.sensitivities[0], y.sum(0).detach(), rtol=1e-12, atol=1e-12)
