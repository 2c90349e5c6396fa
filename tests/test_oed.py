"""OED maths: the efficient formulas equal the brute-force ones (eqs. 8, 12–14, 20–22, 24)."""

from __future__ import annotations

import numpy as np
import pytest

from oedal.oed import fisher
from oedal.errors import InputError


def _problem(n_train=40, n_pool=25, d=6, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n_train, d)), rng.normal(size=(n_pool, d)) * rng.uniform(0.2, 3.0, size=(n_pool, 1))


def test_eq14_equals_bruteforce_average_variance_change():
    g_train, g_pool = _problem()
    L, n_train = 0.37, len(g_train)  # training residual (noise) and set size
    A = (g_train.T @ g_train) / L  # eq. (8)
    A_inv = np.linalg.inv(A)
    # eq. (12) second term for every training point x_i, averaged over the training set (eq. 13)
    num = (g_train @ A_inv @ g_pool.T) ** 2  # (n_train, n_pool)
    den = L + np.einsum("pi,ij,pj->p", g_pool, A_inv, g_pool)
    brute = num.mean(axis=0) / den
    factor = fisher.factor_from_sensitivities(g_train, jitter=0.0)
    scores, u = fisher.qs1_scores(factor, g_pool)
    np.testing.assert_allclose(L / n_train * scores, brute, rtol=1e-10)
    np.testing.assert_allclose(np.sum(u * u, axis=1), np.einsum("pi,ij,pj->p", g_pool, np.linalg.inv(A * L), g_pool), rtol=1e-10)
    assert np.all(scores >= 0) and np.all(scores < 1)


def test_projection_in_place_equals_explicit_inverse():
    g_train, g_pool = _problem()
    factor = fisher.factor_from_sensitivities(g_train, jitter=0.0)
    expected = g_pool @ np.linalg.inv(factor.chol).T  # rows u = C⁻¹ g
    np.testing.assert_allclose(fisher.project(factor, g_pool), expected, rtol=1e-12)
    rows = g_pool.copy()
    u = fisher.project(factor, rows, overwrite=True)
    np.testing.assert_allclose(u, expected, rtol=1e-12)
    assert np.shares_memory(u, rows)  # no second array of the size of the pool's rows


def test_qs2_mean_and_max_reductions_and_qs3():
    rng = np.random.default_rng(1)
    d = 5
    g_train_rows = rng.normal(size=(60, d))
    counts = np.array([6, 9, 3, 12])  # 3·N_at per structure
    rows = rng.normal(size=(counts.sum(), d))
    factor = fisher.factor_from_sensitivities(g_train_rows)
    A_inv = np.linalg.inv(g_train_rows.T @ g_train_rows)
    s = np.einsum("ri,ij,rj->r", rows, A_inv, rows)
    comp = s / (1 + s)
    off = np.concatenate([[0], np.cumsum(counts)])
    mean_ref = np.array([comp[a:b].mean() for a, b in zip(off[:-1], off[1:])])
    max_ref = np.array([comp[a:b].reshape(-1, 3).mean(axis=1).max() for a, b in zip(off[:-1], off[1:])])
    np.testing.assert_allclose(fisher.qs2_scores(factor, rows, counts, "mean")[0], mean_ref, rtol=1e-10)
    np.testing.assert_allclose(fisher.qs2_scores(factor, rows, counts, "max")[0], max_ref, rtol=1e-10)
    np.testing.assert_allclose(fisher.qs3_scores(mean_ref[:2], max_ref[:2], 1.5), mean_ref[:2] + 1.5 * max_ref[:2])


def test_jitter_handles_fewer_training_rows_than_d():
    g_train, g_pool = _problem(n_train=3, n_pool=10, d=8)
    factor = fisher.factor_from_sensitivities(g_train, jitter=1e-8)
    assert factor.jitter > 0
    scores, _ = fisher.qs1_scores(factor, g_pool)
    assert np.all(np.isfinite(scores)) and np.all(scores >= 0) and np.all(scores < 1)
    # directions outside the training span are maximally informative; inside the span they are not
    in_span = fisher.qs1_scores(factor, g_train[:1] * 1e-3)[0]
    assert scores.min() > 0.99 and in_span[0] < 0.5


def test_jitter_retries_when_numerically_singular():
    g = np.ones((20, 4))  # rank 1 although n_rows >= d
    factor = fisher.factor_from_sensitivities(g, jitter=1e-8)
    assert factor.jitter > 0 and np.all(np.isfinite(factor.chol))


def test_threshold_and_informativeness():
    t = np.array([0.1, 0.2, 0.9])
    assert fisher.threshold(t, "median") == pytest.approx(0.2)
    assert fisher.threshold(t, "mean") == pytest.approx(0.4)
    np.testing.assert_allclose(fisher.informativeness(np.array([0.4, 0.1]), 0.2), [2.0, 0.5])
    with pytest.raises(InputError):
        fisher.threshold(np.array([]), "median")


def test_committee_spread_equals_numpy_std():
    rng = np.random.default_rng(3)
    e = rng.normal(size=(4, 17))
    np.testing.assert_allclose(fisher.committee_spread(e), np.std(e, axis=0, ddof=0))
    f = rng.normal(size=(4, 10, 3))
    n_atoms = np.array([3, 7])
    ref = [np.sqrt(np.mean(np.std(f[:, a:b], axis=0, ddof=0) ** 2)) for a, b in ((0, 3), (3, 10))]
    np.testing.assert_allclose(fisher.force_spread(f, n_atoms), ref)
    with pytest.raises(InputError):
        fisher.committee_spread(e[:1])
