"""Calibration of the OED uncertainty: a fitted prior recovers an injected scale, the error map recovers
an injected power law, the miscalibration area tells calibrated from miscalibrated."""

from __future__ import annotations

import numpy as np
import pytest

from oedal.oed import calibration, fisher


def synthetic(rng, d=16, n_train=8, m=3000):
    g_train = rng.normal(size=(n_train, d))  # fewer rows than d: Ã singular
    g_valid = rng.normal(size=(m, d))
    return g_train, g_valid


def test_fitted_prior_recovers_an_injected_prior_and_scale():
    rng = np.random.default_rng(0)
    g_train, g_valid = synthetic(rng)
    a = fisher.fisher_matrix(g_train)
    lam_true, k = 0.1 * np.trace(a) / a.shape[0], 0.05  # eV
    s_true = fisher.row_norms2(fisher.project(calibration.prior_factor(a, lam_true), g_valid))
    errors = k * np.sqrt(s_true) * rng.normal(size=len(s_true))
    prior = calibration.fit_prior(g_train, g_valid, errors)
    assert prior.lam / lam_true == pytest.approx(1.0, rel=0.8)  # within one grid step or so
    assert np.sqrt(prior.sigma2) == pytest.approx(k, rel=0.1)
    # a wrong λ fits worse: the likelihood at the optimum beats the jitter-sized and the huge prior
    for lam in (1e-8 * lam_true, 1e3 * lam_true):
        s = fisher.row_norms2(fisher.project(calibration.prior_factor(a, lam), g_valid))
        sigma2 = np.mean(errors**2 / s)
        ll = np.mean(-0.5 * (np.log(2 * np.pi * sigma2 * s) + errors**2 / (sigma2 * s)))
        assert ll < prior.log_likelihood


def test_error_map_recovers_an_injected_power_law_and_is_calibrated():
    rng = np.random.default_rng(1)
    n, atoms = 2000, 9
    s = np.exp(rng.uniform(np.log(1e-3), np.log(10.0), n))
    k, p = 0.08, 0.5  # err = 0.08 eV/Å · s^½
    sigma = k * s**p
    force_errors = rng.normal(size=(n * atoms, 3)) * np.repeat(sigma, atoms)[:, None]
    n_atoms = np.full(n, atoms)
    rms = calibration.structure_force_rms(force_errors, n_atoms)
    fitted = calibration.fit_error_map(s, rms)
    assert fitted.p == pytest.approx(p, abs=0.02)
    assert fitted.a == pytest.approx(k, rel=0.05)
    assert fitted.inverse(float(fitted(np.array([0.3]))[0])) == pytest.approx(0.3)
    good = calibration.assess(fitted, s, force_errors, n_atoms)
    bad = calibration.assess(calibration.ErrorMap(3 * fitted.a, fitted.p), s, force_errors, n_atoms)
    assert good.spearman > 0.9 and good.miscalibration_area < 0.02
    assert bad.miscalibration_area > 0.2  # three times too wide: most errors inside every interval


def test_miscalibration_area_of_exact_and_scaled_gaussians():
    rng = np.random.default_rng(2)
    sigma = rng.uniform(0.1, 2.0, 20000)
    errors = rng.normal(size=20000) * sigma
    assert calibration.miscalibration_area(sigma, errors) < 0.01
    assert calibration.miscalibration_area(sigma / 2, errors) > 0.15  # overconfident
