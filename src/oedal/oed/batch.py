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
from oedal.data.identity import id_clashes
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


class _Known(NamedTuple):
    """Structures that may not be picked again (the training set, an ``exclude`` store)."""

    name: str  # for messages: the file
    ids: np.ndarray  # (k,) int64
    hashes: np.ndarray | None  # (k,) S64 content hashes; None: a scores file of an older release (ids only)


def _known_sets(scores: dict, scores_path: Path | None, exclude: Sequence[str | Path]) -> list[_Known]:
    known = []
    if keys.TRAIN_ID in scores:
        name = f"the training set {scores['attrs'].get('train', '')} of {scores_path}"
        known.append(_Known(name, np.asarray(scores[keys.TRAIN_ID], dtype=np.int64), scores.get(keys.TRAIN_HASH)))
    for path in exclude:
        with StoreReader(path) as reader:
            known.append(_Known(str(path), np.asarray(reader.ids, dtype=np.int64), reader.hashes))
    return known


def _excluded_ids(pool_ids: np.ndarray, pool_hashes: np.ndarray, pool_path, known: list[_Known]) -> np.ndarray:
    """Ids of the pool structures that may not be picked: those whose content is in a known set. Ids are
    row numbers of each imported file, so an id shared with another file names nothing: it is only
    compared where a scores file of an older release holds no hashes (with a warning)."""
    excluded = np.zeros(len(pool_ids), dtype=bool)
    for k in known:
        if k.hashes is None:
            log.warning("%s holds no content hashes (written by an older oedal): excluding by id; rescore to "
                        "exclude by content", k.name)
            excluded |= np.isin(pool_ids, k.ids)
            continue
        excluded |= np.isin(pool_hashes, k.hashes)
        clash = id_clashes(pool_ids, pool_hashes, k.ids, k.hashes)
        if len(clash):
            log.warning("%s and %s use %d id(s) (e.g. %s) for different structures (ids are row numbers of each "
                        "imported file): selection goes by content; give the files distinct ids before merging "
                        "them", pool_path, k.name, len(clash), ", ".join(str(int(i)) for i in clash[:3]))
    return np.asarray(pool_ids, dtype=np.int64)[excluded]


def _select_random_unscored(pool_path, out_path, settings: SelectSettings, *, n_train, exclude) -> SelectSummary:
    """Method random without a scores file: ids from the pool store, exclusions from ``exclude``."""
    if settings.n is None and n_train is None:
        raise InputError("select: random without --scores needs --n, or --fraction with --n-train")
    m = selection.n_to_select(settings.n, settings.fraction, n_train)
    with StoreReader(pool_path) as reader:
        ids = np.asarray(reader.ids, dtype=np.int64)
        excluded = _excluded_ids(ids, reader.hashes, pool_path, _known_sets({}, None, exclude))
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
    floor = None if settings.min_informativeness is None else settings.min_informativeness * float(sc["attrs"]["threshold"])
    return selection.select_greedy(scorer_of(kind).greedy_terms(sc, str(scores_path)), ids, m, excluded,
                                   min_score=floor)


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
    with StoreReader(pool_path) as reader:
        pool_ids = np.asarray(reader.ids, dtype=np.int64)
        if len(pool_ids) != len(ids) or not np.array_equal(pool_ids, ids):
            raise InputError(f"{pool_path}: pool ids differ from those in {scores_path} (scored another pool?)")
        excluded = _excluded_ids(ids, reader.hashes, pool_path, _known_sets(sc, scores_path, exclude))
        sel = _pick(sc, scores_path, settings, m, excluded)
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
