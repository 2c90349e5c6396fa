"""The stress uncertainty of a cell (oedal.oed.uncertainty, DESIGN §12): the stress is linear in the output
weights as the energy is, so its sensitivities ∂σ/∂w are exact; their score under the model's posterior maps to
the expected stress error (GPa), fitted on the validation cells and returned by the calculator."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from ase.build import bulk
from scipy.special import digamma, polygamma

from oedal.data.structures import Structures
from oedal.settings import DescriptorSettings, ModelSettings
from tolerances import assert_close, tolerance

SMALL64 = ModelSettings(descriptor=DescriptorSettings(r_cut=4.0, n_radial=3, n_basis=5), hidden=[16, 8],
                        dtype="float64")


def cu_cells(n: int, seed: int, strain: float = 0.06, rattle: float = 0.15) -> Structures:
    """``n`` unlabeled Cu cells: the 4-atom cubic cell or its 2×1×1 supercell, under a random symmetric strain of
    up to ``strain`` per component, rattled by 0.01 Å to ``rattle`` Å (a spread of scores)."""
    rng = np.random.default_rng(seed)
    frames = []
    for k in range(n):
        atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat((1 + k % 2, 1, 1))
        eps = rng.uniform(-1.0, 1.0, (3, 3)) * rng.uniform(0.0, strain)
        atoms.set_cell(atoms.cell[:] @ (np.eye(3) + (eps + eps.T) / 2), scale_atoms=True)
        atoms.positions += rng.normal(0.0, rng.uniform(0.01, rattle), atoms.positions.shape)
        frames.append(atoms)
    return Structures.from_atoms(frames)


@pytest.fixture(scope="module")
def model():
    from oedal.gmnn.model import GMNN

    torch.manual_seed(0)
    m = GMNN(SMALL64, [29])
    m.eval()
    return m


def test_stress_sensitivities_contracted_with_any_output_weights_give_that_models_stress(model,
                                                                                       small_periodic_cells):
    """Σ_k v_k ∂σ/∂w_k = σ of the model whose output weights are v (GMNN.evaluate's virial over the volume), for
    random v: d independent v would pin every column, two already catch a wrong index, sign or volume. One
    formula, two code paths (d VJPs against the gradient of the energy), both float64: they differ by the
    rounding of the pair sum W_ab = Σ_p Σ_k v_k (c_pk)_a (r_p)_b, so the scale is that sum of absolute terms
    (c_p = ∂(Σ_i σ_i h_i)/∂r_p). Measured ≤ 1.5 ulps of it; the output layer's sum alone (Σ_k |v_k||∂σ/∂w_k|)
    was reached to 30 ulps, too small a scale: the terms cancel across pairs."""
    from oedal.data.structures import cell_volumes
    from oedal.gmnn.model import GMNN, pair_virial
    from oedal.oed.sensitivities import VOIGT, _generic, stress_sensitivities

    cells = cu_cells(3, seed=1)
    hco = GMNN(SMALL64.model_copy(update={"descriptor": DescriptorSettings(r_cut=3.0, n_radial=2, n_basis=4)}),
               [1, 6, 8])
    for m, s in ((model, cells), (hco, small_periodic_cells)):  # the H/C/O cells hold images of their own atoms
        g = stress_sensitivities(m, s)  # (n, 6, d) eV/Å³
        volume = cell_volumes(s.cell, s.pbc)
        b = m.batch(s)
        disp = b.displacements().to(m.dtype)
        _, c = _generic(m, b, disp, m.atomic_scale(b).detach()[:, None], "reverse")  # (n_pairs, 3, d)
        for seed in (0, 1):
            v = torch.from_numpy(np.random.default_rng(seed).normal(0.0, 1.0, m.d))
            with torch.no_grad():
                m.output.weight.copy_(v[None, :])
            want = (m.evaluate(m.batch(s), stress=True).virial.numpy() / volume[:, None, None])[:, *VOIGT]
            got = g @ v.numpy()
            scale = pair_virial(b, c.abs() @ v.abs(), disp.abs()).numpy() / volume[:, None, None]  # eV/Å³
            assert_close(got, want, tol=tolerance(scale[:, *VOIGT]))
    cluster = bulk("Cu", "fcc", a=3.61, cubic=True)
    cluster.pbc = False
    assert np.isnan(stress_sensitivities(model, Structures.from_atoms([cluster]))).all()  # no volume, no stress


def test_the_stress_map_recovers_an_injected_error_scale_in_gpa(model):
    """Validation labels = the model's own prediction plus noise of c·√s̄_σ GPa in each of the six stress
    components (c = 0.7 GPa): the fitted map a·s̄_σ^p must give p = 1/2 and, at the cells' mean log s̄_σ, the
    expected log RMS log c + ½(ψ(3) + log(2/6)) (the mean log of a χ²₆/6 root), each within four standard
    errors of the regression, ½√ψ′(3) per cell in log RMS. A GPa/eV Å⁻³ slip is a factor 160, a
    wrong component set a bias of 0.1–0.7 in log."""
    from ase import units

    from oedal.gmnn.evaluation import predict
    from oedal.oed.sensitivities import VOIGT, stress_sensitivities
    from oedal.oed.uncertainty import fit_uncertainty

    c = 0.7  # GPa
    rng = np.random.default_rng(3)
    train, valid = cu_cells(40, seed=4, strain=0.01, rattle=0.02), cu_cells(240, seed=5, strain=0.15, rattle=0.4)
    for s in (train, valid):
        pred = predict(model, s)
        s.energy = pred.energy + rng.normal(0.0, 0.01, len(s.n_atoms))  # eV
        s.forces = pred.forces + rng.normal(0.0, 0.05, pred.forces.shape)  # eV/Å
    head = fit_uncertainty(model, train, valid)  # no stress labels: no stress map
    assert head.stress_error_map is None
    s_bar = head.stress_scores(stress_sensitivities(model, valid))  # (n,)
    noise = np.zeros((len(s_bar), 3, 3))
    z = rng.normal(0.0, 1.0, (len(s_bar), 6))
    noise[:, VOIGT[0], VOIGT[1]] = noise[:, VOIGT[1], VOIGT[0]] = z
    valid.stress = predict(model, valid, stress=True).stress + c * units.GPa * np.sqrt(s_bar)[:, None, None] * noise
    head = fit_uncertainty(model, train, valid)  # the energy errors are those of the first fit: the same prior
    a, p = head.stress_error_map
    x = np.log(s_bar)
    se_p = 0.5 * math.sqrt(polygamma(1, 3)) / math.sqrt(((x - x.mean()) ** 2).sum())
    se_mean = 0.5 * math.sqrt(polygamma(1, 3)) / math.sqrt(len(x))
    assert x.std() > 0.5  # a spread of scores to fit a slope on
    assert abs(p - 0.5) < 4 * se_p, (p, se_p)
    expected = math.log(c) + 0.5 * (digamma(3) + math.log(2 / 6)) + 0.5 * x.mean()
    assert abs(math.log(a) + p * x.mean() - expected) < 4 * se_mean


def test_the_calculator_returns_the_stress_error_of_a_cell_and_refuses_without_a_map(model):
    """UncertaintyCalculator(stress_uncertainty=True): ``stress_error`` = the head's map at the cell's own
    sensitivities (the same arithmetic on one structure); a model file without a stress map says so; the map
    survives the model file's payload, and an older payload without it loads with none."""
    from oedal.errors import InputError
    from oedal.oed.calculator import UncertaintyCalculator
    from oedal.oed.sensitivities import stress_sensitivities
    from oedal.oed.uncertainty import UncertaintyHead

    d = model.d
    head = UncertaintyHead(chol=np.eye(d), lam=0.1, sigma2=1e-4, threshold=0.5, error_map=(0.1, 0.5),
                           validation={}, n_train=10, stress_error_map=(0.8, 0.5))
    cells = cu_cells(2, seed=7)
    atoms = cells.to_atoms()[1]  # the 8-atom cell
    atoms.calc = UncertaintyCalculator(model, head=head, stress_uncertainty=True)
    atoms.get_stress()
    want = head.stress(stress_sensitivities(model, cells.subset([1])))[0]
    assert atoms.calc.results["stress_error"] == pytest.approx(want, rel=1e-9)
    atoms.calc.reset()
    atoms.get_potential_energy()  # no stress asked: no stress error computed
    assert "stress_error" not in atoms.calc.results
    again = UncertaintyHead.from_payload(head.to_payload())
    assert again.stress_error_map == pytest.approx(head.stress_error_map)
    old = head.to_payload()
    del old["stress_error_map"]
    assert UncertaintyHead.from_payload(old).stress_error_map is None
    head.stress_error_map = None
    with pytest.raises(InputError, match="no stress uncertainty"):
        UncertaintyCalculator(model, head=head, stress_uncertainty=True)
