"""Exact derivatives of the Gaussian-moment features wrt single pair displacements (QS2; DESIGN §6).

Every feature D_f of atom i is a multilinear contraction of i's moment tensors Ψ_L[s]
(descriptors.py): one, two or three factors q, each with its radial index s_q and rank L_q. Its
derivative along a change δΨ of the moments is the product rule

    δD_f = Σ_q ⟨G_{f,q}, δΨ_{L_q}[s_q]⟩,   G_{f,q} = ∂D_f/∂Ψ_{L_q}[s_q] (the *partner* of factor q),

and a partner is a product of the other factors: for tr(Ψ2[a] Ψ2[b] Ψ2[c]) the partner of Ψ2[a] is
Ψ2[b]Ψ2[c]; for Ψ1[a]·Ψ1[b] the partner of Ψ1[a] is Ψ1[b]. Partners depend on the atom only.

Moving pair p = (i, j) changes one term of Ψ_i only, R_s(r) r̂^{⊗L}. In the pair's own frame
(r̂, e1, e2) that change has one factor per axis: along r̂ only r changes, across r̂ only the
direction, so (∂_e = derivative along axis e of the frame)

    ∂D_f/∂r = Σ_q R'_{s_q}(r) ⟨G_{f,q}, r̂^{⊗L}⟩,   ∂D_f/∂e = Σ_q R_{s_q}(r) ⟨G_{f,q}, ∂_e r̂^{⊗L}⟩,

i.e. every tangent row is Σ_q v[s_q] w[k_q] for a radial vector v and the projections w of all
partners on one angular tensor. Per atom, the projections of its rows are a small matmul
(partners × unique components) @ (unique components × 3·slots); each feature then needs three
products per row. This module is the torch route (GPUs), which rotates the frame back to x, y, z
here; its numba twin (oedal.gmnn.kernels.tangents: features_partners, tangent_rows; pair terms in
kernels.pairs.pair_rows) keeps the rows in the frames until after the MLP. The generic
forward-mode route instead repeats the whole contraction for each of the 3·slots tangents (≈15×
slower here).

Inner products with a symmetric tensor use its unique components (descriptors.UNIQUE_INDEX): with
Y_full[idx] = y[u(idx)], ⟨G, Y⟩ = Σ_u y_u Σ_{idx→u} G[idx] = y · (G_full Eᵀ) for the 0/1 expansion E.
"""

from __future__ import annotations

import weakref

import numpy as np
import torch

from oedal.gmnn.descriptors import GaussianMoments, combinations

# partner families: name → (rank L, index set); "sym" families are symmetric in their two radial
# indices (only x ≤ y are stored), "pair" families keep all n² ordered index pairs
_FAMILIES = {
    "psi1": (1, "one"), "qv": (1, "pair"), "h": (1, "pair"),
    "psi2": (2, "one"), "p": (2, "sym"), "o": (2, "sym"), "gm": (2, "sym"), "v": (2, "pair"),
    "psi3": (3, "one"), "t": (3, "pair"), "w": (3, "pair"),
}
_NEEDS = {"c0": (), "c11": ("psi1",), "c22": ("psi2",), "c33": ("psi3",), "c222": ("p",), "c112": ("qv", "o"),
          "c332": ("t", "gm"), "c321": ("w", "v", "h")}
_ANGULAR = {1: slice(1, 4), 2: slice(4, 10), 3: slice(10, 20)}  # unique components of r̂^{⊗L} in angular()


def _factors(kind: str, combo: tuple[int, ...]) -> list[tuple[int, str, tuple[int, ...]]]:
    """(radial index s_q, partner family, partner indices) of every factor q of one feature.

    The contractions as descriptors.GaussianMoments.contract computes them (Ψ symmetric):
    c11 Ψ1[a]_i Ψ1[b]_i; c22 Ψ2[a]:Ψ2[b]; c33 Ψ3[a]⋮Ψ3[b]; c222 tr(Ψ2[a]Ψ2[b]Ψ2[c]);
    c112 Ψ1[a]_i Ψ2[t]_ij Ψ1[b]_j; c332 Ψ3[a]_ijk Ψ3[b]_ijl Ψ2[t]_kl; c321 Ψ3[a]_ijk Ψ2[b]_ij Ψ1[t]_k.
    """
    if kind == "c0":
        return [(combo[0], "one", ())]
    if kind in ("c11", "c22", "c33"):
        a, b = combo
        fam = "psi" + kind[1]
        return [(a, fam, (b,)), (b, fam, (a,))]
    if kind == "c222":  # ∂tr(ABC)/∂A = (BC)ᵀ, and ⟨(BC)ᵀ, Y⟩ = ⟨BC, Y⟩ for symmetric Y
        a, b, c = combo
        return [(a, "p", (b, c)), (b, "p", (a, c)), (c, "p", (a, b))]
    if kind == "c112":  # qv[t, b] = Ψ2[t]Ψ1[b]; o[a, b] = Ψ1[a] ⊗ Ψ1[b]
        a, b, t = combo
        return [(a, "qv", (t, b)), (b, "qv", (t, a)), (t, "o", (a, b))]
    if kind == "c332":  # t[b, t]_ijk = Σ_l Ψ3[b]_ijl Ψ2[t]_lk; gm[a, b]_kl = Σ_ij Ψ3[a]_ijk Ψ3[b]_ijl
        a, b, t = combo
        return [(a, "t", (b, t)), (b, "t", (a, t)), (t, "gm", (a, b))]
    if kind == "c321":  # w[b, t] = Ψ2[b] ⊗ Ψ1[t]; v[a, t]_ij = Σ_k Ψ3[a]_ijk Ψ1[t]_k; h[a, b]_k = Σ_ij Ψ3[a]_ijk Ψ2[b]_ij
        a, b, t = combo
        return [(a, "w", (b, t)), (b, "v", (a, t)), (t, "h", (a, b))]
    raise ValueError(f"unknown contraction {kind!r}")


_BUILT: "weakref.WeakKeyDictionary[GaussianMoments, FeatureTangents]" = weakref.WeakKeyDictionary()


def feature_tangents(desc: GaussianMoments) -> "FeatureTangents":
    """∂D/∂r_p of every pair for the descriptor ``desc`` (:class:`FeatureTangents`): its index tables are built
    once per descriptor and device, and rebuilt when the descriptor moved to another device."""
    built = _BUILT.get(desc)
    if built is None or built.cols.device != desc.expansion(2).device:
        built = _BUILT[desc] = FeatureTangents(desc)
    return built


class FeatureTangents:
    """∂D_f/∂(r_p)_k of every pair slot of every atom, from the moments and the pair terms."""

    def __init__(self, desc: GaussianMoments):
        self.desc = desc
        n = desc.n_radial
        fams = [f for f in _FAMILIES if any(f in _NEEDS[c] for c in desc.contractions)]
        self.families = {L: [f for f in fams if _FAMILIES[f][0] == L] for L in (1, 2, 3)}
        # column of every partner in X = [1 | rank-1 partners | rank-2 | rank-3 | 0]
        column, k = {("one", ()): 0}, 1
        for L in (1, 2, 3):
            for f in self.families[L]:
                for idx in self._indices(f, n):
                    column[(f, idx)], k = k, k + 1
        zero = k  # a zero column for features with fewer than three factors
        self.n_partners = tuple(sum(len(self._indices(f, n)) for f in self.families[L]) for L in (1, 2, 3))
        self.family_flags = np.array([f in fams for f in _FAMILIES], np.int64)  # for kernels.tangents.features_partners
        cols, rads = [[], [], []], [[], [], []]
        for kind in desc.contractions:
            for combo in combinations(n, kind):
                factors = _factors(kind, combo)
                for q in range(3):
                    if q < len(factors):
                        s, f, idx = factors[q]
                        idx = tuple(sorted(idx)) if f != "one" and _FAMILIES[f][1] == "sym" else idx
                        cols[q].append(column[(f, idx)])
                        rads[q].append(s)
                    else:
                        cols[q].append(zero)
                        rads[q].append(0)
        dev = desc.expansion(2).device
        self.cols = torch.tensor(cols, device=dev)  # (3, F): partner column of factor q of feature f
        self.rads = torch.tensor(rads, device=dev)  # (3, F): radial index of factor q of feature f
        self.cols_np, self.rads_np = self.cols.cpu().numpy(), self.rads.cpu().numpy()
        self.sym = torch.tensor([x * n + y for x in range(n) for y in range(n) if x <= y], device=dev)

    @staticmethod
    def _indices(family: str, n: int) -> list[tuple[int, ...]]:
        kind = _FAMILIES[family][1]
        if kind == "one":
            return [(s,) for s in range(n)]
        if kind == "sym":
            return [(x, y) for x in range(n) for y in range(n) if x <= y]
        return [(x, y) for x in range(n) for y in range(n)]

    def partners(self, psi: torch.Tensor) -> dict[int, torch.Tensor]:
        """Partners in unique-component form G_full Eᵀ, by rank: {L: (A, K_L, n_unique(L))}."""
        d = self.desc
        a, n = psi.shape[:2]
        m1 = psi[:, :, 1:4]  # (A, n, 3)
        exp2, exp3 = d.expansion(2), d.expansion(3)  # (6, 9), (10, 27)
        m2f = psi[:, :, 4:10] @ exp2  # (A, n, 9) Ψ2[s]_ij
        m2 = m2f.reshape(a, n, 3, 3)
        m2_right = m2.permute(0, 2, 1, 3).reshape(a, 3, 3 * n)  # Ψ2[t]_lk as (l, (t k))
        m3f = psi[:, :, 10:20] @ exp3 if d.uses_rank3 else None  # (A, n, 27) Ψ3[s]_ijk
        e2t, e3t = exp2.T, exp3.T  # (9, 6), (27, 10)

        out = {}

        def psi1():
            return m1

        def qv():  # Ψ2[t]_ij Ψ1[b]_j → (t, b)
            return torch.bmm(m2.reshape(a, 3 * n, 3), m1.transpose(1, 2)).reshape(a, n, 3, n).transpose(2, 3).reshape(a, n * n, 3)

        def h():  # Σ_ij Ψ3[a]_ijk Ψ2[b]_ij → (a, b); Ψ3 symmetric, so (i j k) read as (k, i j)
            return torch.bmm(m3f.reshape(a, 3 * n, 9), m2f.transpose(1, 2)).reshape(a, n, 3, n).transpose(2, 3).reshape(a, n * n, 3)

        def psi2():
            return m2f @ e2t

        def p():  # Ψ2[x] Ψ2[y], x ≤ y
            full = torch.bmm(m2.reshape(a, 3 * n, 3), m2_right).reshape(a, n, 3, n, 3).permute(0, 1, 3, 2, 4)
            return full.reshape(a, n * n, 9).index_select(1, self.sym) @ e2t

        def o():  # Ψ1[x] ⊗ Ψ1[y], x ≤ y
            full = (m1[:, :, None, :, None] * m1[:, None, :, None, :]).reshape(a, n * n, 9)
            return full.index_select(1, self.sym) @ e2t

        def gm():  # Σ_ij Ψ3[x]_ijk Ψ3[y]_ijl, x ≤ y
            m3 = m3f.reshape(a, 3 * n, 9)
            full = torch.bmm(m3, m3.transpose(1, 2)).reshape(a, n, 3, n, 3).permute(0, 1, 3, 2, 4)
            return full.reshape(a, n * n, 9).index_select(1, self.sym) @ e2t

        def v():  # Σ_k Ψ3[a]_ijk Ψ1[t]_k → (a, t)
            full = torch.bmm(m3f.reshape(a, 9 * n, 3), m1.transpose(1, 2)).reshape(a, n, 9, n).transpose(2, 3)
            return full.reshape(a, n * n, 9) @ e2t

        def psi3():
            return m3f @ e3t

        def t():  # Σ_l Ψ3[b]_ijl Ψ2[t]_lk → (b, t)
            full = torch.bmm(m3f.reshape(a, 9 * n, 3), m2_right).reshape(a, n, 9, n, 3).permute(0, 1, 3, 2, 4)
            return full.reshape(a, n * n, 27) @ e3t

        def w():  # Ψ2[b]_ij Ψ1[t]_k → (b, t)
            return (m2f[:, :, None, :, None] * m1[:, None, :, None, :]).reshape(a, n * n, 27) @ e3t

        make = {"psi1": psi1, "qv": qv, "h": h, "psi2": psi2, "p": p, "o": o, "gm": gm, "v": v, "psi3": psi3,
                "t": t, "w": w}
        for L, fams in self.families.items():
            if fams:
                out[L] = torch.cat([make[f]() for f in fams], 1)
        return out

    def __call__(self, psi: torch.Tensor, v: torch.Tensor, y: torch.Tensor, frames: torch.Tensor,
                 out: torch.Tensor | None = None) -> torch.Tensor:
        """∂D_f/∂(r_p)_k of every (atom, slot, k = x, y, z): (A, S, 3, F), row-major.

        psi (A, n_radial, 20): moments. Row j = 3·slot + e of an atom is the displacement of that
        slot's pair along axis e of its frame (r̂, e1, e2) = frames (A, S, 3, 3) (zero for empty
        slots); the row's radial factor is v (A, n_radial, 3S) and its angular factor y (A, 20, 3S)
        (unique components): along r̂ v = ∂R/∂r, y = r̂^{⊗L}; across r̂ along e v = R, y = ∂_e r̂^{⊗L}.
        The three axes of a slot are rotated back to x, y, z at the end.
        """
        a, n_slots = frames.shape[:2]
        g = self.partners(psi)
        g = [g.get(L, psi.new_zeros((a, 0, n))) for L, n in ((1, 3), (2, 6), (3, 10))]
        if out is None:
            out = psi.new_empty((a, n_slots, 3, self.rads.shape[1]))
        w = [y[:, :1]]  # ⟨1, r̂^{⊗0}⟩ = 1 (and 0 for derivative rows)
        w += [torch.bmm(gl, y[:, _ANGULAR[L]]) for L, gl in zip((1, 2, 3), g)]
        w.append(y.new_zeros((a, 1, y.shape[2])))  # the zero partner of missing factors
        w = torch.cat(w, 1)  # (A, K + 1, 3S)
        # (A, F, 3S), summed in place: at most three arrays of the tangents' size (the sum and the two gathered
        # factors of one product; sum() of three products held five)
        local = v.index_select(1, self.rads[0]) * w.index_select(1, self.cols[0])
        for q in (1, 2):
            local.addcmul_(v.index_select(1, self.rads[q]), w.index_select(1, self.cols[q]))
        # back to x, y, z: out[a, s, k, f] = Σ_e frames[a, s, e, k] local[a, f, 3s + e], straight into ``out``
        return torch.matmul(frames.transpose(2, 3), local.view(a, -1, n_slots, 3).permute(0, 2, 3, 1), out=out)


def local_frames(disp: torch.Tensor) -> torch.Tensor:
    """Orthonormal frames (r̂, e1, e2) of every pair, as rows: (P, 3, 3); disp (P, 3) Å.
    The numba twin: kernels.pairs.pair_rows."""
    u = disp / torch.linalg.vector_norm(disp, dim=-1, keepdim=True)
    ref = torch.zeros_like(u)
    ref[:, 0] = 1.0
    ref[u[:, 0].abs() > 0.9] = torch.tensor([0.0, 1.0, 0.0], dtype=u.dtype, device=u.device)
    e1 = torch.linalg.cross(ref, u)
    e1 = e1 / torch.linalg.vector_norm(e1, dim=-1, keepdim=True)
    return torch.stack([u, e1, torch.linalg.cross(u, e1)], 1)
