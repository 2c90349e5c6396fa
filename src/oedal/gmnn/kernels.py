"""Numba CPU kernels (loaded through :func:`oedal.gmnn.jit.kernels` on first use: numba adds ≈0.3 s of
start-up that not every command needs).

Top-level functions, so that ``cache=True`` keeps the compiled code between processes (closures
recompile every time, ≈3 s per kernel). The callers and the maths are in
:mod:`oedal.gmnn.neighbors` (pairs of molecules), :mod:`oedal.gmnn.descriptor_kernel` (Gaussian moments for inference) and
:func:`oedal.oed.sensitivities._structured_packed` with :mod:`oedal.gmnn.feature_tangents` (QS2: pair
terms, features and partners, tangent rows, the scatter to atoms); tests compare them with the
torch implementations and with autograd.
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
SMALL_BLOCK = 8  # atoms per parallel work item of tangent_rows (called on ≈ 200 atoms at a time)


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
                      o332, o321, out, m1, m2, m3, mu, ang, rad, pm, q, g, h, spacing, decay, full2, full3)

@njit(fastmath=True, cache=True)
def _one_atom(atom, disp, pair_type, start, beta, centres, gamma, r_cut, o0, o11, o22, o33, o222, o112, o332,
              o321, out, m1, m2, m3, mu, ang, rad, pm, q, g, h, spacing, decay, full2, full3):  # pragma: no cover
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
    _atom_features(mu, n, o0, o11, o22, o33, o222, o112, o332, o321, out[atom], m1, m2, m3, pm, q, g, h, full2,
                   full3)


@njit(fastmath=True, cache=True)
def _atom_features(mu, n, o0, o11, o22, o33, o222, o112, o332, o321, o, m1, m2, m3, pm, q, g, h, full2,
                   full3):  # pragma: no cover - compiled
    """One atom's features o from its moments mu (n_radial, 20); m1..m3 receive the full tensors."""
    _full_tensors(mu, n, full2, full3, m1, m2, m3)
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
                _matmul3(m2[a], m2[b], pm)
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
                _gram3(m3[a], m3[b], g)
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
                _contract32(m3[a], m2[b], h)
                for t in range(n):
                    o[col] = h[0] * m1[t, 0] + h[1] * m1[t, 1] + h[2] * m1[t, 2]
                    col += 1


@njit(fastmath=True, cache=True)
def _full_tensors(mu, n, full2, full3, m1, m2, m3):  # pragma: no cover - compiled
    """Full symmetric Ψ1[s], Ψ2[s], Ψ3[s] from the unique components mu (n_radial, 20)."""
    for s in range(n):
        for i in range(3):
            m1[s, i] = mu[s, 1 + i]
            for j in range(3):
                m2[s, i, j] = mu[s, full2[i, j]]
                for k in range(3):
                    m3[s, i, j, k] = mu[s, full3[i, j, k]]


@njit(fastmath=True, cache=True)
def _matmul3(x, y, out):  # pragma: no cover - compiled
    """out = x y for 3 × 3 matrices (Ψ2[a] Ψ2[b])."""
    for i in range(3):
        for k in range(3):
            out[i, k] = x[i, 0] * y[0, k] + x[i, 1] * y[1, k] + x[i, 2] * y[2, k]


@njit(fastmath=True, cache=True)
def _gram3(x, y, out):  # pragma: no cover - compiled
    """out[k, l] = Σ_ij x_ijk y_ijl (Ψ3[a]:Ψ3[b], a 3 × 3 matrix)."""
    for k in range(3):
        for l in range(3):
            acc = 0.0
            for i in range(3):
                for j in range(3):
                    acc += x[i, j, k] * y[i, j, l]
            out[k, l] = acc


@njit(fastmath=True, cache=True)
def _contract32(x, y, out):  # pragma: no cover - compiled
    """out[k] = Σ_ij x_ijk y_ij (Ψ3[a]:Ψ2[b], a vector)."""
    for k in range(3):
        acc = 0.0
        for i in range(3):
            for j in range(3):
                acc += x[i, j, k] * y[i, j]
        out[k] = acc


# ---- QS2 in packed rows (sensitivities._structured_packed): the three rotational modes of every atom ----
# A pair's rows are r = 3·(its rank among the atom's pairs) + e, e = 0 along r̂, 1 along e1, 2 along e2.
# A rotation ω moves every pair of atom i by ω × r_p, whose e1 and e2 components are r_p ω·e2_p and
# −r_p ω·e1_p, and leaves D_i unchanged: Σ_p r_p [(ω·e2_p) T_{p,1} − (ω·e1_p) T_{p,2}] = 0 for every ω,
# for the feature tangents T and so for their images O through the MLP. Three rows per atom follow
# from the others (two for a single neighbour or a collinear neighbourhood).


@njit(fastmath=True, cache=True)
def _kappa(u0, u1, u2, frames, r, p, e):  # pragma: no cover - compiled
    """u·m_{p,e}: the rotational coefficient of row (p, e) along u, m_{p,1} = r_p e2_p, m_{p,2} = −r_p e1_p."""
    if e == 1:
        return r[p] * (u0 * frames[p, 2, 0] + u1 * frames[p, 2, 1] + u2 * frames[p, 2, 2])
    return -r[p] * (u0 * frames[p, 1, 0] + u1 * frames[p, 1, 1] + u2 * frames[p, 1, 2])


@njit(parallel=True, cache=True)
def rotation_drops(frames, r, pair_start, tau, drop, counts):  # pragma: no cover - compiled
    """Rows not computed, per atom (−1: none): the two transverse rows of the farthest pair p1, then
    the transverse row with the largest coefficient along r̂_{p1}, if that is ≥ tau·r_{p1}. With p1
    the farthest and the third row the largest, every coefficient in scatter_rows is ≤ 1 in size."""
    for a in prange(pair_start.shape[0] - 1):
        p0, n = pair_start[a], pair_start[a + 1] - pair_start[a]
        drop[a, 0], drop[a, 1], drop[a, 2] = -1, -1, -1
        counts[a] = 0
        if n == 0:
            continue
        j1 = 0
        for j in range(1, n):
            if r[p0 + j] > r[p0 + j1]:
                j1 = j
        drop[a, 0], drop[a, 1] = 3 * j1 + 1, 3 * j1 + 2
        p1 = p0 + j1
        best, row = 0.0, -1
        for j in range(n):
            if j != j1:
                for e in range(1, 3):
                    k = abs(_kappa(frames[p1, 0, 0], frames[p1, 0, 1], frames[p1, 0, 2], frames, r, p0 + j, e))
                    if k > best:
                        best, row = k, 3 * j + e
        if best >= tau * r[p1]:
            drop[a, 2] = row
        counts[a] = 3 * n - (2 if drop[a, 2] < 0 else 3)


@njit(parallel=True, fastmath=True, cache=True)
def tangent_rows(v, y, g1, g2, g3, rads, cols, pair_start, row_start, drop, max_pairs, first, last,
                 out):  # pragma: no cover - compiled
    """Feature tangents of the kept rows of atoms first..last−1, in the pairs' frames: out (rows, F),
    atom a's from row row_start[a] − row_start[first].

    v (P, 3, n_radial) and y (P, 3, 20): the radial and angular factor of each pair's three rows;
    g1, g2, g3 (A, K_L, unique components): the partners; rads, cols (3, F): radial index and
    partner column of the factors of every feature (FeatureTangents). Per atom the work runs along
    its rows (the contiguous axis), then the kept rows are written out."""
    n_feat, n_rad = rads.shape[1], v.shape[2]
    k1, k2, k3 = g1.shape[1], g2.shape[1], g3.shape[1]
    n_blocks = (last - first + SMALL_BLOCK - 1) // SMALL_BLOCK
    for block in prange(n_blocks):
        m = _round8(3 * max_pairs)
        yt = np.zeros((20, m), dtype=out.dtype)  # zeros: the padding columns hold finite values
        vt = np.zeros((n_rad, m), dtype=out.dtype)
        w = np.zeros((2 + k1 + k2 + k3, m), dtype=out.dtype)  # [1 | G1 y | G2 y | G3 y | 0] by row
        tmp = np.empty((n_feat, m), dtype=out.dtype)
        for a in range(first + block * SMALL_BLOCK, min(last, first + (block + 1) * SMALL_BLOCK)):
            p0, nr = pair_start[a], 3 * (pair_start[a + 1] - pair_start[a])
            nv = _round8(nr)  # loops over whole vectors (21 rows → 24: 1.2× faster); the padding is never written out
            for j in range(nr):
                for u in range(20):
                    yt[u, j] = y[p0 + j // 3, j % 3, u]
                for s in range(n_rad):
                    vt[s, j] = v[p0 + j // 3, j % 3, s]
            for j in range(nv):
                w[0, j] = yt[0, j]
            _project1(w, 1, g1[a], yt, nv)
            _project2(w, 1 + k1, g2[a], yt, nv)
            _project3(w, 1 + k1 + k2, g3[a], yt, nv)
            for f in range(n_feat):
                s0, s1, s2 = rads[0, f], rads[1, f], rads[2, f]
                c0, c1, c2 = cols[0, f], cols[1, f], cols[2, f]
                for j in range(nv):
                    tmp[f, j] = vt[s0, j] * w[c0, j] + vt[s1, j] * w[c1, j] + vt[s2, j] * w[c2, j]
            row = row_start[a] - row_start[first]
            for j in range(nr):
                if j != drop[a, 0] and j != drop[a, 1] and j != drop[a, 2]:
                    o = out[row]
                    for f in range(n_feat):
                        o[f] = tmp[f, j]
                    row += 1


@njit(fastmath=True, cache=True)
def _round8(n):  # pragma: no cover - compiled
    """n rounded up to a multiple of 8 (one AVX vector of float32)."""
    return (n + 7) // 8 * 8


@njit(fastmath=True, cache=True)
def _project1(w, offset, g, yt, nr):  # pragma: no cover - compiled
    """w[offset + k, j] = Σ_u g[k, u] yt[1 + u, j]: the rank-1 partners' inner products with the rows
    (one expression per row vector: no read-modify-write of w per component)."""
    for k in range(g.shape[0]):
        a0, a1, a2 = g[k, 0], g[k, 1], g[k, 2]
        for j in range(nr):
            w[offset + k, j] = a0 * yt[1, j] + a1 * yt[2, j] + a2 * yt[3, j]


@njit(fastmath=True, cache=True)
def _project2(w, offset, g, yt, nr):  # pragma: no cover - compiled
    """The same for rank 2 (unique components 4..9 of the rows)."""
    for k in range(g.shape[0]):
        a0, a1, a2, a3, a4, a5 = g[k, 0], g[k, 1], g[k, 2], g[k, 3], g[k, 4], g[k, 5]
        for j in range(nr):
            w[offset + k, j] = (a0 * yt[4, j] + a1 * yt[5, j] + a2 * yt[6, j] + a3 * yt[7, j] + a4 * yt[8, j]
                                + a5 * yt[9, j])


@njit(fastmath=True, cache=True)
def _project3(w, offset, g, yt, nr):  # pragma: no cover - compiled
    """The same for rank 3 (unique components 10..19)."""
    for k in range(g.shape[0]):
        a0, a1, a2, a3, a4 = g[k, 0], g[k, 1], g[k, 2], g[k, 3], g[k, 4]
        a5, a6, a7, a8, a9 = g[k, 5], g[k, 6], g[k, 7], g[k, 8], g[k, 9]
        for j in range(nr):
            w[offset + k, j] = (a0 * yt[10, j] + a1 * yt[11, j] + a2 * yt[12, j] + a3 * yt[13, j] + a4 * yt[14, j]
                                + a5 * yt[15, j] + a6 * yt[16, j] + a7 * yt[17, j] + a8 * yt[18, j] + a9 * yt[19, j])


@njit(parallel=True, fastmath=True, cache=True)
def scale_rows(z, g, row_start, first, last):  # pragma: no cover - compiled
    """z[row] *= g[atom of row] for atoms first..last−1, in place: act'(z) between two layers,
    (rows, width) by (A, width); z starts at atom ``first``'s rows."""
    for a in prange(first, last):
        ga = g[a]
        for row in range(row_start[a] - row_start[first], row_start[a + 1] - row_start[first]):
            zr = z[row]
            for c in range(zr.shape[0]):
                zr[c] *= ga[c]


@njit(parallel=True, fastmath=True, cache=True)
def scatter_rows(z, g, frames, r, pair_start, row_start, drop, pair_j, atom_start, max_pairs, first, last,
                 out):  # pragma: no cover - compiled
    """Force sensitivities of structures first..last−1 from the MLP images z (rows, d) of their kept
    rows (z starts at the structure ``first``'s), added into out (A, 3, d) float64.

    Per atom: the dropped rows from the rotational relations (the third first, as the other two
    use it), the frame rotated back to x, y, z, times g = σ·act'(z_last), then +c to the centre
    atom and −c to the neighbour (F = −∂E/∂R, r_p = R_j − R_i + shift). In parallel over
    structures, so no two threads add to one atom."""
    d = z.shape[1]
    offset = row_start[atom_start[first]]
    for s in prange(first, last):
        o = np.empty((3 * max_pairs, d), z.dtype)  # the atom's rows, kept and rebuilt
        xyz = np.empty((3, d), z.dtype)  # one pair's c in x, y, z
        centre = np.empty((3, d), z.dtype)  # Σ over the atom's pairs
        rec = np.empty((3, d), z.dtype)  # the rebuilt rows: third, then p1's along e1 and e2
        a0 = atom_start[s]
        acc = np.zeros((atom_start[s + 1] - a0, 3, d), z.dtype)  # the structure's sums, in cache
        for a in range(atom_start[s], atom_start[s + 1]):
            p0, n = pair_start[a], pair_start[a + 1] - pair_start[a]
            if n == 0:
                continue
            row = row_start[a] - offset
            for j in range(3 * n):
                if j == drop[a, 0] or j == drop[a, 1] or j == drop[a, 2]:
                    continue
                for c in range(d):
                    o[j, c] = z[row, c]
                row += 1
            j1 = drop[a, 0] // 3
            p1 = p0 + j1
            if drop[a, 2] >= 0:  # Σ (r̂1·m) O = 0; p1's own rows have r̂1·m = 0
                u0, u1, u2 = frames[p1, 0, 0], frames[p1, 0, 1], frames[p1, 0, 2]
                j3, e3 = drop[a, 2] // 3, drop[a, 2] % 3
                inv = -1.0 / _kappa(u0, u1, u2, frames, r, p0 + j3, e3)
                t = drop[a, 2]
                for c in range(d):
                    rec[0, c] = 0.0
                for j in range(n):
                    if j != j1:
                        for e in range(1, 3):
                            if 3 * j + e != t:
                                k = inv * _kappa(u0, u1, u2, frames, r, p0 + j, e)
                                for c in range(d):
                                    rec[0, c] += k * o[3 * j + e, c]
                for c in range(d):
                    o[t, c] = rec[0, c]
            # along e1 of p1: −r1 O_{p1,2} + Σ (e1·m) O = 0; along e2: r1 O_{p1,1} + Σ (e2·m) O = 0
            for c in range(d):
                rec[1, c] = 0.0
                rec[2, c] = 0.0
            for j in range(n):
                if j != j1:
                    for e in range(1, 3):
                        k2 = _kappa(frames[p1, 1, 0], frames[p1, 1, 1], frames[p1, 1, 2], frames, r, p0 + j, e) / r[p1]
                        k1 = -_kappa(frames[p1, 2, 0], frames[p1, 2, 1], frames[p1, 2, 2], frames, r, p0 + j, e) / r[p1]
                        for c in range(d):
                            rec[1, c] += k1 * o[3 * j + e, c]
                            rec[2, c] += k2 * o[3 * j + e, c]
            for c in range(d):  # separate sums, so that the loops above vectorise (no aliasing with o)
                o[3 * j1 + 1, c] = rec[1, c]
                o[3 * j1 + 2, c] = rec[2, c]
            for k in range(3):
                for c in range(d):
                    centre[k, c] = 0.0
            for j in range(n):
                p = p0 + j
                for k in range(3):
                    f0, f1, f2 = frames[p, 0, k], frames[p, 1, k], frames[p, 2, k]
                    for c in range(d):
                        xyz[k, c] = g[a, c] * (f0 * o[3 * j, c] + f1 * o[3 * j + 1, c] + f2 * o[3 * j + 2, c])
                        centre[k, c] += xyz[k, c]
                b = pair_j[p] - a0
                for k in range(3):
                    for c in range(d):
                        acc[b, k, c] -= xyz[k, c]
            for k in range(3):
                for c in range(d):
                    acc[a - a0, k, c] += centre[k, c]
        for a in range(acc.shape[0]):
            for k in range(3):
                for c in range(d):
                    out[a0 + a, k, c] += acc[a, k, c]


@njit(parallel=True, fastmath=True, cache=True)
def features_partners(v, y, pair_start, rads, cols, families, full2, full3, x, g1, g2, g3):  # pragma: no cover
    """Per atom from its pairs' R_s(r) = v[:, 1] and r̂^{⊗L} = y[:, 0] (pair_rows): the moments, the
    partners g1 (A, K1, 3), g2 (A, K2, 6), g3 (A, K3, 10) of FeatureTangents (unique-component form;
    ``families``: which of its eleven families, in its order, are needed) and the features x (A, F).

    A feature is linear in each of its factors, so it is its first factor's inner product with
    that factor's partner: D_f = ⟨G_{f,0}, Ψ_{L_0}[s_0]⟩ (rads, cols: FeatureTangents; column 0
    is the constant partner of Ψ0)."""
    n_atoms, n = pair_start.shape[0] - 1, v.shape[2]
    k1, k2 = g1.shape[1], g2.shape[1]
    n_blocks = (n_atoms + BLOCK - 1) // BLOCK
    for block in prange(n_blocks):
        dt = np.float64
        m1, m2 = np.empty((n, 3), dt), np.empty((n, 3, 3), dt)
        m3, mu = np.empty((n, 3, 3, 3), dt), np.empty((n, 20), dt)
        t2, t3 = np.empty((3, 3), dt), np.empty((3, 3, 3), dt)
        for a in range(block * BLOCK, min(n_atoms, (block + 1) * BLOCK)):
            mu[:] = 0.0
            for p in range(pair_start[a], pair_start[a + 1]):
                for s in range(n):
                    for c in range(20):
                        mu[s, c] += v[p, 1, s] * y[p, 0, c]
            _full_tensors(mu, n, full2, full3, m1, m2, m3)
            ga1, ga2, ga3 = g1[a], g2[a], g3[a]
            _atom_partners(n, m1, m2, m3, families, ga1, ga2, ga3, t2, t3)
            xa = x[a]
            for f in range(x.shape[1]):
                s, c = rads[0, f], cols[0, f]
                if c == 0:
                    acc = mu[s, 0]
                elif c <= k1:
                    acc = ga1[c - 1, 0] * mu[s, 1] + ga1[c - 1, 1] * mu[s, 2] + ga1[c - 1, 2] * mu[s, 3]
                elif c <= k1 + k2:
                    acc = 0.0
                    for u in range(6):
                        acc += ga2[c - 1 - k1, u] * mu[s, 4 + u]
                else:
                    acc = 0.0
                    for u in range(10):
                        acc += ga3[c - 1 - k1 - k2, u] * mu[s, 10 + u]
                xa[f] = acc


@njit(fastmath=True, cache=True)
def _fold2(t, out):  # pragma: no cover - compiled
    """Unique components of a rank-2 partner: out[u] = Σ_{idx → u} t[idx] (feature_tangents
    docstring), summed in registers (indices in the order of descriptors._L2)."""
    out[0], out[1], out[2] = t[0, 0], t[1, 1], t[2, 2]
    out[3], out[4], out[5] = t[0, 1] + t[1, 0], t[0, 2] + t[2, 0], t[1, 2] + t[2, 1]


@njit(fastmath=True, cache=True)
def _fold3(t, out):  # pragma: no cover - compiled
    """The same for rank 3, in the order of descriptors._L3 (xxx yyy zzz xxy xxz xyy yyz xzz yzz xyz)."""
    out[0], out[1], out[2] = t[0, 0, 0], t[1, 1, 1], t[2, 2, 2]
    out[3] = t[0, 0, 1] + t[0, 1, 0] + t[1, 0, 0]
    out[4] = t[0, 0, 2] + t[0, 2, 0] + t[2, 0, 0]
    out[5] = t[0, 1, 1] + t[1, 0, 1] + t[1, 1, 0]
    out[6] = t[1, 1, 2] + t[1, 2, 1] + t[2, 1, 1]
    out[7] = t[0, 2, 2] + t[2, 0, 2] + t[2, 2, 0]
    out[8] = t[1, 2, 2] + t[2, 1, 2] + t[2, 2, 1]
    out[9] = t[0, 1, 2] + t[0, 2, 1] + t[1, 0, 2] + t[1, 2, 0] + t[2, 0, 1] + t[2, 1, 0]


@njit(fastmath=True, cache=True)
def _atom_partners(n, m1, m2, m3, families, g1, g2, g3, t2, t3):  # pragma: no cover - compiled
    """The partner families of feature_tangents.FeatureTangents.partners, same order and layout."""
    k = 0
    if families[0]:  # psi1[s] = Ψ1[s]
        for s in range(n):
            for i in range(3):
                g1[k, i] = m1[s, i]
            k += 1
    if families[1]:  # qv[t, b] = Ψ2[t] Ψ1[b]
        for t in range(n):
            for b in range(n):
                for i in range(3):
                    g1[k, i] = m2[t, i, 0] * m1[b, 0] + m2[t, i, 1] * m1[b, 1] + m2[t, i, 2] * m1[b, 2]
                k += 1
    if families[2]:  # h[a, b]_k = Σ_ij Ψ3[a]_ijk Ψ2[b]_ij
        for a in range(n):
            for b in range(n):
                _contract32(m3[a], m2[b], g1[k])
                k += 1
    k = 0
    if families[3]:  # psi2[s] = Ψ2[s]
        for s in range(n):
            _fold2(m2[s], g2[k])
            k += 1
    if families[4]:  # p[x, y] = Ψ2[x] Ψ2[y], x ≤ y
        for x in range(n):
            for y in range(x, n):
                _matmul3(m2[x], m2[y], t2)
                _fold2(t2, g2[k])
                k += 1
    if families[5]:  # o[x, y] = Ψ1[x] ⊗ Ψ1[y], x ≤ y
        for x in range(n):
            for y in range(x, n):
                for i in range(3):
                    for j in range(3):
                        t2[i, j] = m1[x, i] * m1[y, j]
                _fold2(t2, g2[k])
                k += 1
    if families[6]:  # gm[x, y]_kl = Σ_ij Ψ3[x]_ijk Ψ3[y]_ijl, x ≤ y
        for x in range(n):
            for y in range(x, n):
                _gram3(m3[x], m3[y], t2)
                _fold2(t2, g2[k])
                k += 1
    if families[7]:  # v[a, t]_ij = Σ_k Ψ3[a]_ijk Ψ1[t]_k
        for a in range(n):
            for t in range(n):
                for i in range(3):
                    for j in range(3):
                        t2[i, j] = m3[a, i, j, 0] * m1[t, 0] + m3[a, i, j, 1] * m1[t, 1] + m3[a, i, j, 2] * m1[t, 2]
                _fold2(t2, g2[k])
                k += 1
    k = 0
    if families[8]:  # psi3[s] = Ψ3[s]
        for s in range(n):
            _fold3(m3[s], g3[k])
            k += 1
    if families[9]:  # t[b, t]_ijk = Σ_l Ψ3[b]_ijl Ψ2[t]_lk
        for b in range(n):
            for t in range(n):
                for i in range(3):
                    for j in range(3):
                        for kk in range(3):
                            t3[i, j, kk] = (m3[b, i, j, 0] * m2[t, 0, kk] + m3[b, i, j, 1] * m2[t, 1, kk]
                                            + m3[b, i, j, 2] * m2[t, 2, kk])
                _fold3(t3, g3[k])
                k += 1
    if families[10]:  # w[b, t]_ijk = Ψ2[b]_ij Ψ1[t]_k
        for b in range(n):
            for t in range(n):
                for i in range(3):
                    for j in range(3):
                        for kk in range(3):
                            t3[i, j, kk] = m2[b, i, j] * m1[t, kk]
                _fold3(t3, g3[k])
                k += 1


@njit(parallel=True, fastmath=True, cache=True)
def pair_rows(disp, pair_type, beta, centres, gamma, r_cut, l2, l3, frames, r, v, y):  # pragma: no cover
    """Per pair p: its frame (r̂, e1, e2) as rows of frames (P, 3, 3) (sensitivities.local_frames), r
    (P,) Å, and the radial and angular factor of its three rows: v[p, 0] = ∂R_s/∂r, v[p, 1:] = R_s
    (P, 3, n_radial); y[p, 0] = r̂^{⊗L}, y[p, e] = ∂_e r̂^{⊗L} along δr̂ = e/r (P, 3, 20), the unique
    components of GaussianMoments.angular (l2 (6, 2), l3 (10, 3): their indices)."""
    n, n_basis = beta.shape[1], beta.shape[2]
    for p in prange(disp.shape[0]):
        dx, dy, dz = float(disp[p, 0]), float(disp[p, 1]), float(disp[p, 2])
        rp = math.sqrt(dx * dx + dy * dy + dz * dz)
        u = (dx / rp, dy / rp, dz / rp)
        ref = (0.0, 1.0, 0.0) if abs(u[0]) > 0.9 else (1.0, 0.0, 0.0)
        c0, c1, c2 = ref[1] * u[2] - ref[2] * u[1], ref[2] * u[0] - ref[0] * u[2], ref[0] * u[1] - ref[1] * u[0]
        norm = math.sqrt(c0 * c0 + c1 * c1 + c2 * c2)
        e1 = (c0 / norm, c1 / norm, c2 / norm)
        e2 = (u[1] * e1[2] - u[2] * e1[1], u[2] * e1[0] - u[0] * e1[2], u[0] * e1[1] - u[1] * e1[0])
        for k in range(3):
            frames[p, 0, k], frames[p, 1, k], frames[p, 2, k] = u[k], e1[k], e2[k]
        r[p] = rp
        # R_s = Σ_k β φ_k f_c and R_s' = Σ_k β φ_k (f_c' − 2γ(r − c_k) f_c), as descriptors.radial_derivative
        if rp < r_cut:
            fc = 0.5 * (math.cos(rp * (math.pi / r_cut)) + 1.0)
            dfc = -0.5 * math.pi / r_cut * math.sin(rp * (math.pi / r_cut))
        else:
            fc, dfc = 0.0, 0.0
        t = pair_type[p]
        for s in range(n):
            v[p, 0, s] = 0.0
            v[p, 1, s] = 0.0
        for k in range(n_basis):
            x = rp - centres[k]
            gauss = math.exp(-gamma * x * x)
            phi, dphi = gauss * fc, gauss * (dfc - 2.0 * gamma * x * fc)
            for s in range(n):
                v[p, 0, s] += beta[t, s, k] * dphi
                v[p, 1, s] += beta[t, s, k] * phi
        for s in range(n):
            v[p, 2, s] = v[p, 1, s]
        y[p, 0, 0], y[p, 1, 0], y[p, 2, 0] = 1.0, 0.0, 0.0
        for i in range(3):
            y[p, 0, 1 + i], y[p, 1, 1 + i], y[p, 2, 1 + i] = u[i], e1[i] / rp, e2[i] / rp
        for c in range(6):
            i, j = l2[c, 0], l2[c, 1]
            y[p, 0, 4 + c] = u[i] * u[j]
            y[p, 1, 4 + c] = (e1[i] * u[j] + u[i] * e1[j]) / rp
            y[p, 2, 4 + c] = (e2[i] * u[j] + u[i] * e2[j]) / rp
        for c in range(10):
            i, j, k = l3[c, 0], l3[c, 1], l3[c, 2]
            y[p, 0, 10 + c] = u[i] * u[j] * u[k]
            y[p, 1, 10 + c] = (e1[i] * u[j] * u[k] + u[i] * e1[j] * u[k] + u[i] * u[j] * e1[k]) / rp
            y[p, 2, 10 + c] = (e2[i] * u[j] * u[k] + u[i] * e2[j] * u[k] + u[i] * u[j] * e2[k]) / rp


# ---- neighbour lists of molecules (oedal.gmnn.neighbors) ----


@njit(cache=True, nogil=True)
def molecule_pairs(positions, offsets, molecules, cutoff):  # pragma: no cover - compiled
    """All pairs (i ≠ j) within ``cutoff`` (Å) of the non-periodic structures ``molecules``, ordered by
    structure, then i, then j: (structure, i, j), atom indices local to the structure. Two passes
    (count, fill) over every molecule's n² distances; positions (atoms, 3) Å, offsets (structures + 1,)."""
    c2 = cutoff * cutoff
    total = 0
    for pass_ in range(2):
        if pass_ == 1:
            sid, pi, pj = np.empty(total, np.int64), np.empty(total, np.int64), np.empty(total, np.int64)
        p = 0
        for s in molecules:
            a0, a1 = offsets[s], offsets[s + 1]
            for i in range(a0, a1):
                for j in range(a0, a1):
                    dx = positions[j, 0] - positions[i, 0]
                    dy = positions[j, 1] - positions[i, 1]
                    dz = positions[j, 2] - positions[i, 2]
                    if i != j and dx * dx + dy * dy + dz * dz < c2:
                        if pass_ == 1:
                            sid[p], pi[p], pj[p] = s, i - a0, j - a0
                        p += 1
        total = p
    return sid, pi, pj
