"""Gaussian-moment descriptors (DESIGN §4; Zaverkin & Kästner, JCTC 16, 5410 (2020)).

Per atom i, over its neighbours j within r_c:

* cosine cutoff f_c(r) = ½(cos(πr/r_c) + 1) for r < r_c, 0 beyond;
* Gaussians φ_k(r) = (2γ/π)^¼ exp(−γ (r − r_k)²), k = 0..n_basis−1, centres r_k equally spaced
  on [r_min, r_c) with spacing Δ = (r_c − r_min)/n_basis and γ = 1/Δ²;
* radial functions R_s(r_ij) = Σ_k β[Z_i, Z_j, s, k] φ_k(r_ij) f_c(r_ij) with trainable
  species-pair coefficients β (scaled by 1/√n_basis);
* moments Ψ_{i,L,s} = Σ_j R_s(r_ij) r̂_ij^{⊗L}, L = 0..3. The symmetric tensors r̂^{⊗L} are
  stored by their unique components (1 + 3 + 6 + 10 = 20 per radial index); with pairs grouped
  by centre atom (as BatchLoader makes them) the sum over j is one batched matmul over a
  zero-padded (atom, neighbour slot) layout, otherwise an out-of-place scatter;
* the rotation invariants of settings.CONTRACTIONS (c0 = Ψ0; c11 = Ψ1·Ψ1; c22 = Ψ2:Ψ2;
  c33 = Ψ3⋮Ψ3; c222 = Ψ2Ψ2Ψ2; c112 = Ψ1Ψ1Ψ2; c332 = Ψ3Ψ3Ψ2; c321 = Ψ3Ψ2Ψ1), reduced to the
  unique radial-index combinations (s1 ≤ s2 where a contraction is symmetric in two radial
  indices, s1 ≤ s2 ≤ s3 for c222). n_radial = 5 gives 360 features, as in apax.

Everything here is functional (no in-place writes; scatters are out-of-place ``index_add``), so
``torch.func.jvp`` and ``torch.func.vmap`` work through it. Cost: on a CPU the per-atom batched
matmuls of the contractions dominate (see benchmarks/bench_model.py).

Three routes to the same features, all tested against the readable einsum form of
:mod:`oedal.gmnn.reference`: :meth:`GaussianMoments.forward` (torch: training, autograd, GPUs),
:meth:`GaussianMoments.inference_features` (the fused numba kernel of gmnn.kernels.moments where
the kernel backend is numba: QS1 scoring) and the QS2 features of gmnn.tangents.feature_tangents
(with its numba twin gmnn.kernels.tangents), which builds on this module.
"""

from __future__ import annotations

import itertools
import math
from typing import NamedTuple

import numpy as np
import torch
from torch import nn

from oedal.gmnn.kernels import backend
from oedal.settings import CONTRACTIONS, DescriptorSettings

# unique components of r̂^{⊗2} and r̂^{⊗3} (index triples into x, y, z)
_L2 = [(0, 0), (1, 1), (2, 2), (0, 1), (0, 2), (1, 2)]
_L3 = [(0, 0, 0), (1, 1, 1), (2, 2, 2), (0, 0, 1), (0, 0, 2), (0, 1, 1), (1, 1, 2), (0, 2, 2), (1, 2, 2), (0, 1, 2)]


def _full_index(unique: list[tuple[int, ...]], rank: int) -> list[int]:
    """For every full tensor index (row-major, 3^rank), the position of its unique component."""
    lookup = {u: k for k, u in enumerate(unique)}
    return [lookup[tuple(sorted(idx))] for idx in itertools.product(range(3), repeat=rank)]


# tables of the unique components for the numba kernels (gmnn.kernels)
UNIQUE_INDEX = (np.array(_L2, np.int64), np.array(_L3, np.int64))  # (6, 2), (10, 3): x, y, z of each component
# (3, 3), (3, 3, 3): position of every full index of r̂^{⊗2}, r̂^{⊗3} among angular()'s 20 components
FULL_INDEX = (np.array(_full_index(_L2, 2), np.int64).reshape(3, 3) + 4,
              np.array(_full_index(_L3, 3), np.int64).reshape(3, 3, 3) + 10)


class RadialBasis(NamedTuple):
    """The radial basis as the numba kernels take it (GaussianMoments.radial_basis)."""

    beta: np.ndarray  # (n_species², n_radial, n_basis): β[Z_i, Z_j, s, k] · (2γ/π)^¼ / √n_basis
    centres: np.ndarray  # (n_basis,) float64 Å, r_k
    gamma: float  # Å⁻², γ = 1/Δ²
    r_cut: float  # Å


def combinations(n: int, kind: str) -> list[tuple[int, ...]]:
    """Unique radial-index combinations of one contraction, as index tuples into (n,)*rank, in the
    order of the features."""
    r = range(n)
    if kind == "c0":
        return [(s,) for s in r]
    if kind in ("c11", "c22", "c33"):
        return [(a, b) for a in r for b in r if a <= b]
    if kind == "c222":
        return [(a, b, c) for a in r for b in r for c in r if a <= b <= c]
    if kind in ("c112", "c332"):
        return [(a, b, c) for a in r for b in r for c in r if a <= b]
    if kind == "c321":
        return [(a, b, c) for a in r for b in r for c in r]
    raise ValueError(f"unknown contraction {kind!r}")


def _expansion(unique: list[tuple[int, ...]], rank: int) -> np.ndarray:
    """(n_unique, 3^rank) 0/1 matrix: full symmetric tensor = Σ_u component_u · row_u."""
    out = np.zeros((len(unique), 3**rank))
    for f, u in enumerate(_full_index(unique, rank)):
        out[u, f] = 1.0
    return out


def n_features(settings: DescriptorSettings) -> int:
    """Number of Gaussian-moment features for these settings (360 for n_radial = 5, all contractions)."""
    return sum(len(combinations(settings.n_radial, c)) for c in settings.contractions)


def grouped_by_atom(pair_i: torch.Tensor) -> bool:
    """Whether the pairs are grouped by centre atom in ascending order (as BatchLoader makes them)."""
    return not (pair_i.numel() and bool((pair_i[1:] < pair_i[:-1]).any()))


def neighbor_layout(pair_i: torch.Tensor, n_atoms: int):
    """(dense slot index or None when already dense, slots per atom) if the pairs are grouped by
    centre atom in ascending order (as BatchLoader makes them), else None.

    Depends on integer indices only (never on displacements), so jvp/vmap over displacements are unaffected.
    """
    n_pairs = pair_i.shape[0]
    if n_pairs == 0 or n_atoms == 0 or not grouped_by_atom(pair_i):
        return None
    counts = torch.bincount(pair_i, minlength=n_atoms)
    n_slots = int(counts.max())
    if n_pairs == n_atoms * n_slots:  # every atom has the same number of neighbours: already dense
        return None, n_slots
    start = torch.cumsum(counts, 0) - counts
    slot = torch.arange(n_pairs, device=pair_i.device) - start[pair_i]
    return pair_i * n_slots + slot, n_slots


def cosine_cutoff(r: torch.Tensor, r_cut: float) -> torch.Tensor:
    """f_c(r) = ½(cos(π r/r_c) + 1) for r < r_c, else 0 (continuous with its first derivative)."""
    return 0.5 * (torch.cos(torch.clamp(r, max=r_cut) * (math.pi / r_cut)) + 1.0)


class GaussianMoments(nn.Module):
    """Gaussian-moment features of every atom from pair displacements (DESIGN §4)."""

    def __init__(self, settings: DescriptorSettings, n_species: int, dtype: torch.dtype = torch.float32):
        super().__init__()
        self.settings = settings
        self.n_species = n_species
        self.n_radial = settings.n_radial
        self.r_cut = settings.r_cut
        nb = settings.n_basis
        spacing = (settings.r_cut - settings.r_min) / nb
        self.gamma = 1.0 / spacing**2
        centres = settings.r_min + spacing * np.arange(nb)
        self.register_buffer("centres", torch.tensor(centres, dtype=dtype), persistent=False)
        self.basis_norm = (2.0 * self.gamma / math.pi) ** 0.25 / math.sqrt(nb)
        # β[Z_i, Z_j, s, k] stored as (n_species², n_radial, n_basis)
        beta = torch.empty(n_species * n_species, self.n_radial, nb, dtype=dtype).uniform_(-1.0, 1.0)
        self.beta = nn.Parameter(beta)
        self._build_tables(dtype)
        self.contractions = list(settings.contractions)
        # set (by GMNN.energy_and_forces without create_graph) while no double backward will be
        # taken: only picks the cheaper of two equivalent forms of the β gather in radial()
        self.first_order_only = False
        self.n_features = n_features(settings)

    def _build_tables(self, dtype: torch.dtype) -> None:
        """Index tables of the angular components, tensor expansions and, per contraction, the flat
        positions of its unique radial combinations in the matmul outputs of :meth:`contract`."""
        n = self.n_radial
        want = set(self.settings.contractions)
        self.register_buffer("_l2a", torch.tensor([a for a, _ in _L2]), persistent=False)
        self.register_buffer("_l2b", torch.tensor([b for _, b in _L2]), persistent=False)
        self.register_buffer("_l3a", torch.tensor([_L2.index(tuple(sorted(t[:2]))) for t in _L3]), persistent=False)
        self.register_buffer("_l3b", torch.tensor([t[2] for t in _L3]), persistent=False)
        self.register_buffer("_exp2", torch.tensor(_expansion(_L2, 2), dtype=dtype), persistent=False)
        self.register_buffer("_exp3", torch.tensor(_expansion(_L3, 3), dtype=dtype), persistent=False)
        self._need3 = bool(want & {"c33", "c332", "c321"})
        pairs = [(a, b) for a in range(n) for b in range(n) if a <= b]  # r ≤ s rows of P and G
        pidx = {p: k for k, p in enumerate(pairs)}
        self._n_pairs = len(pairs)
        # step 1 / 2 outputs → rows (r ≤ s) × 3·3 of the step-3 left factor, as flat gathers
        w = 3 * n
        sel_pg = [(r * 3 + i) * w + s * 3 + k for r, s in pairs for i in range(3) for k in range(3)]
        self.register_buffer("_sel_pg", torch.tensor(sel_pg), persistent=False)
        # step 3 / 4 column blocks (see contract): name → (offset, width)
        self._parts3 = [(c, {"c22": n, "c222": len(pairs), "c332": len(pairs), "h": 3 * n}[c])
                        for c in ("c22", "c222", "c332", "h") if c in want or (c == "h" and "c321" in want)]
        self._parts4 = [(c, {"c11": n, "c321": n * n, "c112": n * n}[c]) for c in ("c11", "c321", "c112") if c in want]
        off3, off4, o = {}, {}, 0
        for c, k in self._parts3:
            off3[c], o = o, o + k
        self._r3, o = o, 0
        for c, k in self._parts4:
            off4[c], o = o, o + k
        self._r4 = o
        for c in self.settings.contractions:
            combos = combinations(n, c)
            if c == "c0":
                flat = [t[0] for t in combos]
            elif c == "c33":  # (A, n, n) from the diagonal of G
                flat = [a * n + b for a, b in combos]
            elif c == "c22":  # step 3 output (A, t, R3): t = b, row a
                flat = [b * self._r3 + off3[c] + a for a, b in combos]
            elif c in ("c222", "c332"):  # row (a ≤ b), t = c
                flat = [t * self._r3 + off3[c] + pidx[(a, b)] for a, b, t in combos]
            elif c == "c11":  # step 4 output (A, t, R4)
                flat = [b * self._r4 + off4[c] + a for a, b in combos]
            elif c == "c321":  # rows (s, r) of H, t = Ψ1 index
                flat = [t * self._r4 + off4[c] + b * n + a for a, b, t in combos]
            elif c == "c112":  # rows (r, t) of Q (Ψ1 r, Ψ2 t), output index = Ψ1 s
                flat = [b * self._r4 + off4[c] + a * n + t for a, b, t in combos]
            self.register_buffer(f"_sel_{c}", torch.tensor(flat), persistent=False)

    # ---- pair level -------------------------------------------------------------------------
    def radial(self, r: torch.Tensor, pair_type: torch.Tensor) -> torch.Tensor:
        """R_s(r_ij) (n_pairs, n_radial) = Σ_k β[Z_i, Z_j, s, k] φ_k(r) f_c(r).

        All species pairs at once, (P, K) @ (K, T·n_radial), then the pair's own type picked by a
        one-hot mask and a sum over T: dense, so forward, backward and double backward are plain
        matmuls and elementwise products (≈1.4× faster than a (P, T·K) one-hot operand).
        """
        phi = torch.exp(-self.gamma * (r[:, None] - self.centres) ** 2)  # (P, K)
        phi = phi * (cosine_cutoff(r, self.r_cut) * self.basis_norm)[:, None]
        n_types = self.n_species * self.n_species
        if self.first_order_only or not torch.is_grad_enabled():
            # no double backward needed: gather each pair's own β (P, n_radial, K), cost independent
            # of the number of species pairs T (QM9: T = 25, 3.5× faster scoring than all-types)
            beta_pair = self.beta.index_select(0, pair_type)  # (P, n_radial, K)
            return (beta_pair @ phi[:, :, None])[:, :, 0]
        beta = self.beta.permute(2, 0, 1).reshape(-1, n_types * self.n_radial)  # (K, T·n_radial)
        every = (phi @ beta).reshape(r.shape[0], n_types, self.n_radial)
        onehot = torch.nn.functional.one_hot(pair_type, n_types).to(phi.dtype)  # (P, T)
        return (every * onehot[:, :, None]).sum(1)

    def radial_derivative(self, r: torch.Tensor, pair_type: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(R_s(r), ∂R_s/∂r) (n_pairs, n_radial) each, in closed form, without autograd.

        φ_k' = −2γ(r − r_k) φ_k and f_c' = −(π/2r_c) sin(πr/r_c) below r_c (0 beyond).
        """
        x = r[:, None] - self.centres
        gauss = torch.exp(-self.gamma * x * x) * self.basis_norm  # (P, K)
        fc = cosine_cutoff(r, self.r_cut)[:, None]
        dfc = torch.where(r < self.r_cut, -0.5 * math.pi / self.r_cut * torch.sin(r * (math.pi / self.r_cut)),
                          torch.zeros_like(r))[:, None]
        phi = gauss * fc
        dphi = gauss * (dfc - 2.0 * self.gamma * x * fc)
        beta_pair = self.beta.detach().index_select(0, pair_type)  # (P, n_radial, K)
        both = beta_pair @ torch.stack([phi, dphi], 2)  # (P, n_radial, 2)
        return both[:, :, 0], both[:, :, 1]

    def angular_derivative(self, unit: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
        """Derivative of :meth:`angular` (n_pairs, 20) along a change ``delta`` (n_pairs, 3) of r̂."""
        a2, b2, a3, b3 = self._l2a, self._l2b, self._l3a, self._l3b
        t2 = unit.index_select(1, a2) * unit.index_select(1, b2)
        d2 = delta.index_select(1, a2) * unit.index_select(1, b2) + unit.index_select(1, a2) * delta.index_select(1, b2)
        d3 = d2.index_select(1, a3) * unit.index_select(1, b3) + t2.index_select(1, a3) * delta.index_select(1, b3)
        return torch.cat([torch.zeros_like(unit[:, :1]), delta, d2, d3], dim=1)

    def angular(self, unit: torch.Tensor) -> torch.Tensor:
        """Unique components of r̂^{⊗L}, L = 0..3: (n_pairs, 20)."""
        # index_select, not advanced indexing: its backward is an index_add, ≈2.5× cheaper overall
        t2 = unit.index_select(1, self._l2a) * unit.index_select(1, self._l2b)  # (P, 6)
        t3 = t2.index_select(1, self._l3a) * unit.index_select(1, self._l3b)  # (P, 10)
        return torch.cat([torch.ones_like(unit[:, :1]), unit, t2, t3], dim=1)

    def pair_types(self, species: torch.Tensor, pair_i: torch.Tensor, pair_j: torch.Tensor) -> torch.Tensor:
        """Row of every pair's species pair (Z_i, Z_j) in β: (P,) int64."""
        return species[pair_i] * self.n_species + species[pair_j]

    def pair_terms(self, displacements, species, pair_i, pair_j) -> tuple[torch.Tensor, torch.Tensor]:
        """Every pair's radial functions R_s(r_ij) (P, n_radial) and angular terms r̂_ij^{⊗L} (P, 20)."""
        r = torch.linalg.vector_norm(displacements, dim=-1)  # (P,) Å
        return self.radial(r, self.pair_types(species, pair_i, pair_j)), self.angular(displacements / r[:, None])

    # ---- atom level -------------------------------------------------------------------------
    def moments(self, displacements, species, pair_i, pair_j, n_atoms: int) -> torch.Tensor:
        """Ψ_{i,L,s} by unique components: (n_atoms, n_radial, 20)."""
        rad, ang = self.pair_terms(displacements, species, pair_i, pair_j)  # (P, n_radial), (P, 20)
        layout = neighbor_layout(pair_i, n_atoms)
        if layout is None:  # pairs not grouped by centre atom: scatter the outer products
            per_pair = (rad[:, :, None] * ang[:, None, :]).reshape(rad.shape[0], self.n_radial * 20)  # no pair: (0, ·)
            zeros = per_pair.new_zeros((n_atoms, per_pair.shape[1]))
            return zeros.index_add(0, pair_i, per_pair).reshape(n_atoms, self.n_radial, 20)
        # grouped by centre atom: lay the pairs out as (atom, neighbour slot), zero-padded, and
        # let one batched matmul do Σ_j R_s(r_ij) r̂_ij^{⊗L} (no (P, n_radial, 20) outer product)
        dense, n_slots = layout
        if dense is not None:
            rad = rad.new_zeros((n_atoms * n_slots, self.n_radial)).index_copy(0, dense, rad)
            ang = ang.new_zeros((n_atoms * n_slots, 20)).index_copy(0, dense, ang)
        return torch.bmm(rad.reshape(n_atoms, n_slots, self.n_radial).transpose(1, 2), ang.reshape(n_atoms, n_slots, 20))

    def contract(self, psi: torch.Tensor) -> torch.Tensor:
        """Rotation invariants of the moments, unique radial combinations: (n_atoms, n_features).

        The full tensors are rebuilt from the unique components by a matmul with a fixed 0/1
        expansion. Every contraction is then a chain of per-atom matrix products, and products
        that share their right factor are stacked into one batched matmul, so all eight
        contractions take four ``bmm`` calls (small batched matmuls dominate the CPU time):

        1. G[r k, s l] = Σ_ij Ψ3[r]_ijk Ψ3[s]_ijl  (c33 = Σ_k G[r k, s k]; c332 via step 3)
        2. P[r i, s k] = Σ_j Ψ2[r]_ij Ψ2[s]_jk and Q[r, t j] = Σ_i Ψ1[r]_i Ψ2[t]_ij  (right factor Ψ2)
        3. Ψ2[t] · (over a 9-index): c22, c222 (from P, rows r ≤ s), c332 (from G, rows r ≤ s),
           and H[s; r k] = Σ_ij Ψ3[r]_ijk Ψ2[s]_ij
        4. Ψ1[t] · (over a 3-index): c11, c321 (from H), c112 (from Q)

        Steps 3 and 4 put the few Ψ2[t] / Ψ1[t] rows on the left, (A, n, 9) @ (A, 9, R): a wide
        output is 2-4× faster than (A, R, 9) @ (A, 9, n) for these tiny per-atom matrices. The
        unique combinations are then picked from the flat outputs by precomputed index tables.
        """
        a = psi.shape[0]
        m1 = psi[:, :, 1:4]  # (A, n, 3)
        m2f = psi[:, :, 4:10] @ self._exp2  # (A, n, 9)
        # Ψ3 is symmetric, so its row-major flattening read as (r k, i j) is already the layout that
        # steps 1 and 3 need: a free view instead of two permute copies
        m3 = (psi[:, :, 10:20] @ self._exp3).reshape(a, 3 * psi.shape[1], 9) if self._need3 else None  # (A, r k, i j)
        direct, left3, q = self._steps_1_2(psi, m1, m2f, m3)
        res3 = self._step_3(m2f, left3)
        flat3 = None if res3 is None else res3.reshape(a, -1)
        flat4 = self._step_4(m1, res3, q)
        src = {"c0": lambda: direct["c0"], "c33": lambda: direct["c33"].reshape(a, -1), "c22": lambda: flat3,
               "c222": lambda: flat3, "c332": lambda: flat3, "c11": lambda: flat4, "c321": lambda: flat4,
               "c112": lambda: flat4}
        return torch.cat([torch.index_select(src[c](), 1, getattr(self, f"_sel_{c}")) for c in self.contractions], dim=1)

    def _steps_1_2(self, psi, m1, m2f, m3) -> tuple[dict, dict, torch.Tensor | None]:
        """Steps 1 (G from Ψ3) and 2 (P and Q, right factor Ψ2) of :meth:`contract`: the features
        read off directly (c0, c33), the left factors of step 3 by name, and Q (rows (r, t)) for step 4."""
        a, n = psi.shape[0], self.n_radial
        want = set(self.contractions)
        m2 = m2f.reshape(a, n, 3, 3)
        direct, left3, q = {}, {}, None
        if "c0" in want:
            direct["c0"] = psi[:, :, 0]
        if "c22" in want:
            left3["c22"] = m2f
        if want & {"c33", "c332"}:  # step 1
            g = torch.bmm(m3, m3.transpose(1, 2))  # (A, 3n, 3n)
            if "c33" in want:
                direct["c33"] = g.reshape(a, n, 3, n, 3).diagonal(dim1=2, dim2=4).sum(-1)
            if "c332" in want:
                left3["c332"] = torch.index_select(g.reshape(a, -1), 1, self._sel_pg).reshape(a, self._n_pairs, 9)
        left2 = [x for c, x in (("c222", m2.reshape(a, 3 * n, 3)), ("c112", m1)) if c in want]
        if left2:  # step 2
            pq = torch.bmm(torch.cat(left2, 1), m2.transpose(1, 2).reshape(a, 3, 3 * n))
            # split, not slices: its backward is one cat instead of zero-filled full-size grads
            pq = dict(zip([c for c in ("c222", "c112") if c in want], torch.split(pq, [x.shape[1] for x in left2], 1)))
            if "c222" in want:
                left3["c222"] = torch.index_select(pq["c222"].reshape(a, -1), 1, self._sel_pg).reshape(
                    a, self._n_pairs, 9)
            if "c112" in want:
                q = pq["c112"].reshape(a, n * n, 3)  # rows (r, t)
        if "c321" in want:
            left3["h"] = m3  # rows (r, k)
        return direct, left3, q

    def _step_3(self, m2f: torch.Tensor, left3: dict) -> torch.Tensor | None:
        """Step 3 of :meth:`contract`: Ψ2[t] · every left factor over a 9-index, (A, t, R3)."""
        if not self._parts3:
            return None
        lhs = torch.cat([left3[c] for c, _ in self._parts3], 1)
        return torch.bmm(m2f, lhs.transpose(1, 2))

    def _step_4(self, m1: torch.Tensor, res3: torch.Tensor | None, q: torch.Tensor | None) -> torch.Tensor | None:
        """Step 4 of :meth:`contract`: Ψ1[t] · (Ψ1, H from step 3, Q from step 2) over a 3-index, flat (A, t·R4)."""
        a, n = m1.shape[0], self.n_radial
        left4 = []
        for c, _ in self._parts4:
            if c == "c11":
                left4.append(m1)
            elif c == "c321":
                off = sum(k for c2, k in self._parts3[: [p for p, _ in self._parts3].index("h")])
                left4.append(res3[:, :, off: off + 3 * n].reshape(a, n * n, 3))  # rows (s, r)
            else:
                left4.append(q)
        if not left4:
            return None
        return torch.bmm(m1, torch.cat(left4, 1).transpose(1, 2)).reshape(a, -1)

    def forward(self, displacements, species, pair_i, pair_j, n_atoms: int) -> torch.Tensor:
        """Features (n_atoms, n_features) from displacements r_ij = R_j − R_i + shift (n_pairs, 3) Å."""
        return self.contract(self.moments(displacements, species, pair_i, pair_j, n_atoms))

    # ---- the faster routes: inference kernel, feature tangents ---------------------------------
    def inference_features(self, displacements, species, pair_i, pair_j, n_atoms: int) -> torch.Tensor:
        """Features (n_atoms, n_features) as :meth:`forward`, without derivatives (QS1 scoring).

        The fused numba kernel (gmnn.kernels.moments; 2× faster QM9 scoring) where the backend is
        numba, the tensors are on the CPU and the pairs are grouped by centre atom (as BatchLoader
        makes them); :meth:`forward` otherwise."""
        kernels = backend().moments
        if kernels is None or displacements.device.type != "cpu" or not grouped_by_atom(pair_i):
            with torch.no_grad():
                return self(displacements.to(self.beta.dtype), species, pair_i, pair_j, n_atoms)
        start = torch.zeros(n_atoms + 1, dtype=torch.int64)
        start[1:] = torch.cumsum(torch.bincount(pair_i, minlength=n_atoms), 0)
        pair_type = self.pair_types(species, pair_i, pair_j)
        out = torch.empty((n_atoms, self.n_features), dtype=self.beta.dtype)
        kernels.gaussian_moments(displacements.detach().to(self.beta.dtype).contiguous().numpy(), pair_type.numpy(),
                                 start.numpy(), self.radial_basis(self.beta.dtype), self.contraction_offsets(),
                                 FULL_INDEX, out.numpy())
        return out

    def radial_basis(self, dtype: torch.dtype) -> RadialBasis:
        """The radial basis for the numba kernels, β·norm in ``dtype`` (CPU arrays)."""
        beta = (self.beta.detach() * self.basis_norm).to(dtype).contiguous()
        return RadialBasis(beta.numpy(), self.centres.double().numpy(), float(self.gamma), float(self.r_cut))

    def contraction_offsets(self) -> np.ndarray:
        """First feature column of every contraction in settings.CONTRACTIONS order (−1: not used): (8,) int64."""
        offsets = np.full(len(CONTRACTIONS), -1, np.int64)
        column = 0
        for c in self.contractions:
            offsets[CONTRACTIONS.index(c)] = column
            column += len(combinations(self.n_radial, c))
        return offsets

    def expansion(self, rank: int) -> torch.Tensor:
        """The 0/1 expansion E (n_unique, 3^rank) of rank 2 or 3: full symmetric tensor = unique components @ E."""
        return {2: self._exp2, 3: self._exp3}[rank]

    @property
    def uses_rank3(self) -> bool:
        """Whether a contraction reads Ψ3 (c33, c332, c321)."""
        return self._need3
