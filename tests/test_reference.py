"""Every route of the Gaussian moments equals their readable einsum form (oedal.gmnn.reference):
the torch module, the numba inference kernel and the features of the QS2 packed route."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from ase import Atoms

from oedal.data.structures import Structures
from oedal.gmnn import reference
from oedal.gmnn.batching import make_batch
from oedal.gmnn.descriptors import FULL_INDEX, UNIQUE_INDEX, GaussianMoments, combinations
from oedal.gmnn.kernels import using
from oedal.gmnn.model import GMNN
from oedal.gmnn.tangents import feature_tangents
from oedal.settings import CONTRACTIONS, DescriptorSettings, ModelSettings

CONTRACTION_SETS = [list(CONTRACTIONS), ["c321", "c0", "c222"], ["c332", "c112"], ["c33"], list(reversed(CONTRACTIONS))]


def _model(contractions, dtype="float64", r_cut=3.2, n_radial=4) -> GMNN:
    descriptor = {"r_cut": r_cut, "n_radial": n_radial, "contractions": contractions}
    ms = ModelSettings.model_validate({"dtype": dtype, "hidden": [8], "descriptor": descriptor})
    torch.manual_seed(2)
    return GMNN(ms, [1, 6, 8])


def _args(model: GMNN, structures) -> tuple:
    """(displacements, species, pair_i, pair_j, n_atoms) of one batch, pairs grouped by centre atom."""
    b = make_batch(structures, model.cutoff, model.species, dtype=model.dtype)
    return b.displacements().detach(), b.species, b.pair_i, b.pair_j, b.species.shape[0]


def _qs2_features(desc: GaussianMoments, disp, species, pair_i, pair_j, n_atoms: int) -> torch.Tensor:
    """The features of the QS2 packed route: kernels.pairs.pair_rows, then kernels.tangents.features_partners
    (each feature as its first factor's inner product with that factor's partner)."""
    ft, n_pairs, dtype = feature_tangents(desc), disp.shape[0], disp.numpy().dtype
    frames, r = np.empty((n_pairs, 3, 3), dtype), np.empty(n_pairs, dtype)
    v, y = np.empty((n_pairs, 3, desc.n_radial), dtype), np.empty((n_pairs, 3, 20), dtype)
    pair_start = np.concatenate([[0], np.cumsum(torch.bincount(pair_i, minlength=n_atoms).numpy())])
    x = np.empty((n_atoms, desc.n_features), dtype)
    partners = [np.empty((n_atoms, k, n), dtype) for k, n in zip(ft.n_partners, (3, 6, 10))]
    with using("numba") as kernels:
        kernels.pairs.pair_rows(disp.numpy(), desc.pair_types(species, pair_i, pair_j).numpy(),
                                desc.radial_basis(torch.float64), UNIQUE_INDEX, frames, r, v, y)
        kernels.tangents.features_partners((v, y), pair_start, (ft.rads_np, ft.cols_np), ft.family_flags, FULL_INDEX,
                                           x, *partners)
    return torch.from_numpy(x)


@pytest.mark.parametrize("n_radial", [1, 2, 4])
@pytest.mark.parametrize("contractions", CONTRACTION_SETS)
def test_every_route_equals_reference(contractions, n_radial, ethanol_structures, small_periodic_cells):
    """Molecules and periodic cells (several images of one neighbour and of the atom itself)."""
    model = _model(contractions, n_radial=n_radial)
    desc = model.descriptor
    for structures in (ethanol_structures.subset(np.arange(5)), small_periodic_cells):
        args = _args(model, structures)
        want = reference.features(desc, *args)
        assert want.shape == (args[-1], desc.n_features)
        with using("numba"):
            kernel = desc.inference_features(*args)
        routes = {"torch": desc(*args).detach(), "numba inference": kernel, "QS2 packed": _qs2_features(desc, *args)}
        for name, got in routes.items():
            torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12, msg=lambda m: f"{name}: {m}")


def test_float32_and_isolated_atoms(ethanol_structures):
    """float32 (the default model dtype) and an atom with no neighbours at all (zero features)."""
    model = _model(list(CONTRACTIONS), dtype="float32", r_cut=5.0, n_radial=5)
    lone = Structures.from_atoms([Atoms("H2O", positions=[[0, 0, 0], [0.96, 0, 0], [20.0, 0, 0]])])
    for structures in (ethanol_structures.subset(np.arange(5)), lone):
        args = _args(model, structures)
        want = reference.features(model.descriptor, *args).float()
        with using("numba"):
            kernel = model.descriptor.inference_features(*args)
        for got in (model.descriptor(*args).detach(), kernel, _qs2_features(model.descriptor, *args)):
            torch.testing.assert_close(got, want, rtol=2e-5, atol=2e-5 * float(want.abs().max()))


def test_unsorted_pairs_take_the_torch_route(ethanol_structures):
    """The numba inference kernel needs pairs grouped by centre atom; other orders go through forward()."""
    model = _model(list(CONTRACTIONS))
    disp, species, pair_i, pair_j, n_atoms = _args(model, ethanol_structures.subset([0]))
    perm = torch.randperm(pair_i.shape[0], generator=torch.Generator().manual_seed(0))
    with using("numba"):
        got = model.descriptor.inference_features(disp[perm], species, pair_i[perm], pair_j[perm], n_atoms)
    torch.testing.assert_close(got, reference.features(model.descriptor, disp, species, pair_i, pair_j, n_atoms))


def test_reference_of_one_neighbour_in_closed_form():
    """Two atoms: Ψ_L[s] = R_s r̂^{⊗L} with |r̂| = 1, so every contraction is the product of its
    factors' R_s (R_s from the basis written out by hand)."""
    settings = DescriptorSettings(r_cut=3.0, r_min=0.5, n_basis=4, n_radial=3)
    desc = GaussianMoments(settings, n_species=2, dtype=torch.float64)
    d = torch.tensor([[0.3, -1.1, 0.7]], dtype=torch.float64)
    args = (torch.cat([d, -d]), torch.tensor([0, 1]), torch.tensor([0, 1]), torch.tensor([1, 0]), 2)
    r, delta = float(d.norm()), (3.0 - 0.5) / 4
    fc = 0.5 * (math.cos(math.pi * r / 3.0) + 1.0)
    norm = (2 / (math.pi * delta**2)) ** 0.25 / math.sqrt(4)  # (2γ/π)^¼ / √n_basis, γ = 1/Δ²
    phi = [norm * math.exp(-((r - 0.5 - k * delta) / delta) ** 2) * fc for k in range(4)]
    beta = desc.beta.detach().reshape(2, 2, 3, 4)
    got = reference.features(desc, *args)
    for atom, (zi, zj) in enumerate(((0, 1), (1, 0))):
        rad = [sum(float(beta[zi, zj, s, k]) * phi[k] for k in range(4)) for s in range(3)]
        want = [math.prod(rad[s] for s in combo) for c in settings.contractions for combo in combinations(3, c)]
        np.testing.assert_allclose(got[atom].numpy(), want, rtol=1e-12, atol=1e-14)


def test_reference_is_rotation_and_permutation_invariant(ethanol_structures):
    model = _model(list(CONTRACTIONS), n_radial=3)
    disp, species, pair_i, pair_j, n_atoms = _args(model, ethanol_structures.subset([3]))
    want = reference.features(model.descriptor, disp, species, pair_i, pair_j, n_atoms)
    q, _ = np.linalg.qr(np.random.default_rng(1).normal(size=(3, 3)))
    rotation = torch.from_numpy(q * np.sign(np.linalg.det(q)))  # a proper rotation
    perm = torch.from_numpy(np.random.default_rng(0).permutation(len(pair_i)))
    got = reference.features(model.descriptor, (disp @ rotation.T)[perm], species, pair_i[perm], pair_j[perm], n_atoms)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    assert not torch.allclose(want[0], want[1])  # atoms differ: a constant would pass too

