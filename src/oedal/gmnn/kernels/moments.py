"""Gaussian-moment features for inference on a CPU: one fused numba loop per atom.

The same features as :class:`oedal.gmnn.descriptors.GaussianMoments` (its torch twin; both are
tested against :mod:`oedal.gmnn.reference`), computed for QS1 scoring, where no derivative is
needed (GaussianMoments.inference_features). The torch module spends most of a QM9 scoring run on
allocating, gathering and concatenating (atoms × hundreds) intermediates of tiny per-atom matrix
products; here each atom's moments Ψ_L[s] and their contractions stay in cache, and only the
features are written.

Per atom i, over its pairs (grouped by centre atom, as BatchLoader makes them):
Ψ0[s] = Σ_j R_s, Ψ1[s] = Σ_j R_s r̂, Ψ2[s] = Σ_j R_s r̂⊗r̂, Ψ3[s] = Σ_j R_s r̂⊗r̂⊗r̂ (full tensors), then

* c11 Ψ1[a]·Ψ1[b], c22 Ψ2[a]:Ψ2[b], c33 Ψ3[a]⋮Ψ3[b]                   (a ≤ b)
* c222 tr(Ψ2[a] Ψ2[b] Ψ2[c])                                        (a ≤ b ≤ c)
* c112 Ψ1[a]ᵀ Ψ2[t] Ψ1[b]; c332 Σ Ψ3[a]_ijk Ψ3[b]_ijl Ψ2[t]_kl      (a ≤ b, all t)
* c321 Σ Ψ3[a]_ijk Ψ2[b]_ij Ψ1[t]_k                                  (all a, b, t)

in the order of descriptors.combinations, through the shared intermediates G[a,b] = Ψ3[a]:Ψ3[b]
(a 3×3 matrix), P[a,b] = Ψ2[a]Ψ2[b], Q[a,t] = Ψ1[a]Ψ2[t] and H[a,b] = Ψ3[a]:Ψ2[b] (≈5,000
multiply-adds per atom at n_radial = 5). The small-tensor helpers (full_tensors, matmul3, gram3,
contract32) are shared with the QS2 partners (.tangents).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

BLOCK = 64  # atoms per parallel work item (scratch is allocated per block)


@njit(parallel=True, fastmath=True, cache=True)
def gaussian_moments(disp, pair_type, start, basis, offsets, full, out):  # pragma: no cover - compiled
    """Features out (A, F) of the atoms whose pairs start at ``start`` (A + 1,), from the pairs'
    displacements disp (P, 3) Å and species-pair rows pair_type (P,). basis = (β·norm (T, n_radial,
    K), centres (K,) Å, γ Å⁻², r_c Å): GaussianMoments.radial_basis; offsets (8,): the first column
    of every contraction in settings.CONTRACTIONS order, −1 where not used
    (GaussianMoments.contraction_offsets); full = (full2 (3, 3), full3 (3, 3, 3)): descriptors.FULL_INDEX."""
    beta, centres, gamma = basis[0], basis[1], basis[2]
    n_atoms = start.shape[0] - 1
    n, n_basis = beta.shape[1], beta.shape[2]
    dt = np.float64  # scratch and sums in float64 whatever the model dtype: no conversions in the loops
    spacing = centres[1] - centres[0] if n_basis > 1 else 0.0
    decay = np.empty(n_basis, np.float64)  # exp(−γΔ²(2k − 1))
    for k in range(n_basis):
        decay[k] = math.exp(-gamma * spacing * spacing * (2 * k - 1))
    recurrence = (spacing, decay)
    n_blocks = (n_atoms + BLOCK - 1) // BLOCK
    for block in prange(n_blocks):  # scratch allocated once per block of atoms, not per atom
        scratch = (np.empty((n, 3), dt), np.empty((n, 3, 3), dt), np.empty((n, 3, 3, 3), dt),
                   np.empty((n, 20), np.float64), np.empty(20, np.float64), np.empty(n, np.float64),
                   np.empty((3, 3), dt), np.empty((n, n, 3), dt), np.empty((3, 3), dt), np.empty(3, dt))
        for atom in range(block * BLOCK, min(n_atoms, (block + 1) * BLOCK)):
            _one_atom(atom, disp, pair_type, start, basis, recurrence, offsets, full, out, scratch)


@njit(fastmath=True, cache=True)
def _one_atom(atom, disp, pair_type, start, basis, recurrence, offsets, full, out,
              scratch):  # pragma: no cover - compiled
    """One atom's moments mu (n_radial, 20) by unique components, then its features out[atom].
    recurrence = (Δ, exp(−γΔ²(2k − 1)) (K,)); scratch = (m1, m2, m3, mu, ang, rad, pm, q, g, h)."""
    beta, centres, gamma, r_cut = basis
    spacing, decay = recurrence
    mu, ang, rad = scratch[3], scratch[4], scratch[5]
    n, n_basis = beta.shape[1], beta.shape[2]
    mu[:] = 0.0
    for p in range(start[atom], start[atom + 1]):
        r = math.sqrt(disp[p, 0] ** 2 + disp[p, 1] ** 2 + disp[p, 2] ** 2)
        x, y, z = disp[p, 0] / r, disp[p, 1] / r, disp[p, 2] / r
        # r̂^{⊗L} by unique components, in the order of GaussianMoments.angular()
        ang[0], ang[1], ang[2], ang[3] = 1.0, x, y, z
        ang[4], ang[5], ang[6], ang[7], ang[8], ang[9] = x * x, y * y, z * z, x * y, x * z, y * z
        ang[10], ang[11], ang[12], ang[13], ang[14] = x * x * x, y * y * y, z * z * z, x * x * y, x * x * z
        ang[15], ang[16], ang[17], ang[18], ang[19] = x * y * y, y * y * z, x * z * z, y * z * z, x * y * z
        # Gaussians on equally spaced centres c_k = c_0 + kΔ by the recurrence
        # φ_k = φ_{k−1} · exp(2γΔ(r − c_0)) · exp(−γΔ²(2k − 1)): two exp per pair instead of n_basis
        fc = 0.5 * (math.cos(min(r, r_cut) * (math.pi / r_cut)) + 1.0)
        d0 = r - centres[0]
        phi_k = math.exp(-gamma * d0 * d0) * fc
        step = math.exp(2.0 * gamma * spacing * d0)
        t = pair_type[p]
        for k in range(n_basis):
            if k > 0:
                phi_k *= step * decay[k]
            for s in range(n):
                rad[s] = beta[t, s, k] * phi_k + (rad[s] if k > 0 else 0.0)
        for s in range(n):
            for c in range(20):
                mu[s, c] += rad[s] * ang[c]
    _atom_features(mu, n, offsets, out[atom], scratch, full)


@njit(fastmath=True, cache=True)
def _atom_features(mu, n, offsets, o, scratch, full):  # pragma: no cover - compiled
    """One atom's features o from its moments mu (n_radial, 20); m1..m3 of scratch receive the full tensors."""
    m1, m2, m3, pm, q, g, h = scratch[0], scratch[1], scratch[2], scratch[6], scratch[7], scratch[8], scratch[9]
    o0, o11, o22, o33, o222, o112, o332, o321 = (offsets[0], offsets[1], offsets[2], offsets[3], offsets[4],
                                                 offsets[5], offsets[6], offsets[7])
    full_tensors(mu, n, full, m1, m2, m3)
    if o0 >= 0:
        for s in range(n):
            o[o0 + s] = mu[s, 0]
    col11, col22, col33 = o11, o22, o33
    for a in range(n):
        for b in range(a, n):
            if o11 >= 0:
                acc = 0.0
                for i in range(3):
                    acc += m1[a, i] * m1[b, i]
                o[col11] = acc
                col11 += 1
            if o22 >= 0:
                acc = 0.0
                for i in range(3):
                    for j in range(3):
                        acc += m2[a, i, j] * m2[b, i, j]
                o[col22] = acc
                col22 += 1
            if o33 >= 0:
                acc = 0.0
                for i in range(3):
                    for j in range(3):
                        for k in range(3):
                            acc += m3[a, i, j, k] * m3[b, i, j, k]
                o[col33] = acc
                col33 += 1
    if o222 >= 0:  # tr(Ψ2[a] Ψ2[b] Ψ2[c]) via P = Ψ2[a] Ψ2[b]
        col = o222
        for a in range(n):
            for b in range(a, n):
                matmul3(m2[a], m2[b], pm)
                for c in range(b, n):
                    acc = 0.0
                    for i in range(3):
                        for k in range(3):
                            acc += pm[i, k] * m2[c, k, i]
                    o[col] = acc
                    col += 1
    if o112 >= 0:  # Ψ1[a]ᵀ Ψ2[t] Ψ1[b]
        # Q[a, t]_j = Σ_i Ψ1[a]_i Ψ2[t]_ij
        for a in range(n):
            for t in range(n):
                for j in range(3):
                    acc = 0.0
                    for i in range(3):
                        acc += m1[a, i] * m2[t, i, j]
                    q[a, t, j] = acc
        col = o112
        for a in range(n):
            for b in range(a, n):
                for t in range(n):
                    acc = 0.0
                    for j in range(3):
                        acc += q[a, t, j] * m1[b, j]
                    o[col] = acc
                    col += 1
    if o332 >= 0:  # Σ Ψ3[a]_ijk Ψ3[b]_ijl Ψ2[t]_kl via G = Ψ3[a]:Ψ3[b]
        col = o332
        for a in range(n):
            for b in range(a, n):
                gram3(m3[a], m3[b], g)
                for t in range(n):
                    acc = 0.0
                    for k in range(3):
                        for l in range(3):
                            acc += g[k, l] * m2[t, k, l]
                    o[col] = acc
                    col += 1
    if o321 >= 0:  # Σ Ψ3[a]_ijk Ψ2[b]_ij Ψ1[t]_k via H = Ψ3[a]:Ψ2[b]
        col = o321
        for a in range(n):
            for b in range(n):
                contract32(m3[a], m2[b], h)
                for t in range(n):
                    o[col] = h[0] * m1[t, 0] + h[1] * m1[t, 1] + h[2] * m1[t, 2]
                    col += 1


@njit(fastmath=True, cache=True)
def full_tensors(mu, n, full, m1, m2, m3):  # pragma: no cover - compiled
    """Full symmetric Ψ1[s], Ψ2[s], Ψ3[s] from the unique components mu (n_radial, 20); full = (full2, full3)."""
    full2, full3 = full
    for s in range(n):
        for i in range(3):
            m1[s, i] = mu[s, 1 + i]
            for j in range(3):
                m2[s, i, j] = mu[s, full2[i, j]]
                for k in range(3):
                    m3[s, i, j, k] = mu[s, full3[i, j, k]]


@njit(fastmath=True, cache=True)
def matmul3(x, y, out):  # pragma: no cover - compiled
    """out = x y for 3 × 3 matrices (Ψ2[a] Ψ2[b])."""
    for i in range(3):
        for k in range(3):
            out[i, k] = x[i, 0] * y[0, k] + x[i, 1] * y[1, k] + x[i, 2] * y[2, k]


@njit(fastmath=True, cache=True)
def gram3(x, y, out):  # pragma: no cover - compiled
    """out[k, l] = Σ_ij x_ijk y_ijl (Ψ3[a]:Ψ3[b], a 3 × 3 matrix)."""
    for k in range(3):
        for l in range(3):
            acc = 0.0
            for i in range(3):
                for j in range(3):
                    acc += x[i, j, k] * y[i, j, l]
            out[k, l] = acc


@njit(fastmath=True, cache=True)
def contract32(x, y, out):  # pragma: no cover - compiled
    """out[k] = Σ_ij x_ijk y_ij (Ψ3[a]:Ψ2[b], a vector)."""
    for k in range(3):
        acc = 0.0
        for i in range(3):
            for j in range(3):
                acc += x[i, j, k] * y[i, j]
        out[k] = acc
