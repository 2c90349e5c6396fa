"""What each strategy picked (DESIGN §11; the paper's Figs. 7 and 10): the classes and sizes of the structures
every iteration selected (its request.json against its pool.h5), and how informative the picks were under
both thresholds of section 3.3 (σ_th = median or mean of the training structures' scores, from scores.h5).

Reads a run's iteration folders as they are: an iteration without request.json (the last one, or one in
progress) or without scores.h5 (random) is left out.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, NamedTuple, Sequence

import numpy as np

from oedal.campaign.tree import REQUEST, iterations
from oedal.errors import InputError
from oedal.report.runs import Run

POOL, SCORES = "pool.h5", "scores.h5"
THRESHOLD_KINDS = ("median", "mean")


class Picks(NamedTuple):
    """The picks of one iteration of one run, by class, and the pool they were picked from."""

    strategy: str
    seed: int
    iteration: int
    counts: dict[str, int]  # class → picked structures ("" = without a class)
    mean_n_atoms: float  # atoms per picked structure, mean (NaN: nothing picked)
    pool_counts: dict[str, int]  # class → structures in the iteration's pool
    pool_mean_n_atoms: float  # atoms per pool structure, mean

    @property
    def n_picked(self) -> int:
        return sum(self.counts.values())


class PickedInformativeness(NamedTuple):
    """How informative one iteration's picks were under one threshold (section 3.3, the paper's Fig. 10)."""

    strategy: str
    seed: int
    iteration: int
    kind: str  # median | mean: σ_th over the training structures' scores
    sigma_th: float  # in score units
    used: bool  # the threshold the campaign itself used (scores.h5 attribute threshold_kind)
    n_picked: int
    share_informative: float  # picks with I = score/σ_th > 1, over the picks (NaN: nothing picked)
    mean_informativeness: float  # mean I over the picks (NaN: nothing picked)
    pool_share_informative: float  # pool structures with I > 1, over the pool


def class_counts(classes: np.ndarray) -> dict[str, int]:
    """{class: structures} of (n,) class names, sorted by class."""
    names, counts = np.unique(np.asarray(classes, dtype=str), return_counts=True)
    return {str(n): int(c) for n, c in zip(names, counts)}


def rows_of_ids(ids: np.ndarray, wanted: Sequence[int], where: str | Path) -> np.ndarray:
    """(k,) row of each of ``wanted`` in (n,) ``ids``; an id not there is an error naming ``where``."""
    row = {int(i): k for k, i in enumerate(ids)}
    missing = [int(i) for i in wanted if int(i) not in row]
    if missing:
        raise InputError(f"{where}: {len(missing)} picked id(s) not in it, e.g. {missing[:5]}")
    return np.array([row[int(i)] for i in wanted], dtype=np.int64)


def selected_ids(iteration_dir: Path) -> list[int]:
    """The pool ids an iteration picked, in picking order (request.json)."""
    from oedal.campaign.records import Request

    return list(Request.read(iteration_dir / REQUEST).selected_ids)


def iteration_picks(run: Run, i: int) -> Picks:
    """The picks of iteration ``i`` of ``run`` by class, from its request.json and pool.h5."""
    from oedal.data.store import StoreReader

    picked = selected_ids(run.iter_dir(i))
    with StoreReader(run.iter_dir(i) / POOL) as pool:
        classes, n_atoms = pool.class_names(), pool.n_atoms  # (n,) str, (n,) int
        rows = rows_of_ids(pool.ids, picked, pool.path)
    return Picks(run.strategy, run.seed, i, class_counts(classes[rows]),
                 float(n_atoms[rows].mean()) if len(rows) else float("nan"),
                 class_counts(classes), float(n_atoms.mean()) if len(n_atoms) else float("nan"))


def _with(run: Run, *names: str) -> list[int]:
    """The iterations of ``run`` whose folder holds every file of ``names``."""
    return [i for i in iterations(run.path) if all((run.iter_dir(i) / n).is_file() for n in names)]


def picks_by_class(runs: Iterable[Run]) -> list[Picks]:
    """Per run and iteration that picked (request.json beside pool.h5): its picks by class and their size."""
    return [iteration_picks(run, i) for run in runs for i in _with(run, REQUEST, POOL)]


def picked_informativeness(scores: np.ndarray, train_scores: np.ndarray, rows: np.ndarray,
                           kind: str) -> tuple[float, float, float, float]:
    """σ_th (``kind``: median or mean of ``train_scores`` (n_train,)), then, with I = score/σ_th, the share of the
    picks (``rows`` (k,) of the pool's ``scores`` (n,)) with I > 1, their mean I and the pool's share with I > 1."""
    from oedal.oed.fisher import informativeness, threshold

    sigma = threshold(train_scores, kind)  # type: ignore[arg-type]
    info = informativeness(scores, sigma)  # (n,)
    mine = info[rows]  # (k,)
    nan = float("nan")
    return (sigma, float(np.mean(mine > 1.0)) if len(mine) else nan, float(np.mean(mine)) if len(mine) else nan,
            float(np.mean(info > 1.0)) if len(info) else nan)


def read_score_vectors(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, str]:
    """From a scores file: the pool's scores (n,) and ids (n,), the training scores (n_train,) and the threshold
    kind the campaign used; nothing else is read (the sensitivities of a large pool run to gigabytes)."""
    import h5py

    from oedal.data import keys
    from oedal.oed.scoring import SCORES_FORMAT

    try:
        with h5py.File(path, "r") as h5:
            if h5.attrs.get("format") != SCORES_FORMAT:
                raise InputError(f"{path}: not an oedal scores file")
            return (np.asarray(h5[keys.SCORE][()], np.float64), np.asarray(h5[keys.ID][()], np.int64),
                    np.asarray(h5[keys.TRAIN_SCORE][()], np.float64), str(h5.attrs.get("threshold_kind", "")))
    except (OSError, KeyError) as err:
        raise InputError(f"{path}: not a readable scores file ({err})") from None


def iteration_informativeness(run: Run, i: int) -> list[PickedInformativeness]:
    """Both thresholds' view of what iteration ``i`` of ``run`` picked (its scores.h5 and request.json)."""
    path = run.iter_dir(i) / SCORES
    scores, ids, train, used = read_score_vectors(path)  # (n,), (n,), (n_train,)
    picked = selected_ids(run.iter_dir(i))
    rows = rows_of_ids(ids, picked, path)
    out = []
    for kind in THRESHOLD_KINDS:
        sigma, share, mean, pool = picked_informativeness(scores, train, rows, kind)
        out.append(PickedInformativeness(run.strategy, run.seed, i, kind, sigma, kind == used, len(picked),
                                         share, mean, pool))
    return out


def threshold_study(runs: Iterable[Run]) -> list[PickedInformativeness]:
    """Per run with scores, iteration that picked and threshold kind (median, mean): how informative its picks
    were (scores before any greedy update: the iteration's scores.h5)."""
    return [row for run in runs for i in _with(run, REQUEST, SCORES) for row in iteration_informativeness(run, i)]


def share_rows(picks: Sequence[Picks]) -> tuple[list[str], list[dict]]:
    """Every class found (sorted) and, per Picks, a flat row: strategy, seed, iteration, n_picked, mean_n_atoms,
    pool_mean_n_atoms, ``share_{class}`` (picks of the class over the picks; 0 where none, NaN with no pick)
    and ``pool_share_{class}`` (the same over the pool)."""
    classes = sorted({c for p in picks for c in (*p.counts, *p.pool_counts)})
    out = []
    for p in picks:
        n_pool = sum(p.pool_counts.values())
        row = {"strategy": p.strategy, "seed": p.seed, "iteration": p.iteration, "n_picked": p.n_picked,
               "mean_n_atoms": p.mean_n_atoms, "pool_mean_n_atoms": p.pool_mean_n_atoms}
        for c in classes:
            row[f"share_{c}"] = p.counts.get(c, 0) / p.n_picked if p.n_picked else float("nan")
            row[f"pool_share_{c}"] = p.pool_counts.get(c, 0) / n_pool if n_pool else float("nan")
        out.append(row)
    return classes, out
