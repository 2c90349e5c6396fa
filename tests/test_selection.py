"""Selection: greedy Woodbury/lazy picks equal recomputation from scratch; order independence."""

from __future__ import annotations

import numpy as np
import pytest

from oedal.oed import fisher, selection
from oedal.oed.selection import Term


def _bruteforce_greedy(A, g_rows, counts, ids, m, reduction="mean", exclude=()):
    """Re-factor A + Σ g gᵀ after every pick and rescore the whole pool from scratch."""
    off = fisher.offsets_from_counts(counts)
    A = A.copy()
    picks = []
    for _ in range(m):
        factor = fisher.fisher_factor(A, n_rows=10**9, jitter=0.0)
        scores, _ = fisher.qs2_scores(factor, g_rows, counts, reduction)
        best = None
        for p in np.lexsort((ids, -scores)):
            if p not in picks and ids[p] not in exclude:
                best = p
                break
        picks.append(best)
        v = g_rows[off[best] : off[best + 1]]
        A += v.T @ v
    return np.array(picks)


def _pool(n=60, d=6, seed=0, rows_per=1):
    rng = np.random.default_rng(seed)
    g_train = rng.normal(size=(3 * d, d))
    counts = np.full(n, rows_per) if rows_per == 1 else rng.integers(1, 4, size=n) * 3
    g = rng.normal(size=(counts.sum(), d)) * rng.uniform(0.2, 2.0, size=(counts.sum(), 1))
    ids = rng.permutation(10 * n)[:n]
    return g_train, g, counts, ids


@pytest.mark.parametrize("rows_per,reduction", [(1, "mean"), (3, "mean"), (3, "max")])
def test_greedy_equals_recomputation_from_scratch(rows_per, reduction):
    g_train, g, counts, ids = _pool(rows_per=rows_per)
    A = g_train.T @ g_train
    factor = fisher.fisher_factor(A, n_rows=len(g_train), jitter=0.0)
    u = fisher.project(factor, g)
    exclude = ids[:5]
    got = selection.select_greedy([Term(u, counts, 1.0, reduction)], ids, 15, exclude, block=4)
    ref = _bruteforce_greedy(A, g, counts, ids, 15, reduction, exclude=set(exclude.tolist()))
    np.testing.assert_array_equal(got.indices, ref)
    assert not set(ids[got.indices]) & set(exclude.tolist())
    assert np.all(np.diff(got.scores) <= 1e-12)  # non-increasing as picks accumulate


def test_greedy_qs3_two_terms_equals_bruteforce():
    rng = np.random.default_rng(5)
    n, d = 30, 4
    g1_train, g1 = rng.normal(size=(8, d)), rng.normal(size=(n, d))
    counts2 = np.full(n, 6)
    g2_train, g2 = rng.normal(size=(20, d)), rng.normal(size=(6 * n, d))
    ids = np.arange(n)
    A1, A2 = g1_train.T @ g1_train, g2_train.T @ g2_train
    f1, f2 = fisher.fisher_factor(A1, n_rows=8), fisher.fisher_factor(A2, n_rows=20)
    terms = [Term(fisher.project(f1, g1), np.ones(n, int)), Term(fisher.project(f2, g2), counts2, 1.5)]
    got = selection.select_greedy(terms, ids, 8).indices
    picks = []
    off = fisher.offsets_from_counts(counts2)
    for _ in range(8):
        s1 = fisher.qs1_scores(fisher.fisher_factor(A1, n_rows=99), g1)[0]
        s2 = fisher.qs2_scores(fisher.fisher_factor(A2, n_rows=99), g2, counts2)[0]
        total = fisher.qs3_scores(s1, s2, 1.5)
        total[picks] = -1
        best = int(np.lexsort((ids, -total))[0])
        picks.append(best)
        A1 += np.outer(g1[best], g1[best])
        A2 += g2[off[best] : off[best + 1]].T @ g2[off[best] : off[best + 1]]
    np.testing.assert_array_equal(got, picks)


def test_permuted_pool_gives_same_picks():
    g_train, g, counts, ids = _pool(n=80, rows_per=3, seed=2)
    factor = fisher.factor_from_sensitivities(g_train)
    u = fisher.project(factor, g)
    off = fisher.offsets_from_counts(counts)
    perm = np.random.default_rng(9).permutation(len(ids))
    u_perm = np.concatenate([u[off[p] : off[p + 1]] for p in perm])
    scores = fisher.qs2_scores(factor, g, counts)[0]
    for method in ("greedy", "top", "random"):
        if method == "greedy":
            a = selection.select_greedy([Term(u, counts)], ids, 12)
            b = selection.select_greedy([Term(u_perm, counts[perm])], ids[perm], 12)
        elif method == "top":
            a = selection.select_top(scores, ids, 12)
            b = selection.select_top(scores[perm], ids[perm], 12)
        else:
            a = selection.select_random(ids, 12, seed=4)
            b = selection.select_random(ids[perm], 12, seed=4)
        np.testing.assert_array_equal(ids[a.indices], ids[perm][b.indices])


def test_greedy_beats_top_on_duplicated_pool():
    rng = np.random.default_rng(7)
    d = 8
    base = rng.normal(size=(20, d)) * rng.uniform(0.5, 3, size=(20, 1))
    g = np.concatenate([base] * 4)  # every structure four times
    ids = np.arange(len(g))
    factor = fisher.factor_from_sensitivities(rng.normal(size=(30, d)))
    u = fisher.project(factor, g)
    term = Term(u, np.ones(len(g), int))
    scores = fisher.qs1_scores(factor, g)[0]
    top = selection.select_top(scores, ids, 6)
    greedy = selection.select_greedy([term], ids, 6)
    assert len(set(ids[greedy.indices] % 20)) == 6  # no duplicate picked twice (m < d)
    assert len(set(ids[top.indices] % 20)) < 6
    assert selection.log_det_gain(term, greedy.indices) > selection.log_det_gain(term, top.indices)


def test_top_random_exclusion_and_m():
    ids = np.array([5, 3, 9, 1])
    scores = np.array([0.5, 0.9, 0.5, 0.1])
    top = selection.select_top(scores, ids, 2, exclude_ids=np.array([3]))
    np.testing.assert_array_equal(ids[top.indices], [5, 9])  # tie broken by smaller id
    r = selection.select_random(ids, 10, seed=0, exclude_ids=np.array([1]))
    assert sorted(ids[r.indices]) == [3, 5, 9]
    assert selection.n_to_select(None, 0.1, 1000) == 100
    assert selection.n_to_select(7, None, None) == 7


def test_greedy_large_random_is_consistent_with_small_blocks():
    rng = np.random.default_rng(11)
    u = rng.normal(size=(3000, 16)).astype(np.float32)
    ids = np.arange(3000)
    a = selection.select_greedy([Term(u, np.ones(3000, int))], ids, 60, block=1)
    b = selection.select_greedy([Term(u, np.ones(3000, int))], ids, 60, block=64)
    np.testing.assert_array_equal(a.indices, b.indices)


def test_greedy_stops_at_the_score_floor_with_the_same_first_picks():
    rng = np.random.default_rng(3)
    u = rng.normal(size=(400, 12)) * rng.uniform(0.2, 2.0, size=(400, 1))
    ids = np.arange(400)
    term = [Term(u, np.ones(400, int))]
    full = selection.select_greedy(term, ids, 40)
    assert np.all(np.diff(full.scores) <= 1e-12)  # scores given the earlier picks never rise
    floor = 0.5 * (full.scores[24] + full.scores[25])
    cut = selection.select_greedy(term, ids, 40, min_score=floor)
    np.testing.assert_array_equal(cut.indices, full.indices[:25])
    assert cut.scores.min() >= floor
