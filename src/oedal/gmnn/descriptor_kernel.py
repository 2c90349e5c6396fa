"""Gaussian-moment features for inference on a CPU: one fused numba loop per atom.

The same features as :class:`oedal.gmnn.descriptors.GaussianMoments` (tests/test_descriptor_kernel.py
holds them equal), computed for QS1 scoring, where no derivative is needed. The torch
module spends most of a QM9 scoring run on allocating, gathering and concatenating (atoms ×
hundreds) intermediates of tiny per-atom matrix products; here each atom's moments Ψ_L[s] and
their contractions stay in cache, and only the features are written.

Per atom i, over its pairs (grouped by centre atom, as BatchLoader makes them):
Ψ0[s] = Σ_j R_s, Ψ1[s] = Σ_j R_s r̂, Ψ2[s] = Σ_j R_s r̂⊗r̂, Ψ3[s] = Σ_j R_s r̂⊗r̂⊗r̂ (full tensors), then

* c11 Ψ1[a]·Ψ1[b], c22 Ψ2[a]:Ψ2[b], c33 Ψ3[a]⋮Ψ3[b]                   (a ≤ b)
* c222 tr(Ψ2[a] Ψ2[b] Ψ2[c])                                        (a ≤ b ≤ c)
* c112 Ψ1[a]ᵀ Ψ2[t] Ψ1[b]; c332 Σ Ψ3[a]_ijk Ψ3[b]_ijl Ψ2[t]_kl      (a ≤ b, all t)
* c321 Σ Ψ3[a]_ijk Ψ2[b]_ij Ψ1[t]_k                                  (all a, b, t)

in the order of descriptors._combos, through the shared intermediates G[a,b] = Ψ3[a]:Ψ3[b] (a 3×3
matrix), P[a,b] = Ψ2[a]Ψ2[b], Q[a,t] = Ψ1[a]Ψ2[t] and H[a,b] = Ψ3[a]:Ψ2[b] (≈5,000 multiply-adds
per atom at n_radial = 5).
"""

from __future__ import annotations

import numpy as np
import torch

from oedal.gmnn.descriptors import _L2, _L3, GaussianMoments, _full_index
from oedal.gmnn.jit import kernels as _kernels

# position in descriptors.angular()'s 20 unique components of every full index of r̂^{⊗2}, r̂^{⊗3}
FULL2 = np.array(_full_index(_L2, 2), np.int64).reshape(3, 3) + 4
FULL3 = np.array(_full_index(_L3, 3), np.int64).reshape(3, 3, 3) + 10
CONTRACTION_IDS = ("c0", "c11", "c22", "c33", "c222", "c112", "c332", "c321")


def features(desc: GaussianMoments, displacements: torch.Tensor, species: torch.Tensor, pair_i: torch.Tensor,
             pair_j: torch.Tensor, n_atoms: int) -> torch.Tensor | None:
    """Features (n_atoms, n_features) as ``desc(...)``, or None where this kernel does not apply
    (numba missing, not a CPU tensor, pairs not grouped by centre atom)."""
    kernels = _kernels()
    if kernels is None or displacements.device.type != "cpu":
        return None
    if pair_i.numel() and bool((pair_i[1:] < pair_i[:-1]).any()):
        return None
    dtype = desc.beta.dtype
    start = torch.zeros(n_atoms + 1, dtype=torch.int64)
    start[1:] = torch.cumsum(torch.bincount(pair_i, minlength=n_atoms), 0)
    pair_type = desc.pair_types(species, pair_i, pair_j)
    offsets = contraction_offsets(desc)
    out = torch.empty((n_atoms, desc.n_features), dtype=dtype)
    beta = (desc.beta.detach() * desc.basis_norm).contiguous()
    kernels.gaussian_moments(displacements.detach().to(dtype).contiguous().numpy(), pair_type.numpy(), start.numpy(),
                             beta.numpy(), desc.centres.double().numpy(), float(desc.gamma), float(desc.r_cut), offsets,
                             out.numpy(), FULL2, FULL3)
    return out


def contraction_offsets(desc: GaussianMoments) -> np.ndarray:
    """First feature column of every contraction in CONTRACTION_IDS order (−1: not used): (8,) int64."""
    offsets = np.full(len(CONTRACTION_IDS), -1, np.int64)
    column = 0
    for c in desc.contractions:
        offsets[CONTRACTION_IDS.index(c)] = column
        column += int(getattr(desc, f"_sel_{c}").numel())
    return offsets
