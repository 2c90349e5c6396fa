"""Select a batch from a scored pool and write it, unlabeled, to a store (the step `oedal select`).

The maths is in :mod:`oedal.oed.selection` (pure NumPy); this module reads the scores file and the
pool, applies the method (top | greedy | random | qbc) and writes SELECTED.h5 with the picks'
ids, scores and informativeness as attributes. ``oedal select`` with top, random or qbc imports
no torch; greedy imports it lazily for its matrix products.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import NamedTuple, Sequence

import numpy as np

from oedal.data.store import StoreReader, write_store
from oedal.data import keys
from oedal.errors import InputError
from oedal.oed import selection
from oedal.oed.scorers import scorer_of
from oedal.oed.scoring import read_scores
from oedal.settings import SelectSettings

log = logging.getLogger(__name__)


class SelectSummary(NamedTuple):
    path: Path
    method: str
    ids: np.ndarray  # (m,) picked ids in picking order
    scores: np.ndarray  # (m,) scores when picked (NaN for random)


def _excluded_ids(scores: dict, exclude: Sequence[str | Path]) -> np.ndarray:
    parts = [np.asarray(scores.get(keys.TRAIN_ID, np.zeros(0)), dtype=np.int64)]
    for path in exclude:
        with StoreReader(path) as reader:
            parts.append(np.asarray(reader.ids, dtype=np.int64))
    return np.concatenate(parts)


def _select_random_unscored(pool_path, out_path, settings: SelectSettings, *, n_train, exclude) -> SelectSummary:
    """Method random without a scores file: ids from the pool store, exclusions from ``exclude``."""
    if settings.n is None and n_train is None:
        raise InputError("select: random without --scores needs --n, or --fraction with --n-train")
    m = selection.n_to_select(settings.n, settings.fraction, n_train)
    excluded = _excluded_ids({}, exclude)
    with StoreReader(pool_path) as reader:
        ids = np.asarray(reader.ids, dtype=np.int64)
        sel = selection.select_random(ids, m, settings.seed, excluded)
        picked = reader.read(sel.indices).without_labels()
    picked_ids = ids[sel.indices]
    write_store(out_path, picked, attrs={
        "selection_method": settings.method, "selection_seed": settings.seed,
        "selected_ids": picked_ids.tolist(), "selected_scores": [float(x) for x in sel.scores],
        "selected_informativeness": [float("nan")] * len(picked_ids),
    })
    log.info("selected %d structures (random, unscored) → %s", len(picked_ids), out_path)
    return SelectSummary(Path(out_path), settings.method, picked_ids, sel.scores)


def _pick(sc: dict, scores_path: Path, settings: SelectSettings, m: int, excluded: np.ndarray) -> selection.Selection:
    """The method's picks among the scored pool structures."""
    ids = np.asarray(sc[keys.ID], dtype=np.int64)
    kind = str(sc["attrs"]["strategy"])
    if settings.method == "qbc" and kind != "qbc":
        raise InputError(f"{scores_path}: method qbc needs a scores file of strategy qbc (this is {kind})")
    if settings.method in ("top", "qbc"):
        return selection.select_top(sc[keys.SCORE], ids, m, excluded)
    if settings.method == "random":
        return selection.select_random(ids, m, settings.seed, excluded)
    return selection.select_greedy(scorer_of(kind).greedy_terms(sc, str(scores_path)), ids, m, excluded)


def select_batch(
    scores_path: str | Path | None,
    pool_path: str | Path,
    out_path: str | Path,
    settings: SelectSettings,
    *,
    n_train: int | None = None,
    exclude: Sequence[str | Path] = (),
) -> SelectSummary:
    """Pick m pool structures (top | greedy | random | qbc) and write them, unlabeled, to ``out_path``.

    ``scores_path`` may be None for method random only: the pool ids then come from ``pool_path``,
    the ids never picked only from the ``exclude`` stores (give the training set there), and N_train
    for the fraction rule from ``n_train``."""
    if scores_path is None:
        if settings.method != "random":
            raise InputError(f"select: method {settings.method} needs a scores file (--scores); only random does without")
        return _select_random_unscored(pool_path, out_path, settings, n_train=n_train, exclude=exclude)
    scores_path = Path(scores_path)
    sc = read_scores(scores_path)
    attrs = sc["attrs"]
    n_train = n_train if n_train is not None else int(attrs["n_train"])
    m = selection.n_to_select(settings.n, settings.fraction, n_train)
    ids = np.asarray(sc[keys.ID], dtype=np.int64)
    sel = _pick(sc, scores_path, settings, m, _excluded_ids(sc, exclude))
    with StoreReader(pool_path) as reader:
        pool_ids = np.asarray(reader.ids, dtype=np.int64)
        if len(pool_ids) != len(ids) or not np.array_equal(pool_ids, ids):
            raise InputError(f"{pool_path}: pool ids differ from those in {scores_path} (scored another pool?)")
        picked = reader.read(sel.indices).without_labels()
    picked_ids = ids[sel.indices]
    write_store(out_path, picked, attrs={
        "selection_method": settings.method, "selection_seed": settings.seed, "scores": str(scores_path),
        "strategy": str(attrs["strategy"]), "threshold": float(attrs["threshold"]),
        "selected_ids": picked_ids.tolist(), "selected_scores": [float(x) for x in sel.scores],
        "selected_informativeness": [float(x) for x in sc[keys.INFORMATIVENESS][sel.indices]],
    })
    log.info("selected %d structures (%s) → %s", len(picked_ids), settings.method, out_path)
    return SelectSummary(Path(out_path), settings.method, picked_ids, sel.scores)
