"""Batch selection from scored pools (DESIGN §6): top-m, greedy batch OED, random, QbC — pure NumPy.

Every method is deterministic for a given seed and independent of the pool's order: candidates
are handled in ascending ``id`` order internally and ties are broken by the smaller id.

Greedy batch OED works in whitened coordinates: with ``u = C⁻¹ g`` (``Ã = C Cᵀ``) the Fisher matrix
after adding picks x₁…x_k is ``C (I + Σ V_xᵀ V_x) Cᵀ`` (V_x: the pick's projected rows), so a
candidate's row variance becomes ``s = uᵀ P u`` with ``P = (I + Σ V_xᵀ V_x)⁻¹``. P shrinks in Loewner
order as picks accumulate, so every score (s/(1+s) per row, then the mean over components or the
per-atom maximum, then a non-negative weighted sum of terms) is non-increasing. Stale scores are
therefore upper bounds, and a lazy greedy — a max-heap of bounds whose top candidates are
re-evaluated in small vectorised blocks against the current P — returns exactly the picks of
rescoring the whole pool after every pick. After a pick, P is updated by Woodbury:
``P ← P − P Vᵀ (I_K + V P Vᵀ)⁻¹ V P`` (Sherman–Morrison for QS1, a K×K solve with K = 3·N_at for QS2).
"""

from __future__ import annotations

import logging
from typing import NamedTuple

import numpy as np

from oedal.errors import InputError
from oedal.oed.fisher import Reduction, offsets_from_counts, reduce_components, variance_change

log = logging.getLogger(__name__)


class Term(NamedTuple):
    """One additive part of the greedy objective: weight · reduce(s/(1+s) over the structure's rows)."""

    rows: np.ndarray  # (n_rows, d) projected sensitivities u = C⁻¹ g (float32 or float64)
    counts: np.ndarray  # (n,) rows per structure (1 for QS1, 3·N_at for QS2)
    weight: float = 1.0
    reduction: Reduction = "mean"


class Selection(NamedTuple):
    """Picked pool positions in picking order and their scores when picked."""

    indices: np.ndarray  # (m,) int64 positions in the pool arrays
    scores: np.ndarray  # (m,) float64 (greedy: the score given the earlier picks)


def n_to_select(n: int | None, fraction: float | None, n_train: int | None) -> int:
    """m = n, or round(fraction · N_train) (the paper: 0.1 · N_train), at least 1."""
    if n is not None:
        return int(n)
    if fraction is None or n_train is None:
        raise InputError("give --n, or --fraction with the training-set size (--n-train or scores attr n_train)")
    return max(1, int(round(fraction * n_train)))


def _eligible(ids: np.ndarray, exclude_ids: np.ndarray | None) -> np.ndarray:
    ids = np.asarray(ids, dtype=np.int64)
    if len(np.unique(ids)) != len(ids):
        raise InputError("pool ids are not unique")
    mask = np.ones(len(ids), dtype=bool)
    if exclude_ids is not None and len(exclude_ids):
        mask &= ~np.isin(ids, np.asarray(exclude_ids, dtype=np.int64))
    return mask


def _clip_m(m: int, n_eligible: int) -> int:
    if m > n_eligible:
        log.warning("asked for %d structures but only %d are eligible: selecting all of them", m, n_eligible)
    return min(m, n_eligible)


def select_top(scores: np.ndarray, ids: np.ndarray, m: int, exclude_ids: np.ndarray | None = None) -> Selection:
    """The m highest scores (section 2.3, eq. 15); ties broken by the smaller id."""
    scores = np.asarray(scores, dtype=np.float64)
    mask = _eligible(ids, exclude_ids)
    pos = np.flatnonzero(mask)
    order = np.lexsort((np.asarray(ids)[pos], -scores[pos]))
    picked = pos[order[: _clip_m(m, len(pos))]]
    return Selection(picked.astype(np.int64), scores[picked])


def select_random(ids: np.ndarray, m: int, seed: int, exclude_ids: np.ndarray | None = None) -> Selection:
    """A seeded uniform random draw without replacement (the baseline); independent of pool order."""
    ids = np.asarray(ids, dtype=np.int64)
    pos = np.flatnonzero(_eligible(ids, exclude_ids))
    pos = pos[np.argsort(ids[pos], kind="stable")]
    rng = np.random.default_rng(seed)
    picked = pos[rng.permutation(len(pos))[: _clip_m(m, len(pos))]]
    return Selection(picked.astype(np.int64), np.full(len(picked), np.nan))


def _mm(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """a @ b through torch, whose thread count select_greedy pins to 1: many small products per
    pick, where a multi-threaded BLAS spends more time synchronising than multiplying. (Only greedy
    gets here, after select_greedy imported torch; top, random and qbc never import it.)"""
    import torch

    return (torch.from_numpy(np.ascontiguousarray(a)) @ torch.from_numpy(np.ascontiguousarray(b))).numpy()


class _GreedyState:
    """Current P per term, and exact score evaluation of candidates against it.

    Besides P, every term keeps the Woodbury factors W_t (P_{t+1} = P_t − W_t W_tᵀ) as columns of
    Z and every row's s at the step its candidate was last evaluated, so a candidate evaluated a
    few picks ago is brought up to date by s ← s − Σ_t |W_tᵀ u|² (cost: d per column since then)
    instead of uᵀ P u (cost d²); whichever is cheaper is used per row.
    """

    def __init__(self, terms: list[Term], n: int, m: int):
        self.terms = terms
        self.offsets = [offsets_from_counts(np.asarray(t.counts, dtype=np.int64)) for t in terms]
        self.P = [np.eye(t.rows.shape[1]) for t in terms]  # (d, d) float64 each
        self.s_rows = [np.einsum("ij,ij->i", *(2 * [np.asarray(t.rows, dtype=np.float64)])) for t in terms]
        self.Z = [np.zeros((t.rows.shape[1], 0)) for t in terms]  # (d, n_cols) Woodbury columns
        self.n_cols = [0] * len(terms)
        self.col_start = [[0] for _ in terms]  # per step: first column added at or after that step
        self.stamp = np.zeros(n, dtype=np.int64)  # step at which s_rows of a candidate were exact
        self.step = 0

    def _row_index(self, k: int, cand: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        off = self.offsets[k]
        starts = off[cand]
        counts = off[cand + 1] - starts
        if np.all(counts == 1):
            return starts, counts
        return np.repeat(starts - offsets_from_counts(counts)[:-1], counts) + np.arange(counts.sum()), counts

    def evaluate(self, cand: np.ndarray) -> np.ndarray:
        """Exact current scores of candidates (pool positions) → (len(cand),) float64."""
        total = np.zeros(len(cand))
        for k, term in enumerate(self.terms):
            idx, counts = self._row_index(k, cand)
            row_start = np.asarray(self.col_start[k])[np.repeat(self.stamp[cand], counts)]
            gap = self.n_cols[k] - row_start
            d = term.rows.shape[1]
            incr = (gap > 0) & (gap <= d // 2)  # cost ≤ d²/2 per row: cheaper than uᵀPu
            full = gap > d // 2
            if incr.any():
                c0 = int(row_start[incr].min())
                r = np.asarray(term.rows[idx[incr]], dtype=np.float64)
                proj = _mm(r, self.Z[k][:, c0 : self.n_cols[k]]) ** 2  # (rows, cols)
                proj[np.arange(c0, self.n_cols[k])[None, :] < row_start[incr][:, None]] = 0.0
                self.s_rows[k][idx[incr]] -= proj.sum(axis=1)
            if full.any():
                r = np.asarray(term.rows[idx[full]], dtype=np.float64)
                self.s_rows[k][idx[full]] = np.einsum("ij,ij->i", _mm(r, self.P[k]), r)
            s = np.maximum(self.s_rows[k][idx], 0.0)
            total += term.weight * reduce_components(variance_change(s), counts, term.reduction)
        self.stamp[cand] = self.step
        return total

    def add(self, pos: int) -> None:
        """Woodbury update of every term's P with the picked structure's rows; next step."""
        for k in range(len(self.terms)):
            idx, _ = self._row_index(k, np.array([pos]))
            v = np.asarray(self.terms[k].rows[idx], dtype=np.float64)  # (K, d)
            if len(v):
                P = self.P[k]
                pv = P @ v.T  # (d, K)
                chol = np.linalg.cholesky(np.eye(len(v)) + v @ pv)  # (K, K)
                w = np.linalg.solve(chol, pv.T).T  # (d, K): P_new = P − W Wᵀ
                self.P[k] = P - w @ w.T
                if self.n_cols[k] + len(v) > self.Z[k].shape[1]:
                    grow = max(2 * self.Z[k].shape[1], self.n_cols[k] + len(v), 64)
                    z = np.zeros((self.Z[k].shape[0], grow))
                    z[:, : self.n_cols[k]] = self.Z[k][:, : self.n_cols[k]]
                    self.Z[k] = z
                self.Z[k][:, self.n_cols[k] : self.n_cols[k] + len(v)] = w
                self.n_cols[k] += len(v)
            self.col_start[k].append(self.n_cols[k])
        self.step += 1


def select_greedy(
    terms: list[Term],
    ids: np.ndarray,
    m: int,
    exclude_ids: np.ndarray | None = None,
    *,
    block: int = 64,
    chunk: int = 8192,
    refresh: float = 0.5,
    min_score: float | None = None,
) -> Selection:
    """Greedy batch OED: pick the best score, update the Fisher matrix (Woodbury), repeat — lazily.

    Exactly the picks of rescoring every candidate from scratch after each pick (up to rounding),
    ties broken by the smaller id. Candidates never re-evaluated since the start stay in a list
    sorted by their initial score (R); those pulled from it form the frontier F, whose stale upper
    bounds are refreshed in vectorised blocks until the best fresh score beats every other bound.
    ``min_score``: stop early (fewer than m picks) once the best remaining score, given the picks so
    far, falls below this floor.
    """
    import torch  # lazily (≈1.5 s): only greedy needs it, for _mm

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _select_greedy(terms, ids, m, exclude_ids, block, chunk, refresh, min_score)
    finally:
        torch.set_num_threads(threads)


class _LazyQueue:
    """The lazy greedy's candidates (canonical ranks c ↔ pool positions ``pos[c]``): R, never
    re-evaluated since the last full rescoring and sorted by that score (``order[r:]``, bounds
    ``init``), and the frontier F pulled from R, with bounds ``fb`` exact at step ``fstamp``."""

    def __init__(self, state: _GreedyState, pos: np.ndarray, chunk: int):
        self.state, self.pos, self.chunk = state, pos, chunk
        self.alive = np.ones(len(pos), dtype=bool)
        self.n_evals = 0
        self.rescore(0)

    def rescore(self, step: int) -> int:
        """Evaluate every live candidate against the current P (bounds tight again, F empty); returns how many."""
        self.last, self.since = step, 0  # step of the last full rescoring, lazy evaluations since then
        live = np.flatnonzero(self.alive)
        self.init = np.full(len(self.pos), -np.inf)
        for i in range(0, len(live), self.chunk):
            self.init[live[i : i + self.chunk]] = self.state.evaluate(self.pos[live[i : i + self.chunk]])
        self.order = live[np.lexsort((live, -self.init[live]))]  # by (score desc, id asc)
        self.r = 0
        self.F, self.fb, self.fstamp = np.zeros(0, dtype=np.int64), np.zeros(0), np.zeros(0, dtype=np.int64)
        return len(live)

    def best(self, step: int, block: int) -> int:
        """Index in F of the best candidate at ``step``: its score is exact and beats every other bound."""
        b = block
        while True:
            if len(self.F):
                mx = self.fb.max()
                tied = np.flatnonzero(self.fb == mx)
                j = int(tied[np.argmin(self.F[tied])])
            if self.r < len(self.order) and (not len(self.F) or (self.init[self.order[self.r]], -self.order[self.r])
                                             > (mx, -self.F[j])):
                take = self.order[self.r : self.r + b]  # R's best bound beats F: pull a block of R into F
                self.r += len(take)
                self.F, self.fb = np.concatenate([self.F, take]), np.concatenate([self.fb, self.init[take]])
                self.fstamp = np.concatenate([self.fstamp, np.full(len(take), self.last)])
                b *= 2
                continue
            if self.fstamp[j] == step:
                return j
            stale = self.fstamp != step
            fresh_max = self.fb[~stale].max() if (~stale).any() else -np.inf
            sel = np.flatnonzero(stale & (self.fb >= fresh_max))
            if len(sel) > b:
                sel = sel[np.argpartition(-self.fb[sel], b - 1)[:b]]
            b *= 2
            self.fb[sel] = self.state.evaluate(self.pos[self.F[sel]])
            self.fstamp[sel] = step
            self.n_evals += len(sel)
            self.since += len(sel)

    def take(self, j: int) -> tuple[int, float]:
        """Remove F[j] from the candidates: (its pool position, its score)."""
        pick, score = int(self.pos[self.F[j]]), float(self.fb[j])
        self.alive[self.F[j]] = False
        self.F, self.fb, self.fstamp = np.delete(self.F, j), np.delete(self.fb, j), np.delete(self.fstamp, j)
        return pick, score


def _select_greedy(terms, ids, m, exclude_ids, block, chunk, refresh, min_score) -> Selection:
    ids = np.asarray(ids, dtype=np.int64)
    n = len(ids)
    for t in terms:
        if len(t.counts) != n or int(np.sum(t.counts)) != len(t.rows):
            raise InputError("greedy: sensitivity rows/counts do not match the pool size")
    pos = np.flatnonzero(_eligible(ids, exclude_ids))
    pos = pos[np.argsort(ids[pos], kind="stable")]  # canonical order: rank c ↔ id order, so ties → smaller c
    m = _clip_m(m, len(pos))
    state = _GreedyState(terms, n, m)
    queue = _LazyQueue(state, pos, chunk)
    picks: list[int] = []
    pick_scores: list[float] = []
    for step in range(m):
        if refresh and step > queue.last and queue.since > refresh * (len(pos) - step):
            queue.n_evals += queue.rescore(step)  # the lazy re-evaluations piled up
        j = queue.best(step, block)
        if min_score is not None and queue.fb[j] < min_score:
            log.info("greedy: the best remaining score %.4g is below the floor %.4g: %d picks, not %d",
                     queue.fb[j], min_score, step, m)
            break
        pick, score = queue.take(j)
        picks.append(pick)
        pick_scores.append(score)
        state.add(pick)
    log.info("greedy: %d picks from %d candidates, %d re-evaluations", len(picks), len(pos), queue.n_evals)
    return Selection(np.array(picks, dtype=np.int64), np.array(pick_scores, dtype=np.float64))


def log_det_gain(term: Term, picked: np.ndarray) -> float:
    """log det(I + Σ_picked V_xᵀ V_x) = log det Ã_new − log det Ã (D-optimality of a batch)."""
    off = offsets_from_counts(np.asarray(term.counts, dtype=np.int64))
    d = term.rows.shape[1]
    a = np.eye(d)
    for p in np.asarray(picked, dtype=np.int64):
        v = np.asarray(term.rows[off[p] : off[p + 1]], dtype=np.float64)
        a += v.T @ v
    return float(np.linalg.slogdet(a)[1])
