"""Gaussian-moment descriptors: feature counts, the readable reference, functional transforms."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from oedal.gmnn import reference
from oedal.gmnn.descriptors import GaussianMoments, n_features
from oedal.settings import CONTRACTIONS, DescriptorSettings


def small_cluster(seed=0, n_atoms=5):
    rng = np.random.default_rng(seed)
    pos = rng.uniform(0, 2.5, size=(n_atoms, 3))
    species = rng.integers(0, 2, size=n_atoms)
    pi, pj = np.nonzero(~np.eye(n_atoms, dtype=bool))
    return pos, species, pi, pj


def test_feature_count_matches_apax():
    assert n_features(DescriptorSettings(n_radial=5)) == 360
    assert n_features(DescriptorSettings(n_radial=1, contractions=["c0", "c11"])) == 2


@pytest.mark.parametrize("n_radial,contractions", [(3, list(CONTRACTIONS)), (2, ["c321", "c0", "c222"])])
def test_unique_component_contractions_equal_reference(n_radial, contractions):
    """A dense cluster (every pair, some beyond r_c) against gmnn.reference (full tensors, einsums)."""
    settings = DescriptorSettings(r_cut=3.0, r_min=0.5, n_basis=4, n_radial=n_radial, contractions=contractions)
    gm = GaussianMoments(settings, n_species=2, dtype=torch.float64)
    pos, species, pi, pj = small_cluster()
    args = (torch.tensor(pos[pj] - pos[pi]), torch.tensor(species), torch.tensor(pi), torch.tensor(pj), len(pos))
    got = gm(*args)
    assert got.shape == (len(pos), n_features(settings))
    np.testing.assert_allclose(got.detach().numpy(), reference.features(gm, *args).numpy(), rtol=1e-10, atol=1e-12)


def test_jvp_and_vmap_through_descriptor_match_autograd():
    settings = DescriptorSettings(r_cut=3.0, n_basis=4, n_radial=3)
    gm = GaussianMoments(settings, n_species=2, dtype=torch.float64)
    pos, species, pi, pj = small_cluster(1)
    disp = torch.tensor(pos[pj] - pos[pi])
    args = (torch.tensor(species), torch.tensor(pi), torch.tensor(pj), len(pos))
    w = torch.randn(len(pos), gm.n_features, dtype=torch.float64)

    def f(d):
        return (gm(d, *args) * w).sum()

    tangent = torch.randn_like(disp)
    _, jvp = torch.func.jvp(f, (disp,), (tangent,))
    d = disp.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(f(d), d)
    assert torch.allclose(jvp, (grad * tangent).sum(), rtol=1e-10)
    # vmap over a stack of tangents (what force sensitivities do)
    tangents = torch.randn(4, *disp.shape, dtype=torch.float64)
    vj = torch.func.vmap(lambda t: torch.func.jvp(f, (disp,), (t,))[1])(tangents)
    assert torch.allclose(vj, (grad[None] * tangents).sum(dim=(1, 2)), rtol=1e-10)


def test_padded_neighbour_layout_equals_scatter():
    """Pairs grouped by centre atom (padded batched matmul) give the same moments as unordered pairs (scatter)."""
    settings = DescriptorSettings(r_cut=2.0, n_basis=4, n_radial=3)
    gm = GaussianMoments(settings, n_species=2, dtype=torch.float64)
    pos, species, pi, pj = small_cluster(2, n_atoms=7)
    keep = np.linalg.norm(pos[pj] - pos[pi], axis=1) < 2.0  # uneven neighbour counts
    pi, pj = pi[keep], pj[keep]
    assert len(set(np.bincount(pi, minlength=7))) > 1
    order = np.random.default_rng(0).permutation(len(pi))
    args = lambda i, j: (torch.tensor(pos[j] - pos[i]), torch.tensor(species), torch.tensor(i), torch.tensor(j), 7)
    grouped = gm(*args(pi, pj))
    shuffled = gm(*args(pi[order], pj[order]))
    assert torch.allclose(grouped, shuffled, rtol=1e-12, atol=1e-12)
    # forward-mode and vmap through the padded layout too
    d0 = torch.tensor(pos[pj] - pos[pi])
    rest = (torch.tensor(species), torch.tensor(pi), torch.tensor(pj), 7)
    tangents = torch.randn(3, *d0.shape, dtype=torch.float64)
    jv = torch.func.vmap(lambda t: torch.func.jvp(lambda d: gm(d, *rest).sum(), (d0,), (t,))[1])(tangents)
    d = d0.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(gm(d, *rest).sum(), d)
    assert torch.allclose(jv, (grad[None] * tangents).sum(dim=(1, 2)), rtol=1e-10)


@pytest.mark.parametrize("n_species", [1, 3, 5])
def test_radial_paths_agree(n_species):
    """The β-gather path (no double backward: inference, scoring) equals the all-types path (training)."""
    torch.manual_seed(n_species)
    desc = GaussianMoments(DescriptorSettings(r_cut=4.0, n_basis=6, n_radial=4), n_species, torch.float64)
    r = torch.rand(200, dtype=torch.float64) * 3.5 + 0.3
    pair_type = torch.randint(0, n_species * n_species, (200,))
    with torch.no_grad():
        gathered = desc.radial(r, pair_type)
    with torch.enable_grad():
        every_type = desc.radial(r, pair_type)
    desc.first_order_only = True
    with torch.enable_grad():
        first_order = desc.radial(r, pair_type)
    # brute force: R_s = Σ_k β[type, s, k] φ_k(r) f_c(r)
    phi = torch.exp(-desc.gamma * (r[:, None] - desc.centres) ** 2) * desc.basis_norm
    fc = 0.5 * (torch.cos(math.pi * r / 4.0) + 1.0)
    brute = torch.einsum("psk,pk->ps", desc.beta[pair_type].detach(), phi * fc[:, None])
    for got in (gathered, every_type, first_order):
        torch.testing.assert_close(got.detach(), brute, rtol=1e-12, atol=1e-12)
