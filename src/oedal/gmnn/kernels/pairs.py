"""Per-pair kernels: the neighbour pairs of molecules and the pair terms of QS2.

* molecule_pairs: the numba twin of the NumPy route of :func:`oedal.gmnn.neighbors.neighbor_list`
  (every molecule's n² distances; QM9's 130,831 molecules in ≈ 0.1 s against ≈ 1.7 s, and it
  releases the GIL for the scoring threads);
* pair_rows: every pair's frame (r̂, e1, e2) and the radial and angular factors of its three
  tangent rows, the twin of gmnn.tangents.local_frames with GaussianMoments.radial_derivative and
  angular_derivative (sensitivities._structured).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange


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


@njit(parallel=True, fastmath=True, cache=True)
def pair_rows(disp, pair_type, basis, unique, frames, r, v, y):  # pragma: no cover - compiled
    """Per pair p of disp (P, 3) Å: its frame (r̂, e1, e2) as rows of
    frames (P, 3, 3) (tangents.local_frames), r (P,) Å, and the radial and angular factor of its
    three rows: v[p, 0] = ∂R_s/∂r, v[p, 1:] = R_s (P, 3, n_radial); y[p, 0] = r̂^{⊗L}, y[p, e] =
    ∂_e r̂^{⊗L} along δr̂ = e/r (P, 3, 20), the unique components of GaussianMoments.angular.
    basis = (β·norm (T, n_radial, K), centres (K,) Å, γ Å⁻², r_c Å): GaussianMoments.radial_basis;
    pair_type (P,): the pairs' rows of β; unique = (l2 (6, 2), l3 (10, 3)): descriptors.UNIQUE_INDEX."""
    beta, centres, gamma, r_cut = basis
    l2, l3 = unique
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
