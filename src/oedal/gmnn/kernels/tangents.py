"""QS2 in packed rows: the numba twin of :class:`oedal.gmnn.tangents.FeatureTangents` and of the
torch route of :func:`oedal.oed.sensitivities._structured` (oed.sensitivities._structured_packed
calls these; tests compare them with the torch route, with autograd and with gmnn.reference).

* features_partners: per atom the moments, the features and the partners of FeatureTangents;
* rotation_drops: the rows that are not computed (the three rotational modes of every atom);
* tangent_rows: the feature tangents of the kept rows, in the pairs' frames;
* scale_rows: act'(z) between two layers of the MLP;
* scatter_rows: the dropped rows rebuilt, rotated to x, y, z, times σ·act', scattered to atoms;
  scatter_atoms: the same for a block of atoms of one structure (a cell streamed in blocks).
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from oedal.gmnn.kernels.moments import BLOCK, contract32, full_tensors, gram3, matmul3

SMALL_BLOCK = 8  # atoms per parallel work item of tangent_rows (called on ≈ 200 atoms at a time)


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
def tangent_rows(rows, partners, factors, layout, first, last, out):  # pragma: no cover - compiled
    """Feature tangents of the kept rows of atoms first..last−1, in the pairs' frames: out (rows, F),
    atom a's from row row_start[a] − row_start[first].

    rows = (v (P, 3, n_radial), y (P, 3, 20)): the radial and angular factor of each pair's three
    rows (pairs.pair_rows); partners = (g1, g2, g3) (A, K_L, unique components); factors = (rads,
    cols) (3, F): radial index and partner column of the factors of every feature
    (FeatureTangents); layout = (pair_start (A + 1,), row_start (A + 1,), drop (A, 3), max_pairs):
    see scatter_rows. Per atom the work runs along its rows (the contiguous axis), then the kept
    rows are written out."""
    v, y = rows
    g1, g2, g3 = partners
    rads, cols = factors
    pair_start, row_start, drop, max_pairs = layout
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
def scatter_rows(z, g, geometry, layout, atom_start, first, last, out):  # pragma: no cover - compiled
    """Force sensitivities of structures first..last−1 from the MLP images z (rows, d) of their kept
    rows (z starts at the structure ``first``'s), added into out (A, 3, d) float64. g (A, d):
    σ·act'(z) of the last layer; geometry = (frames (P, 3, 3), r (P,) Å, pair_j (P,));
    layout = (pair_start (A + 1,), row_start (A + 1,): the first pair and kept row of every atom,
    drop (A, 3): its rows not computed (rotation_drops), max_pairs: the most pairs of one atom);
    atom_start (S + 1,): the first atom of every structure.

    Per atom: the dropped rows rebuilt (_atom_rows), then rotated to x, y, z, times g = σ·act'(z_last),
    +c to the centre atom and −c to the neighbour (_add_atom), summed per structure in z's dtype. In
    parallel over structures, so no two threads add to one atom."""
    frames, r, pair_j = geometry
    pair_start, row_start, drop, max_pairs = layout
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
            _atom_rows(z, row_start[a] - offset, frames, r, p0, n, drop[a], o, rec)
            _add_atom(o, g[a], frames, pair_j, p0, n, a - a0, a0, acc, xyz, centre)
        for a in range(acc.shape[0]):
            for k in range(3):
                for c in range(d):
                    out[a0 + a, k, c] += acc[a, k, c]


@njit(fastmath=True, cache=True)
def scatter_atoms(z, g, geometry, layout, first, last, shift, out):  # pragma: no cover - compiled
    """scatter_rows for atoms first..last−1 of one structure (a block of a cell too large for one
    pass, sensitivities._structured_packed): +c to out[a + shift], −c to out[pair_j], added straight
    into out (float64), one atom after the other (blocks of one structure run one at a time).
    z (rows, d) starts at atom ``first``'s rows; g, geometry and layout as scatter_rows."""
    frames, r, pair_j = geometry
    pair_start, row_start, drop, max_pairs = layout
    d = z.shape[1]
    o = np.empty((3 * max_pairs, d), z.dtype)
    xyz, centre, rec = np.empty((3, d), z.dtype), np.empty((3, d), z.dtype), np.empty((3, d), z.dtype)
    for a in range(first, last):
        p0, n = pair_start[a], pair_start[a + 1] - pair_start[a]
        if n > 0:
            _atom_rows(z, row_start[a] - row_start[first], frames, r, p0, n, drop[a], o, rec)
            _add_atom(o, g[a], frames, pair_j, p0, n, a + shift, 0, out, xyz, centre)


@njit(fastmath=True, cache=True)
def _atom_rows(z, row, frames, r, p0, n, drop, o, rec):  # pragma: no cover - compiled
    """o[:3n]: the rows of the atom with pairs p0..p0 + n − 1, the kept ones from z[row:] and the
    dropped ones (drop (3,): rotation_drops) rebuilt from the rotational relations, the third first
    (the other two use it); rec (3, d): scratch."""
    d = z.shape[1]
    for j in range(3 * n):
        if j == drop[0] or j == drop[1] or j == drop[2]:
            continue
        for c in range(d):
            o[j, c] = z[row, c]
        row += 1
    j1 = drop[0] // 3
    p1 = p0 + j1
    if drop[2] >= 0:  # Σ (r̂1·m) O = 0; p1's own rows have r̂1·m = 0
        u0, u1, u2 = frames[p1, 0, 0], frames[p1, 0, 1], frames[p1, 0, 2]
        j3, e3 = drop[2] // 3, drop[2] % 3
        inv = -1.0 / _kappa(u0, u1, u2, frames, r, p0 + j3, e3)
        t = drop[2]
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


@njit(fastmath=True, cache=True)
def _add_atom(o, ga, frames, pair_j, p0, n, centre_at, base, acc, xyz, centre):  # pragma: no cover - compiled
    """The atom's rows o (3n, d) in its pairs' frames rotated to x, y, z, times ga (d,) = σ·act', added
    into acc (atoms, 3, d): +c (summed over the pairs) to acc[centre_at], −c to acc[pair_j[p] − base]
    (F = −∂E/∂R, r_p = R_j − R_i + shift). xyz, centre (3, d): scratch."""
    d = o.shape[1]
    for k in range(3):
        for c in range(d):
            centre[k, c] = 0.0
    for j in range(n):
        p = p0 + j
        for k in range(3):
            f0, f1, f2 = frames[p, 0, k], frames[p, 1, k], frames[p, 2, k]
            for c in range(d):
                xyz[k, c] = ga[c] * (f0 * o[3 * j, c] + f1 * o[3 * j + 1, c] + f2 * o[3 * j + 2, c])
                centre[k, c] += xyz[k, c]
        b = pair_j[p] - base
        for k in range(3):
            for c in range(d):
                acc[b, k, c] -= xyz[k, c]
    for k in range(3):
        for c in range(d):
            acc[centre_at, k, c] += centre[k, c]


@njit(parallel=True, fastmath=True, cache=True)
def features_partners(rows, pair_start, factors, families, full, x, g1, g2, g3):  # pragma: no cover - compiled
    """Per atom from its pairs' R_s(r) = v[:, 1] and r̂^{⊗L} = y[:, 0] (rows = (v, y): pairs.pair_rows,
    pairs grouped by atom from pair_start (A + 1,)): the moments, the partners g1 (A, K1, 3),
    g2 (A, K2, 6), g3 (A, K3, 10) of FeatureTangents (unique-component form; ``families``: which of
    its eleven families, in its order, are needed) and the features x (A, F). factors = (rads,
    cols) (3, F): FeatureTangents; full = (full2, full3): descriptors.FULL_INDEX.

    A feature is linear in each of its factors, so it is its first factor's inner product with
    that factor's partner: D_f = ⟨G_{f,0}, Ψ_{L_0}[s_0]⟩ (rads, cols: FeatureTangents; column 0
    is the constant partner of Ψ0)."""
    v, y = rows
    rads, cols = factors
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
            full_tensors(mu, n, full, m1, m2, m3)
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
    """Unique components of a rank-2 partner: out[u] = Σ_{idx → u} t[idx] (gmnn.tangents
    docstring), summed in registers (indices in the order of descriptors.UNIQUE_INDEX)."""
    out[0], out[1], out[2] = t[0, 0], t[1, 1], t[2, 2]
    out[3], out[4], out[5] = t[0, 1] + t[1, 0], t[0, 2] + t[2, 0], t[1, 2] + t[2, 1]


@njit(fastmath=True, cache=True)
def _fold3(t, out):  # pragma: no cover - compiled
    """The same for rank 3, in the order of descriptors.UNIQUE_INDEX (xxx yyy zzz xxy xxz xyy yyz xzz yzz xyz)."""
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
    """The partner families of gmnn.tangents.FeatureTangents.partners, same order and layout."""
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
                contract32(m3[a], m2[b], g1[k])
                k += 1
    k = 0
    if families[3]:  # psi2[s] = Ψ2[s]
        for s in range(n):
            _fold2(m2[s], g2[k])
            k += 1
    if families[4]:  # p[x, y] = Ψ2[x] Ψ2[y], x ≤ y
        for x in range(n):
            for y in range(x, n):
                matmul3(m2[x], m2[y], t2)
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
                gram3(m3[x], m3[y], t2)
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
