"""QS1/QS2 sensitivities equal a full autograd Jacobian and central finite differences."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from oedal import feature_tangents as FT
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


def _autograd_forces(model, batch) -> torch.Tensor:
    """−∂(Σσh)/∂R by a full autograd Jacobian: (n_atoms, 3, d)."""
    J = torch.autograd.functional.jacobian(lambda p: _sum_sigma_h(model, batch, p), batch.positions)
    n_atoms = batch.positions.shape[0]
    return -J[batch.structure, :, torch.arange(n_atoms), :].permute(0, 2, 1).detach()


def _use_kernel(monkeypatch, kernel: str) -> None:
    """The structured mode's CPU kernel (numba), or its pure-torch path (GPUs, no numba)."""
    if kernel == "torch":
        monkeypatch.setattr(FT, "cpu_kernel", lambda: None)
    else:
        assert FT.cpu_kernel() is not None, "numba is a dependency"


@pytest.fixture(params=["numba", "torch"])
def kernel(request, monkeypatch):
    _use_kernel(monkeypatch, request.param)
    return request.param


@pytest.mark.parametrize("mode, kernel_name", [("structured", "numba"), ("structured", "torch"), ("forward", ""),
                                               ("reverse", "")])
def test_force_sensitivities_equal_autograd_jacobian(model_and_batch, mode, kernel_name, monkeypatch):
    _use_kernel(monkeypatch, kernel_name)
    model, _, batch = model_and_batch
    assert int(torch.bincount(batch.pair_i).min()) < int(torch.bincount(batch.pair_i).max())  # padded slots
    res = S.force_sensitivities_batch(model, batch, mode)
    torch.testing.assert_close(res.forces, _autograd_forces(model, batch), rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(res.energy, _sum_sigma_h(model, batch, batch.positions).detach())
    # QS1 sensitivity is ∂E/∂w: compare with autograd on the output weight
    model.zero_grad()
    model.energy(batch).sum().backward()
    torch.testing.assert_close(res.energy.sum(0), model.output.weight.grad[0] * 1.0, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("mode", ["structured", "forward"])
def test_force_sensitivities_equal_finite_differences(model_and_batch, mode):
    model, sub, batch = model_and_batch
    rows = S.force_sensitivities(model, sub, mode=mode)  # (3·n_atoms_total, d)
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
    e3, f3 = S.all_sensitivities(model, sub, batch_size=4)  # auto: structured, buffers reused across batches
    np.testing.assert_allclose(f1, f2, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(f3, f2, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(e1, S.energy_sensitivities(model, sub), rtol=1e-12)
    assert f1.shape == (3 * int(sub.n_atoms.sum()), model.d)


@pytest.mark.parametrize(
    "contractions, activation",
    [(["c0", "c11", "c22", "c33", "c222", "c112", "c332", "c321"], "silu"), (["c0", "c321", "c222"], "tanh"),
     (["c112", "c332"], "silu"), (["c11"], "tanh")],
)
def test_structured_mode_exact_for_any_contractions_cells_and_activation(contractions, activation, kernel,
                                                                         small_periodic_cells):
    """The closed-form feature tangents (every partner family) against autograd, in a periodic cell
    whose pair lists hold several images of one neighbour and of the centre atom itself."""
    ms = ModelSettings.model_validate({"dtype": "float64", "hidden": [16, 8], "activation": activation,
                                       "descriptor": {"r_cut": 3.2, "n_radial": 3, "contractions": contractions}})
    torch.manual_seed(1)
    model = GMNN(ms, [1, 6, 8])
    batch = make_batch(small_periodic_cells, model.cutoff, model.species, dtype=model.dtype)
    assert bool((batch.pair_i == batch.pair_j).any())  # self images
    res = S.force_sensitivities_batch(model, batch, "structured")
    torch.testing.assert_close(res.forces, _autograd_forces(model, batch), rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(res.energy, _sum_sigma_h(model, batch, batch.positions).detach())


def test_structured_mode_float32_matches_float64(ethanol_structures):
    """The default float32 model: the kernel's single-precision sums stay within float32 rounding."""
    torch.manual_seed(0)
    m32 = GMNN(ModelSettings(), [1, 6, 8])
    m64 = GMNN(ModelSettings.model_validate({"dtype": "float64"}), [1, 6, 8])
    m64.load_state_dict({k: v.double() for k, v in m32.state_dict().items()})
    sub = ethanol_structures.subset(np.arange(20))
    f32 = S.force_sensitivities(m32, sub, mode="structured")
    f64 = S.force_sensitivities(m64, sub, mode="reverse")
    assert np.abs(f32 - f64).max() <= 2e-5 * np.abs(f64).max()
