"""QS1/QS2 sensitivities equal a full autograd Jacobian and central finite differences."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from oedal import sensitivities as S
from oedal.batching import make_batch
from oedal.model import GMNN
from oedal.settings import ModelSettings


@pytest.fixture(scope="module")
def model_and_batch(ethanol_structures):
    ms = ModelSettings.model_validate({"dtype": "float64", "hidden": [24, 12], "descriptor": {"r_cut": 3.0}})
    torch.manual_seed(0)
    model = GMNN(ms, [1, 6, 8])
    with torch.no_grad():
        model.scale.copy_(torch.tensor([0.5, 1.3, 0.8], dtype=torch.float64))
    sub = ethanol_structures.subset([0, 7, 42])
    return model, sub, make_batch(sub, model.cutoff, model.species, dtype=model.dtype)


def _sum_sigma_h(model, batch, positions):
    b = batch._replace(positions=positions)
    y = model.atomic_scale(b)[:, None] * model.atomic_features(b)
    return torch.zeros(b.n_structures, model.d, dtype=y.dtype).index_add(0, b.structure, y)  # (n, d)


def test_pair_slots():
    pair_i = torch.tensor([2, 0, 2, 1, 0, 2])
    slot, n = S.pair_slots(pair_i, 3)
    assert n == 3 and slot.tolist() == [0, 0, 1, 0, 1, 2]


@pytest.mark.parametrize("mode", ["forward", "reverse"])
def test_force_sensitivities_equal_autograd_jacobian(model_and_batch, mode):
    model, _, batch = model_and_batch
    res = S.force_sensitivities_batch(model, batch, mode)
    J = torch.autograd.functional.jacobian(lambda p: _sum_sigma_h(model, batch, p), batch.positions)
    n_atoms = batch.positions.shape[0]
    ref = -J[batch.structure, :, torch.arange(n_atoms), :].permute(0, 2, 1)  # (n_atoms, 3, d)
    torch.testing.assert_close(res.forces, ref.detach(), rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(res.energy, _sum_sigma_h(model, batch, batch.positions).detach())
    # QS1 sensitivity is ∂E/∂w: compare with autograd on the output weight
    model.zero_grad()
    model.energy(batch).sum().backward()
    torch.testing.assert_close(res.energy.sum(0), model.output.weight.grad[0] * 1.0, rtol=1e-10, atol=1e-12)


def test_force_sensitivities_equal_finite_differences(model_and_batch):
    model, sub, batch = model_and_batch
    rows = S.force_sensitivities(model, sub, mode="forward")  # (3·n_atoms_total, d)
    h = 1e-5
    pos = batch.positions.detach().clone()
    rng = np.random.default_rng(0)
    for atom in rng.choice(pos.shape[0], 4, replace=False):
        for k in range(3):
            plus, minus = pos.clone(), pos.clone()
            plus[atom, k] += h
            minus[atom, k] -= h
            with torch.no_grad():
                fd = -(_sum_sigma_h(model, batch, plus) - _sum_sigma_h(model, batch, minus)) / (2 * h)
            s = int(batch.structure[atom])
            np.testing.assert_allclose(rows[3 * atom + k], fd[s].numpy(), rtol=1e-6, atol=1e-8)


def test_forward_and_reverse_chunked_agree(model_and_batch, ethanol_structures):
    model = model_and_batch[0]
    sub = ethanol_structures.subset(np.arange(10))
    e1, f1 = S.all_sensitivities(model, sub, mode="forward", batch_size=3)
    e2, f2 = S.all_sensitivities(model, sub, mode="reverse", batch_size=10)
    np.testing.assert_allclose(f1, f2, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(e1, S.energy_sensitivities(model, sub), rtol=1e-12)
    assert f1.shape == (3 * int(sub.n_atoms.sum()), model.d)
