"""Numba CPU kernels (imported lazily: numba adds ≈0.3 s of start-up that not every command needs).

Top-level functions, so that ``cache=True`` keeps the compiled code between processes (closures
recompile every time, ≈3 s per kernel). The callers and the maths are in
:mod:`oedal.descriptor_kernel` (Gaussian moments for inference) and :mod:`oedal.feature_tangents`
(QS2 feature tangents); tests compare both with the torch implementations.
"""

from __future__ import annotations

import math

import numba
import numpy as np
import torch
from numba import njit, prange

# as many threads as torch uses (the CLI's --threads, OMP_NUM_THREADS), not every core of the node
numba.set_num_threads(max(1, min(torch.get_num_threads(), numba.config.NUMBA_NUM_THREADS)))
BLOCK = 64  # atoms per parallel work item of gaussian_moments (scratch is allocated per block)


@njit(parallel=True, fastmath=True, cache=True)
def gaussian_moments(disp, pair_type, start, beta, centres, gamma, r_cut, offsets, out, full2,
                     full3):  # pragma: no cover - compiled
    n_atoms = start.shape[0] - 1
    n, n_basis = beta.shape[1], beta.shape[2]
    dt = np.float64  # scratch and sums in float64 whatever the model dtype: no conversions in the loops
    o0, o11, o22, o33, o222, o112, o332, o321 = (offsets[0], offsets[1], offsets[2], offsets[3], offsets[4],
                                                 offsets[5], offsets[6], offsets[7])
    spacing = centres[1] - centres[0] if n_basis > 1 else 0.0
    decay = np.empty(n_basis, np.float64)  # exp(−γΔ²(2k − 1))
    for k in range(n_basis):
        decay[k] = math.exp(-gamma * spacing * spacing * (2 * k - 1))
    n_blocks = (n_atoms + BLOCK - 1) // BLOCK
    for block in prange(n_blocks):  # scratch allocated once per block of atoms, not per atom
        m0 = np.empty(n, dt)
        m1 = np.empty((n, 3), dt)
        m2 = np.empty((n, 3, 3), dt)
        m3 = np.empty((n, 3, 3, 3), dt)
        mu = np.empty((n, 20), np.float64)
        ang = np.empty(20, np.float64)
        rad = np.empty(n, np.float64)
        pm = np.empty((3, 3), dt)
        q = np.empty((n, n, 3), dt)
        g = np.empty((3, 3), dt)
        h = np.empty(3, dt)
        for atom in range(block * BLOCK, min(n_atoms, (block + 1) * BLOCK)):
            _one_atom(atom, disp, pair_type, start, beta, centres, gamma, r_cut, o0, o11, o22, o33, o222, o112,
                      o332, o321, out, m0, m1, m2, m3, mu, ang, rad, pm, q, g, h, spacing, decay, full2, full3)

@njit(fastmath=True, cache=True)
def _one_atom(atom, disp, pair_type, start, beta, centres, gamma, r_cut, o0, o11, o22, o33, o222, o112, o332,
              o321, out, m0, m1, m2, m3, mu, ang, rad, pm, q, g, h, spacing, decay, full2, full3):  # pragma: no cover
    n, n_basis = beta.shape[1], beta.shape[2]
    mu[:] = 0.0
    for p in range(start[atom], start[atom + 1]):
        r = math.sqrt(disp[p, 0] ** 2 + disp[p, 1] ** 2 + disp[p, 2] ** 2)
        x, y, z = disp[p, 0] / r, disp[p, 1] / r, disp[p, 2] / r
        # r̂^{⊗L} by unique components, in the order of descriptors.angular()
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
    for s in range(n):  # full symmetric tensors from the unique components
        m0[s] = mu[s, 0]
        for i in range(3):
            m1[s, i] = mu[s, 1 + i]
            for j in range(3):
                m2[s, i, j] = mu[s, full2[i, j]]
                for k in range(3):
                    m3[s, i, j, k] = mu[s, full3[i, j, k]]
    o = out[atom]
    if o0 >= 0:
        for s in range(n):
            o[o0 + s] = m0[s]
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
                for i in range(3):
                    for k in range(3):
                        acc = 0.0
                        for j in range(3):
                            acc += m2[a, i, j] * m2[b, j, k]
                        pm[i, k] = acc
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
                for k in range(3):
                    for l in range(3):
                        acc = 0.0
                        for i in range(3):
                            for j in range(3):
                                acc += m3[a, i, j, k] * m3[b, i, j, l]
                        g[k, l] = acc
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
                for k in range(3):
                    acc = 0.0
                    for i in range(3):
                        for j in range(3):
                            acc += m3[a, i, j, k] * m2[b, i, j]
                    h[k] = acc
                for t in range(n):
                    o[col] = h[0] * m1[t, 0] + h[1] * m1[t, 1] + h[2] * m1[t, 2]
                    col += 1


@njit(fastmath=True, cache=True)
def project(w, offset, g, yt, first):  # pragma: no cover - compiled
    for k in range(g.shape[0]):
        for u in range(g.shape[1]):
            gk = g[k, u]
            for j in range(w.shape[1]):
                w[offset + k, j] += gk * yt[first + u, j]

@njit(parallel=True, fastmath=True, cache=True)
def feature_tangents(v, yt, g1, g2, g3, frames, rads, cols, out):  # pragma: no cover - compiled
    n_atoms, n_rows = v.shape[0], v.shape[2]
    n_feat = rads.shape[1]
    k1, k2, k3 = g1.shape[1], g2.shape[1], g3.shape[1]
    for a in prange(n_atoms):
        w = np.zeros((2 + k1 + k2 + k3, n_rows), dtype=out.dtype)  # [1 | G1 y | G2 y | G3 y | 0]
        for j in range(n_rows):
            w[0, j] = yt[a, 0, j]
        project(w, 1, g1[a], yt[a], 1)
        project(w, 1 + k1, g2[a], yt[a], 4)
        project(w, 1 + k1 + k2, g3[a], yt[a], 10)
        tmp = np.empty((n_feat, n_rows), dtype=out.dtype)
        va = v[a]
        for f in range(n_feat):
            s0, s1, s2 = rads[0, f], rads[1, f], rads[2, f]
            c0, c1, c2 = cols[0, f], cols[1, f], cols[2, f]
            for j in range(n_rows):
                tmp[f, j] = va[s0, j] * w[c0, j] + va[s1, j] * w[c1, j] + va[s2, j] * w[c2, j]
        for t in range(n_rows // 3):
            for k in range(3):
                e0, e1, e2 = frames[a, t, 0, k], frames[a, t, 1, k], frames[a, t, 2, k]
                for f in range(n_feat):
                    out[a, t, k, f] = e0 * tmp[f, 3 * t] + e1 * tmp[f, 3 * t + 1] + e2 * tmp[f, 3 * t + 2]
