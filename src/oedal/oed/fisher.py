"""Optimal-experimental-design scores (DESIGN §6; paper section 2.2–2.3, 3.3) — pure NumPy.

Notation: ``g`` are output-layer sensitivities (rows of length d), ``Ã = Σ_train g gᵀ`` the Fisher
matrix up to the constant L (eq. 8/17/20), ``Ã = C Cᵀ`` its Cholesky factor (float64),
``u = C⁻¹ g`` the projected sensitivity and ``s = |u|² = gᵀ Ã⁻¹ g``. The score of one row is
``s / (1 + s)`` (eq. 14 without the prefactor L/N_train, which does not depend on the candidate).

Ragged Jacobians (QS2) are stored row-wise: ``rows (n_rows, d)`` with ``counts (n,)`` rows per
structure (3·N_at: atom-major, x/y/z minor), so a structure's rows are
``rows[offsets[k]:offsets[k+1]]`` with ``offsets = [0, cumsum(counts)]``.
"""

from __future__ import annotations

import logging
from typing import Literal, NamedTuple

import numpy as np

from oedal.data.structures import offsets_from_counts
from oedal.errors import InputError

log = logging.getLogger(__name__)

Reduction = Literal["mean", "max"]


class FisherFactor(NamedTuple):
    """Lower Cholesky factor C of Ã + jitter·I (float64), with the jitter actually added."""

    chol: np.ndarray  # (d, d) float64, lower triangular
    jitter: float  # absolute diagonal shift added to Ã (0.0 when Ã was positive definite)
    n_rows: int  # number of sensitivity rows that built Ã


def fisher_matrix(g: np.ndarray) -> np.ndarray:
    """Ã = Σ g gᵀ over the rows of ``g (n_rows, d)``, in float64 (eq. 8 / 17 / 20 without 1/L)."""
    g = np.asarray(g, dtype=np.float64)
    return g.T @ g


def fisher_factor(a: np.ndarray, *, n_rows: int, jitter: float = 1e-8) -> FisherFactor:
    """Cholesky factor of the Fisher matrix ``a (d, d)``, with a relative jitter where it is singular.

    When ``n_rows < d`` (fewer training components than output weights) Ã is singular by
    construction, so ``jitter · tr(Ã)/d`` is added to the diagonal from the start; otherwise the
    plain factorisation is tried first. Should it fail (numerically singular), the relative jitter
    is raised tenfold until it succeeds (at most 10 times).
    """
    a = np.asarray(a, dtype=np.float64)
    d = a.shape[0]
    if a.shape != (d, d) or not np.all(np.isfinite(a)):
        raise InputError(f"Fisher matrix must be a finite square matrix, got shape {a.shape}")
    scale = float(np.trace(a)) / d if d else 0.0
    if scale <= 0.0:
        scale = 1.0
    rel = jitter if n_rows < d else 0.0
    for _ in range(12):
        shift = rel * scale
        try:
            chol = np.linalg.cholesky(a + shift * np.eye(d)) if shift else np.linalg.cholesky(a)
            if shift:
                log.info("Fisher matrix singular (%d rows, d=%d): added jitter %.3g", n_rows, d, shift)
            return FisherFactor(chol, shift, n_rows)
        except np.linalg.LinAlgError:
            rel = max(jitter, 1e-12) if rel == 0.0 else rel * 10.0
    raise InputError(f"Fisher matrix (d={d}, {n_rows} rows) could not be factorised even with jitter {rel:g}")


def factor_from_sensitivities(g: np.ndarray, jitter: float = 1e-8) -> FisherFactor:
    """Fisher factor straight from training sensitivity rows ``g (n_rows, d)``."""
    g = np.asarray(g)
    return fisher_factor(fisher_matrix(g), n_rows=g.shape[0], jitter=jitter)


def project(factor: FisherFactor, g: np.ndarray, overwrite: bool = False) -> np.ndarray:
    """Projected sensitivities u = C⁻¹ g for rows ``g (n, d)`` → ``(n, d)`` float64.

    ``overwrite``: u may take g's memory (a C-ordered float64 g the caller no longer needs; QS2
    rows of a pool chunk are hundreds of MB, and a fresh array of that size costs page faults)."""
    g = np.asarray(g, dtype=np.float64)
    if g.shape[0] == 0:
        return np.zeros_like(g)
    import torch  # lazily: `oedal select` uses this module without ever projecting

    u = np.ascontiguousarray(g) if overwrite else np.array(g, order="C")
    # C uᵀ = gᵀ in place on the transposed view: LAPACK reads the C-ordered rows as column-major
    # (d, n), so neither a transposed copy nor a second output array (4× faster on 10⁵ rows)
    view = torch.from_numpy(u).T
    torch.linalg.solve_triangular(torch.from_numpy(factor.chol), view, upper=False, out=view)
    return u


def variance_change(s: np.ndarray) -> np.ndarray:
    """Expected variance change s/(1+s), eq. (14) without the prefactor L/N_train; in [0, 1)."""
    s = np.asarray(s, dtype=np.float64)
    return s / (1.0 + s)


def row_norms2(u: np.ndarray) -> np.ndarray:
    """s = |u|² per row, float64."""
    u = np.asarray(u, dtype=np.float64)
    return np.einsum("ij,ij->i", u, u)


def reduce_components(
    component_scores: np.ndarray, counts: np.ndarray, reduction: Reduction = "mean"
) -> np.ndarray:
    """Per-structure QS2 score from per-component scores (rows grouped by ``counts``).

    ``mean``: eq. (21), the average over the 3·N_at components. ``max``: the per-atom variant —
    the maximum over atoms of the atom's mean over its x, y, z components (counts must be
    multiples of 3). A structure without rows scores 0.
    """
    counts = np.asarray(counts, dtype=np.int64)
    vals = np.asarray(component_scores, dtype=np.float64)
    out = np.zeros(len(counts), dtype=np.float64)
    nonempty = counts > 0
    if reduction == "mean":
        starts = offsets_from_counts(counts)[:-1]
        if vals.size:
            sums = np.add.reduceat(vals, starts[nonempty]) if nonempty.any() else np.zeros(0)
            out[nonempty] = sums / counts[nonempty]
        return out
    if reduction == "max":
        if np.any(counts % 3):
            raise InputError("per-atom maximum needs 3 components per atom (counts must be multiples of 3)")
        per_atom = vals.reshape(-1, 3).mean(axis=1)
        atom_counts = counts // 3
        starts = offsets_from_counts(atom_counts)[:-1]
        if per_atom.size and nonempty.any():
            out[nonempty] = np.maximum.reduceat(per_atom, starts[nonempty])
        return out
    raise InputError(f"unknown QS2 reduction {reduction!r} (mean or max)")


def qs1_scores(factor: FisherFactor, g: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """QS1 scores (eq. 14) for energy sensitivities ``g (n, d)`` → (scores (n,), u (n, d))."""
    u = project(factor, g)
    return variance_change(row_norms2(u)), u


def qs2_scores(
    factor: FisherFactor, rows: np.ndarray, counts: np.ndarray, reduction: Reduction = "mean",
    overwrite: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """QS2 scores (eq. 14 per force component, reduced by eq. 21 or the per-atom maximum).

    ``rows (Σcounts, d)`` are force sensitivities ∂F_jk/∂w; returns (scores (n,), u rows).
    ``overwrite``: u may take the memory of ``rows`` (see project).
    """
    u = project(factor, rows, overwrite)
    return reduce_components(variance_change(row_norms2(u)), counts, reduction), u


def qs3_scores(qs1: np.ndarray, qs2: np.ndarray, beta: float) -> np.ndarray:
    """QS3 = QS1 + β·QS2, eq. (22)."""
    return np.asarray(qs1, dtype=np.float64) + beta * np.asarray(qs2, dtype=np.float64)


def threshold(train_scores: np.ndarray, kind: Literal["median", "mean"] = "median") -> float:
    """σ_th of section 3.3: the median (σ_th⁽²⁾) or mean (σ_th⁽¹⁾) of the training structures' scores."""
    train_scores = np.asarray(train_scores, dtype=np.float64)
    if train_scores.size == 0:
        raise InputError("threshold needs at least one training structure")
    if kind == "median":
        return float(np.median(train_scores))
    if kind == "mean":
        return float(np.mean(train_scores))
    raise InputError(f"unknown threshold {kind!r} (median or mean)")


def informativeness(scores: np.ndarray, sigma_th: float) -> np.ndarray:
    """I = score / σ_th (section 3.3); I > 1 means more informative than a typical training structure."""
    scores = np.asarray(scores, dtype=np.float64)
    if sigma_th <= 0.0:
        return np.full_like(scores, np.inf)
    return scores / sigma_th


def committee_spread(predictions: np.ndarray) -> np.ndarray:
    """σ_ens of eq. (24): committee standard deviation (ddof=0) over axis 0 of ``(K, ...)``."""
    p = np.asarray(predictions, dtype=np.float64)
    if p.shape[0] < 2:
        raise InputError(f"query by committee needs at least 2 models, got {p.shape[0]}")
    return p.std(axis=0, ddof=0)


def force_spread(forces: np.ndarray, n_atoms: np.ndarray) -> np.ndarray:
    """Per-structure force spread: RMS over the 3·N_at components of the committee std (eV/Å).

    ``forces (K, n_atoms_total, 3)``; returns ``(n,)``.
    """
    var = np.asarray(forces, dtype=np.float64).var(axis=0, ddof=0).sum(axis=1)  # (n_atoms_total,)
    counts = np.asarray(n_atoms, dtype=np.int64)
    return np.sqrt(reduce_components(var, counts, "mean") / 3.0)
