"""Calibrated uncertainty: a prior precision for the Fisher matrix and a map from score to force error.

With fewer training rows than output weights (QS1 with N_train < d) the Fisher matrix Ã = Σ g gᵀ is
singular: every candidate with a component outside the span of the training sensitivities gets
s = gᵀÃ⁻¹g ≈ 1/jitter, so every one looks informative and the ranking lives in the jitter's null
space. A Gaussian prior on the output weights (precision λ, the last-layer Laplace approximation)
gives the posterior precision Ã_λ = Ã + λI and the epistemic variance of a prediction

    var(x) = σ² · s_λ(x),   s_λ(x) = g(x)ᵀ Ã_λ⁻¹ g(x)            (cf. eqs. 12–14 of the paper)

λ and the scale σ² are fitted by maximum likelihood on the validation set (labels already paid
for): its energy errors e_v ~ N(0, σ² s_λ(x_v)), σ² in closed form for every λ of a log grid.

The force error of a structure is then predicted by a power law fitted in log space on labeled
frames that the model did not train on (the validation set; the frames just labeled):
    err_F(x) ≈ a · s_λ(x)^p   (eV/Å, RMS over the 3N force components),
and judged by Spearman's r between score and error and by the miscalibration area of the
Gaussian it implies (the mean |observed − expected| coverage of central intervals; 0 is perfect,
0.5 the worst; as in Tran et al., Mach. Learn.: Sci. Technol. 1, 025006 (2020)). Pure NumPy/SciPy.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from oedal.errors import InputError
from oedal.oed import fisher

LAMBDA_GRID = np.logspace(-8, 2, 41)
"""Candidate prior precisions λ, relative to tr(Ã)/d (the mean eigenvalue of the Fisher matrix)."""


class Prior(NamedTuple):
    """The fitted prior: Ã_λ = Ã + λI (``factor``: its Cholesky factor) and the scale σ² (eV²)."""

    lam: float  # absolute prior precision λ added to the diagonal
    sigma2: float  # σ² of var = σ² s_λ, eV² (energy units of the errors it was fitted on)
    log_likelihood: float  # mean Gaussian log-likelihood per validation structure at the optimum
    factor: fisher.FisherFactor


class ErrorMap(NamedTuple):
    """err(s) = a · s^p (eV/Å): the expected force error of a structure from its score s_λ."""

    a: float
    p: float

    def __call__(self, s: np.ndarray) -> np.ndarray:
        return self.a * np.power(np.maximum(np.asarray(s, dtype=np.float64), 1e-300), self.p)

    def inverse(self, error: float) -> float:
        """The score s_λ at which the expected force error is ``error`` (eV/Å)."""
        return float((error / self.a) ** (1.0 / self.p))


def prior_factor(a: np.ndarray, lam: float) -> fisher.FisherFactor:
    """Cholesky factor of Ã + λI (λ > 0: positive definite, no jitter needed)."""
    d = a.shape[0]
    return fisher.FisherFactor(np.linalg.cholesky(a + lam * np.eye(d)), lam, -1)


def fit_prior(g_train: np.ndarray, g_valid: np.ndarray, errors: np.ndarray,
              grid: np.ndarray = LAMBDA_GRID) -> Prior:
    """λ and σ² maximising Σ_v log N(e_v; 0, σ² s_λ(x_v)) over ``grid`` × tr(Ã)/d (module docstring).

    ``g_train (n, d)``, ``g_valid (m, d)``: energy sensitivities; ``errors (m,)``: the model's energy
    errors on the validation structures (eV)."""
    a = fisher.fisher_matrix(g_train)
    errors = np.asarray(errors, dtype=np.float64)
    if len(errors) < 2 or len(errors) != len(g_valid):
        raise InputError(f"fit_prior: need ≥ 2 validation errors matching g_valid, got {len(errors)}")
    scale = float(np.trace(a)) / a.shape[0] or 1.0
    best = None
    for rel in grid:
        factor = prior_factor(a, rel * scale)
        s = fisher.row_norms2(fisher.project(factor, g_valid))
        sigma2 = float(np.mean(errors**2 / s))
        ll = float(np.mean(-0.5 * (np.log(2 * math.pi * sigma2 * s) + errors**2 / (sigma2 * s))))
        if best is None or ll > best.log_likelihood:
            best = Prior(rel * scale, sigma2, ll, factor)
    return best


def fit_error_map(s: np.ndarray, errors: np.ndarray) -> ErrorMap:
    """Least squares of log err = log a + p log s over structures with positive score and error."""
    s, errors = np.asarray(s, dtype=np.float64), np.asarray(errors, dtype=np.float64)
    ok = (s > 0) & (errors > 0) & np.isfinite(s) & np.isfinite(errors)
    if ok.sum() < 3:
        raise InputError(f"fit_error_map: need ≥ 3 structures with positive score and error, got {int(ok.sum())}")
    p, log_a = np.polyfit(np.log(s[ok]), np.log(errors[ok]), 1)
    return ErrorMap(float(math.exp(log_a)), float(p))


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman's rank correlation (NaN with fewer than 3 points)."""
    from scipy import stats

    if len(x) < 3:
        return math.nan
    return float(stats.spearmanr(x, y).statistic)


def pearson(x: np.ndarray, y: np.ndarray) -> float:
    """Pearson's linear correlation (NaN with fewer than 3 points)."""
    from scipy import stats

    if len(x) < 3:
        return math.nan
    return float(stats.pearsonr(x, y).statistic)


def miscalibration_area(predicted_std: np.ndarray, errors: np.ndarray, levels: int = 99) -> float:
    """Mean |observed − expected| fraction of errors inside the central p-intervals of N(0, σ²), over
    p = 1/(levels+1) … levels/(levels+1). ``predicted_std`` and ``errors`` (any shape, same size):
    σ and the observed error of each component."""
    from scipy import stats

    z = np.abs(np.asarray(errors, dtype=np.float64).ravel()) / np.asarray(predicted_std, dtype=np.float64).ravel()
    p = np.arange(1, levels + 1) / (levels + 1)
    half_width = stats.norm.ppf(0.5 + p / 2)  # |z| ≤ this with probability p
    observed = (z[None, :] <= half_width[:, None]).mean(axis=1)
    return float(np.mean(np.abs(observed - p)))


class Calibration(NamedTuple):
    """How well the map predicts force errors on one set of labeled frames."""

    spearman: float  # rank correlation of score and per-structure force RMSE
    miscalibration_area: float  # of N(0, err(s)²) for every force component
    n: int


def assess(error_map: ErrorMap, s: np.ndarray, force_errors: np.ndarray, n_atoms: np.ndarray) -> Calibration:
    """Spearman r and miscalibration area of ``error_map`` on structures with scores ``s (n,)`` and force
    errors ``force_errors (n_atoms_total, 3)`` eV/Å (the map's σ applies to each component)."""
    n_atoms = np.asarray(n_atoms, dtype=np.int64)
    rms = structure_force_rms(force_errors, n_atoms)
    std = np.repeat(error_map(s), 3 * n_atoms)
    return Calibration(spearman(s, rms), miscalibration_area(std, np.asarray(force_errors).ravel()), len(n_atoms))


def structure_force_rms(force_errors: np.ndarray, n_atoms: np.ndarray) -> np.ndarray:
    """RMS over the 3N force components of each structure: (n,) eV/Å."""
    sq = (np.asarray(force_errors, dtype=np.float64) ** 2).sum(axis=1)
    starts = np.concatenate([[0], np.cumsum(n_atoms)[:-1]])
    return np.sqrt(np.add.reduceat(sq, starts) / (3 * np.asarray(n_atoms))) if len(sq) else np.zeros(0)
