"""The readable form of the Gaussian moments: the spec every fast route is tested against.

Full moment tensors and one einsum per contraction over them (as apax's descriptor), in float64,
with no unique components, index tables or fused loops (DESIGN §4; Zaverkin & Kästner, JCTC 16,
5410 (2020)). Per atom i, over its pairs p = (i, j) with r = |r_ij| < r_c and r̂ = r_ij / r:

    f_c(r) = ½ (cos(π r / r_c) + 1),   φ_k(r) = (2γ/π)^¼ exp(−γ (r − r_k)²) / √n_basis,
    r_k = r_min + kΔ,  Δ = (r_c − r_min) / n_basis,  γ = 1/Δ²,
    R_s(r) = Σ_k β[Z_i, Z_j, s, k] φ_k(r) f_c(r),
    Ψ_L[s] = Σ_j R_s(r_ij) r̂_ij^{⊗L}   (L = 0..3: a scalar, a vector, 3×3 and 3×3×3 tensors),

and the features are the rotation invariants of :data:`EINSUM`, each indexed by its radial
indices, in the order of the descriptor: contractions as in the settings, and within one the
unique radial combinations of :func:`oedal.gmnn.descriptors.combinations` (a ≤ b for c11, c22,
c33, c112, c332; a ≤ b ≤ c for c222; all for c321).

The fast routes: GaussianMoments.forward (torch: unique components, four batched matmuls),
GaussianMoments.inference_features (kernels.moments.gaussian_moments) and the QS2 features
(kernels.tangents.features_partners, FeatureTangents); tests/test_reference.py holds them equal
to :func:`features`.
"""

from __future__ import annotations

import math

import torch

from oedal.gmnn.descriptors import GaussianMoments, combinations

# feature [atom, radial indices...] of every contraction, from the full moment tensors Ψ_L[atom, s, ...]
EINSUM = {
    "c0": ("na->na", (0,)),  # Ψ0[a]
    "c11": ("nai,nbi->nab", (1, 1)),  # Ψ1[a]·Ψ1[b]
    "c22": ("naij,nbij->nab", (2, 2)),  # Ψ2[a]:Ψ2[b]
    "c33": ("naijk,nbijk->nab", (3, 3)),  # Ψ3[a]⋮Ψ3[b]
    "c222": ("naij,nbjk,ncki->nabc", (2, 2, 2)),  # tr(Ψ2[a] Ψ2[b] Ψ2[c])
    "c112": ("nai,ntij,nbj->nabt", (1, 2, 1)),  # Ψ1[a]ᵀ Ψ2[t] Ψ1[b]
    "c332": ("naijk,nbijl,ntkl->nabt", (3, 3, 2)),  # Σ Ψ3[a]_ijk Ψ3[b]_ijl Ψ2[t]_kl
    "c321": ("naijk,nbij,ntk->nabt", (3, 2, 1)),  # Σ Ψ3[a]_ijk Ψ2[b]_ij Ψ1[t]_k
}


def radial_functions(desc: GaussianMoments, r: torch.Tensor, species: torch.Tensor, pair_i: torch.Tensor,
                     pair_j: torch.Tensor) -> torch.Tensor:
    """R_s(r) (n_pairs, n_radial) float64 from the distances r (n_pairs,) Å, the basis rebuilt from
    the settings and β[Z_i, Z_j, s, k] read from the descriptor's (n_species², n_radial, n_basis)."""
    s = desc.settings
    spacing = (s.r_cut - s.r_min) / s.n_basis
    gamma = 1.0 / spacing**2
    centres = s.r_min + spacing * torch.arange(s.n_basis, dtype=torch.float64)  # (K,) Å
    fc = torch.where(r < s.r_cut, 0.5 * (torch.cos(math.pi * r / s.r_cut) + 1.0), torch.zeros_like(r))
    phi = (2.0 * gamma / math.pi) ** 0.25 / math.sqrt(s.n_basis) * torch.exp(-gamma * (r[:, None] - centres) ** 2)
    n_species = desc.n_species
    beta = desc.beta.detach().double().reshape(n_species, n_species, s.n_radial, s.n_basis)
    return torch.einsum("psk,pk->ps", beta[species[pair_i], species[pair_j]], phi * fc[:, None])


def moment_tensors(desc: GaussianMoments, displacements: torch.Tensor, species: torch.Tensor, pair_i: torch.Tensor,
                   pair_j: torch.Tensor, n_atoms: int) -> list[torch.Tensor]:
    """[Ψ0, Ψ1, Ψ2, Ψ3]: the full moment tensors Ψ_L[s] = Σ_j R_s r̂^{⊗L}, (n_atoms, n_radial, 3, ..., 3)
    float64 with L axes of 3."""
    disp = displacements.detach().double()  # (P, 3) Å
    r = torch.linalg.vector_norm(disp, dim=1)
    u = disp / r[:, None]
    rad = radial_functions(desc, r, species, pair_i, pair_j)  # (P, n_radial)
    powers = [torch.ones_like(r), u, torch.einsum("pi,pj->pij", u, u), torch.einsum("pi,pj,pk->pijk", u, u, u)]
    out = []
    for L, power in enumerate(powers):
        term = torch.einsum("ps,p...->ps...", rad, power)  # (P, n_radial, 3^L)
        out.append(term.new_zeros((n_atoms, *term.shape[1:])).index_add(0, pair_i, term))
    return out


def features(desc: GaussianMoments, displacements: torch.Tensor, species: torch.Tensor, pair_i: torch.Tensor,
             pair_j: torch.Tensor, n_atoms: int) -> torch.Tensor:
    """The Gaussian-moment features (n_atoms, n_features) float64, in the descriptor's order; the
    arguments as GaussianMoments.forward (displacements r_ij = R_j − R_i + shift (n_pairs, 3) Å)."""
    psi = moment_tensors(desc, displacements, species, pair_i, pair_j, n_atoms)
    columns = []
    for kind in desc.contractions:
        equation, ranks = EINSUM[kind]
        full = torch.einsum(equation, *(psi[L] for L in ranks))  # (n_atoms, n_radial, ..., n_radial)
        index = torch.tensor(combinations(desc.n_radial, kind)).T  # (order, n_combinations)
        columns.append(full[(slice(None), *index)])
    return torch.cat(columns, dim=1)
