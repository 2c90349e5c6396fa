"""Uncertainty-biased exploration (oedal.oed.bias, DESIGN §13): E_bias = −A·(1 − exp(−u/B)) with u the calibrated
force error; its forces and virial are its derivatives (finite differences), it leaves the model's own terms as
they were, and walkers move on model + bias while every check and record judges the model alone."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import molecule

from oedal.campaign.explore.dynamics import Dynamics, run_walkers
from oedal.campaign.explore.walker import start_walkers
from oedal.data.structures import Structures
from oedal.gmnn.calculator import atoms_as_structures
from oedal.oed.bias import UncertaintyBias
from oedal.settings import DescriptorSettings, ModelSettings

LIMITS = {"min_distance": 0.3, "max_force": 1e3, "max_energy_jump": 1e3, "max_temperature_factor": 100.0}
EPS = float(np.finfo(np.float64).eps)


@pytest.fixture(scope="module")
def fitted(ethanol_structures):
    """A float64 GM-NN (untrained: the uncertainty only needs sensitivities and errors) with its uncertainty
    fitted on 40 + 40 ethanol frames, and a bias whose width B is a typical frame's force error u (the bias's
    curved part)."""
    from oedal.gmnn.model import GMNN
    from oedal.oed.uncertainty import fit_uncertainty

    torch.manual_seed(0)
    model = GMNN(ModelSettings(descriptor=DescriptorSettings(r_cut=4.0, n_radial=3, n_basis=5), hidden=[32, 16],
                               dtype="float64"), [1, 6, 8])
    s = ethanol_structures
    model.init_scale_shift(s.numbers, s.n_atoms, s.energy)
    model.eval()
    head = fit_uncertainty(model, s.subset(np.arange(40)), s.subset(np.arange(40, 80)))
    u = head.structure(model.evaluate(model.batch(s.subset([100]), torch.float64),
                                      sensitivities=True).sensitivities.numpy())["force_error"][0]
    return model, head, UncertaintyBias(strength=0.5, width=float(u))


def test_the_default_width_is_the_models_force_error_at_the_lower_band(fitted):
    """B = None: the calibrated force error u(s) at the s where the informativeness is ``low`` (score s/(1 + s) =
    low·σ_th), read back through the error map's inverse; a set width is kept."""
    from oedal.oed import fisher
    from oedal.oed.calibration import ErrorMap

    _, head, _ = fitted
    for low in (1.0, 3.0):
        width = UncertaintyBias(0.5, None, low).width_for(head)
        s = ErrorMap(*head.error_map).inverse(width)
        assert fisher.informativeness(fisher.variance_change(np.array([s])), head.threshold)[0] == pytest.approx(low)
    assert UncertaintyBias(0.5, 0.2).width_for(head) == 0.2


def bias_energy(model, head, bias, structures) -> np.ndarray:
    ev = model.evaluate(model.batch(structures, torch.float64), bias=bias.of(head))
    return ev.bias.energy.numpy()


def central(f, h: float) -> np.ndarray:
    return (f(h) - f(-h)) / (2 * h)


def test_bias_forces_are_minus_its_gradient_and_the_models_terms_stay(fitted, ethanol_structures):
    """Central differences of E_bias along every Cartesian component, steps h and 2h: the O(h²) error of the
    h one is (fd(2h) − fd(h))/3 (Richardson), allowed twice over, plus the rounding of E_bias (≤ A) over 2h
    at 10⁴ ulps (C⁻¹g through a triangular solve of condition number ≤ 10⁴, checked). E_bias = the NumPy path's
    −A(1 − exp(−u/B)); the model's energy and forces are those of an unbiased evaluation, bit for bit."""
    model, head, bias = fitted
    s = ethanol_structures.subset([150])
    ev = model.evaluate(model.batch(s, torch.float64), sensitivities=True, bias=bias.of(head))
    plain = model.evaluate(model.batch(s, torch.float64), sensitivities=True)
    assert torch.equal(ev.energy, plain.energy) and torch.equal(ev.forces, plain.forces)
    u = head.structure(plain.sensitivities.numpy())["force_error"]
    assert ev.bias.energy.numpy() == pytest.approx(-bias.strength * (1 - np.exp(-u / bias.width)), rel=1e-12)
    assert np.linalg.cond(head.chol) < 1e4
    n = int(s.n_atoms[0])

    def fd(h: float) -> np.ndarray:
        copies = s.subset(np.zeros(3 * n, dtype=np.int64))
        steps = np.zeros((3 * n, n, 3))
        steps.reshape(3 * n, 3 * n)[np.arange(3 * n), np.arange(3 * n)] = 1.0
        plus, minus = copies.subset(np.arange(3 * n)), copies.subset(np.arange(3 * n))
        plus.positions = (s.positions[None] + h * steps).reshape(-1, 3)
        minus.positions = (s.positions[None] - h * steps).reshape(-1, 3)
        return -((bias_energy(model, head, bias, plus) - bias_energy(model, head, bias, minus)) / (2 * h)).reshape(n, 3)

    h = 1e-4
    f1, f2 = fd(h), fd(2 * h)
    tol = 2 * np.abs(f2 - f1) / 3 + 1e4 * EPS * bias.strength / h
    got = ev.bias.forces.numpy()
    assert np.all(np.abs(got - f1) <= tol), np.max(np.abs(got - f1) / tol)
    assert np.abs(got).max() > 100 * tol.max()  # a bias force to speak of


def test_bias_virial_is_the_strain_derivative_of_the_bias_energy(fitted):
    """W_ab = ∂E_bias/∂ε_ab of a periodic box of two ethanol molecules, by central differences of the strained
    cell (steps h and 2h, the same tolerance as the forces')."""
    model, head, bias = fitted
    box = molecule("CH3CH2OH")
    box.center()
    other = box.copy()
    other.positions += 3.5
    box = box + other
    box.set_cell([7.0, 7.2, 6.8])
    box.pbc = True
    box.rattle(0.05, seed=2)
    ev = model.evaluate(model.batch(atoms_as_structures(box), torch.float64), stress=True, bias=bias.of(head))

    def fd(h: float) -> np.ndarray:
        strained = []  # (a, b, sign) in order, all in one evaluation
        for a in range(3):
            for b in range(3):
                for sign in (1, -1):
                    eps = np.zeros((3, 3))
                    eps[a, b] = sign * h
                    copy = box.copy()
                    copy.set_cell(box.cell[:] @ (np.eye(3) + eps).T, scale_atoms=True)
                    strained.append(copy)
        energies = bias_energy(model, head, bias, Structures.from_atoms(strained)).reshape(3, 3, 2)
        return (energies[..., 0] - energies[..., 1]) / (2 * h)

    h = 1e-5
    w1, w2 = fd(h), fd(2 * h)
    tol = 2 * np.abs(w2 - w1) / 3 + 1e4 * EPS * bias.strength / h
    got = ev.bias.virial[0].numpy()
    assert np.all(np.abs(got - w1) <= tol), np.max(np.abs(got - w1) / tol)


def test_biased_walkers_move_elsewhere_and_are_judged_by_the_model_alone(fitted):
    """Two ethanol walkers, 60 steps, every check a candidate: with the bias they go elsewhere than without
    (same seeds), and every record's informativeness and force error are the model's own at its positions
    (recomputed without the bias). The NPT path's calculator: energy = model + bias, the model's kept apart."""
    from oedal.oed.calculator import UncertaintyCalculator

    model, head, bias = fitted
    torch.set_num_threads(1)
    runs = {}
    for name, b in (("plain", None), ("biased", UncertaintyBias(5.0, bias.width))):
        walkers = start_walkers([molecule("CH3CH2OH")], [600.0], 2, seed=3)
        records: list = []
        run_walkers(model, head, walkers, Dynamics(60, 0.5, 0.01, 10, 1e-12, 1e12, LIMITS, bias=b), 0, records)
        runs[name] = records
    plain = {r["id"]: np.array(r["positions"]) for r in runs["plain"]}
    both = [r for r in runs["biased"] if r["id"] in plain and r["step"] >= 30]
    assert both and all(np.abs(np.array(r["positions"]) - plain[r["id"]]).max() > 1e-2 for r in both)  # Å
    for r in runs["biased"]:
        atoms = Atoms(r["numbers"], positions=r["positions"])
        g = model.evaluate(model.batch(atoms_as_structures(atoms), torch.float64), sensitivities=True).sensitivities
        u = head.structure(g.numpy())
        assert r["informativeness"] == pytest.approx(float(u["informativeness"][0]), rel=1e-9)
        assert r["force_error"] == pytest.approx(float(u["force_error"][0]), rel=1e-9)
    atoms = Atoms(runs["biased"][-1]["numbers"], positions=runs["biased"][-1]["positions"], cell=[9, 9, 9], pbc=True)
    atoms.calc = UncertaintyCalculator(model, head=head, bias=bias)
    atoms.get_stress()
    r = atoms.calc.results
    assert r["energy"] == pytest.approx(r["model_energy"] + r["bias_energy"], rel=1e-12) and r["bias_energy"] < 0
    assert not np.allclose(r["forces"], r["model_forces"])
