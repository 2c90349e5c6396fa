"""Score a pool against a training set and write SCORES.h5 (docs/file-formats.md, "Scores file").

The training set is read whole (it is small); the pool is streamed in chunks of
``ScoreSettings.chunk_size`` structures, so memory stays bounded however large the pool. Output is
written to a temporary file beside the destination and renamed when complete.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple, Sequence

import h5py
import numpy as np

from oedal.oed import fisher
from oedal.data.store import StoreReader, read_store
from oedal.errors import InputError
from oedal.files import atomic_path
from oedal.progress import progress_bar
from oedal.settings import ScoreSettings

if TYPE_CHECKING:  # torch-backed modules are imported where scoring needs them: `select` stays NumPy-only
    from oedal.gmnn.model import GMNN

log = logging.getLogger(__name__)
SCORES_FORMAT = "oedal-scores"
SCORES_FORMAT_VERSION = 1


class ScoreSummary(NamedTuple):
    path: Path
    strategy: str
    n_pool: int
    n_train: int
    threshold: float
    n_informative: int  # pool structures with I > 1


class _OedScorer:
    """Fisher factors from the training set; scores (and projected rows) for any structures."""

    def __init__(self, model: GMNN, train, settings: ScoreSettings):
        from oedal.oed.sensitivities import all_sensitivities

        self.model, self.s = model, settings
        self.need_e = settings.strategy in ("qs1", "qs3")
        self.need_f = settings.strategy in ("qs2", "qs3")
        g_e, g_f = all_sensitivities(model, train, forces=self.need_f)
        self.g_train = g_e
        self.f_e = fisher.factor_from_sensitivities(g_e, settings.jitter) if self.need_e else None
        self.f_f = fisher.factor_from_sensitivities(g_f, settings.jitter) if self.need_f else None
        self.train_scores = self._scores(g_e, g_f, np.asarray(train.n_atoms))["score"]

    def _scores(self, g_e: np.ndarray, g_f: np.ndarray | None, n_atoms: np.ndarray) -> dict[str, np.ndarray]:
        out: dict[str, np.ndarray] = {}
        if self.need_e:
            out["score_qs1"], out["u_energy"] = fisher.qs1_scores(self.f_e, g_e)
        if self.need_f:
            out["score_qs2"], out["u_forces"] = fisher.qs2_scores(self.f_f, g_f, 3 * n_atoms, self.s.qs2_reduction,
                                                               overwrite=True)  # g_f is not used again
        if self.s.strategy == "qs1":
            out["score"] = out["score_qs1"]
        elif self.s.strategy == "qs2":
            out["score"] = out["score_qs2"]
        else:
            out["score"] = fisher.qs3_scores(out["score_qs1"], out["score_qs2"], self.s.beta)
        return out

    def chunk(self, structures) -> dict[str, np.ndarray]:
        from oedal.oed.sensitivities import all_sensitivities

        g_e, g_f = all_sensitivities(self.model, structures, forces=self.need_f)
        out = self._scores(g_e, g_f, np.asarray(structures.n_atoms))
        out["g_pool"] = g_e
        return out


class _QbcScorer:
    """Committee spread of the total energy (eq. 24) and of the forces, K ≥ 2 models."""

    def __init__(self, models: Sequence[GMNN], train, settings: ScoreSettings):
        if len(models) < 2:
            raise InputError(f"strategy qbc needs at least 2 models (--model ... --model ...), got {len(models)}")
        self.models = models
        self.train_scores = self.chunk(train)["score"]

    def chunk(self, structures) -> dict[str, np.ndarray]:
        from oedal.gmnn.evaluation import predict

        preds = [predict(m, structures, batch_size=512) for m in self.models]
        energy = np.stack([p.energy for p in preds])  # (K, n) eV
        forces = np.stack([p.forces for p in preds])  # (K, n_atoms_total, 3) eV/Å
        e_std = fisher.committee_spread(energy)
        return {"score": e_std, "energy_std": e_std, "force_std": fisher.force_spread(forces, structures.n_atoms)}


def _dataset(h5: h5py.File, name: str, shape: tuple[int, ...], dtype) -> h5py.Dataset:
    chunks = (max(1, min(shape[0], 16384)),) + shape[1:] if shape[0] else None
    return h5.create_dataset(name, shape=shape, dtype=dtype, chunks=chunks)


def score_pool(
    model_paths: Sequence[str | Path],
    train_path: str | Path,
    pool_path: str | Path,
    out_path: str | Path,
    settings: ScoreSettings | None = None,
    *,
    save_sensitivities: bool = False,
) -> ScoreSummary:
    """Score every pool structure (strategy qs1 | qs2 | qs3 | qbc) and write SCORES.h5 atomically."""
    from oedal.device import resolve_device
    from oedal.gmnn.model import load_model

    settings = settings or ScoreSettings()
    if not model_paths:
        raise InputError("score: give at least one --model")
    device = resolve_device(settings.device)
    models = [load_model(p, device=device) for p in model_paths]
    for m in models:
        m.eval()
    train = read_store(train_path)
    if len(train) == 0:
        raise InputError(f"{train_path}: the training set is empty")
    if settings.strategy == "qbc":
        scorer: _OedScorer | _QbcScorer = _QbcScorer(models, train, settings)
    else:
        if len(models) > 1:
            log.warning("strategy %s uses the first model only (%s)", settings.strategy, model_paths[0])
        scorer = _OedScorer(models[0], train, settings)
    sigma_th = fisher.threshold(scorer.train_scores, settings.threshold)
    log.info("%s: %d training structures, threshold (%s) %.6g", settings.strategy, len(train), settings.threshold, sigma_th)

    out_path = Path(out_path)
    with atomic_path(out_path) as tmp, StoreReader(pool_path) as reader, h5py.File(tmp, "w") as h5:
        n_pool, d = len(reader), models[0].d
        n_atoms = np.asarray(reader.n_atoms, dtype=np.int64)
        attrs = {
            "format": SCORES_FORMAT, "format_version": SCORES_FORMAT_VERSION, "strategy": settings.strategy,
            "threshold": sigma_th, "threshold_kind": settings.threshold, "n_train": len(train), "n_pool": n_pool,
            "d": d, "beta": settings.beta, "qs2_reduction": settings.qs2_reduction, "jitter": settings.jitter,
            "models": json.dumps([str(p) for p in model_paths]), "model": str(model_paths[0]),
            "train": str(train_path), "pool": str(pool_path), "settings": settings.model_dump_json(),
        }
        for k, v in attrs.items():
            h5.attrs[k] = v
        h5.create_dataset("train_id", data=np.asarray(train.ids, dtype=np.int64))
        h5.create_dataset("train_score", data=scorer.train_scores)
        h5.create_dataset("n_atoms", data=n_atoms)
        ds = {name: _dataset(h5, name, (n_pool,), np.float64) for name in ("score", "informativeness")}
        ds["id"] = _dataset(h5, "id", (n_pool,), np.int64)
        if isinstance(scorer, _OedScorer):
            for name in (["score_qs1"] if scorer.need_e else []) + (["score_qs2"] if scorer.need_f else []):
                ds[name] = _dataset(h5, name, (n_pool,), np.float64)
            if scorer.need_e and settings.projections:
                ds["u_energy"] = _dataset(h5, "u_energy", (n_pool, d), np.float32)
            if scorer.need_f and settings.projections:
                ds["u_forces"] = _dataset(h5, "u_forces", (3 * int(n_atoms.sum()), d), np.float32)
                h5.create_dataset("u_forces_counts", data=3 * n_atoms)
            if save_sensitivities:
                h5.create_dataset("g_train", data=scorer.g_train)
                ds["g_pool"] = _dataset(h5, "g_pool", (n_pool, d), np.float64)
        else:
            for name in ("energy_std", "force_std"):
                ds[name] = _dataset(h5, name, (n_pool,), np.float64)
        bar = progress_bar(total=n_pool, desc=f"score {settings.strategy}", unit="structure")
        start, row = 0, 0
        for chunk in reader.iter_chunks(settings.chunk_size):
            res = scorer.chunk(chunk)
            stop = start + len(chunk)
            res["id"] = np.asarray(chunk.ids, dtype=np.int64)
            res["informativeness"] = fisher.informativeness(res["score"], sigma_th)
            for name, dset in ds.items():
                if name == "u_forces":
                    rows = res[name]
                    dset[row : row + len(rows)] = rows
                else:
                    dset[start:stop] = res[name]
            row += 3 * int(np.sum(chunk.n_atoms))
            start = stop
            bar.update(len(chunk))
            log.debug("scored %d / %d pool structures", stop, n_pool)
        bar.close()
        n_inf = int(np.sum(h5["informativeness"][:] > 1.0))
    log.info("wrote %s: %d pool structures, %d with I > 1", out_path, n_pool, n_inf)
    return ScoreSummary(out_path, settings.strategy, n_pool, len(train), sigma_th, n_inf)


def read_scores(path: str | Path) -> dict:
    """All datasets (numpy) and attributes (``attrs``) of a scores file."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"scores file {path} does not exist")
    try:
        with h5py.File(path, "r") as h5:
            if h5.attrs.get("format") != SCORES_FORMAT:
                raise InputError(f"{path}: not an oedal scores file")
            out = {k: h5[k][()] for k in h5.keys()}
            out["attrs"] = dict(h5.attrs)
    except OSError as err:
        raise InputError(f"{path}: not a readable HDF5 scores file ({err})") from None
    return out


class SelectSummary(NamedTuple):
    path: Path
    method: str
    ids: np.ndarray  # (m,) picked ids in picking order
    scores: np.ndarray  # (m,) scores when picked (NaN for random)


def _excluded_ids(scores: dict, exclude: Sequence[str | Path]) -> np.ndarray:
    parts = [np.asarray(scores.get("train_id", np.zeros(0)), dtype=np.int64)]
    for path in exclude:
        with StoreReader(path) as reader:
            parts.append(np.asarray(reader.ids, dtype=np.int64))
    return np.concatenate(parts)


def _greedy_terms(scores: dict, path: Path) -> list:
    from oedal.oed.selection import Term

    strategy, attrs = scores["attrs"]["strategy"], scores["attrs"]
    terms = []
    if strategy in ("qs1", "qs3"):
        if "u_energy" not in scores:
            raise InputError(f"{path}: greedy needs dataset u_energy (scored with projections off?)")
        terms.append(Term(scores["u_energy"], np.ones(len(scores["id"]), dtype=np.int64)))
    if strategy in ("qs2", "qs3"):
        if "u_forces" not in scores:
            raise InputError(f"{path}: greedy needs datasets u_forces and u_forces_counts (scored with projections off?)")
        weight = float(attrs["beta"]) if strategy == "qs3" else 1.0
        terms.append(Term(scores["u_forces"], scores["u_forces_counts"], weight, str(attrs["qs2_reduction"])))
    if not terms:
        raise InputError(f"{path}: greedy selection needs an OED strategy (qs1|qs2|qs3), this file is {strategy}")
    return terms


def _select_random_unscored(pool_path, out_path, settings, *, n_train, exclude) -> SelectSummary:
    """Method random without a scores file: ids from the pool store, exclusions from ``exclude``."""
    from oedal.oed import selection
    from oedal.data.store import write_store

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


def select_batch(
    scores_path: str | Path | None,
    pool_path: str | Path,
    out_path: str | Path,
    settings,
    *,
    n_train: int | None = None,
    exclude: Sequence[str | Path] = (),
) -> SelectSummary:
    """Pick m pool structures (top | greedy | random | qbc) and write them, unlabeled, to ``out_path``.

    ``scores_path`` may be None for method random only: the pool ids then come from ``pool_path``,
    the ids never picked only from the ``exclude`` stores (give the training set there), and N_train
    for the fraction rule from ``n_train``."""
    from oedal.oed import selection
    from oedal.data.store import write_store

    if scores_path is None:
        if settings.method != "random":
            raise InputError(f"select: method {settings.method} needs a scores file (--scores); only random does without")
        return _select_random_unscored(pool_path, out_path, settings, n_train=n_train, exclude=exclude)
    scores_path = Path(scores_path)
    sc = read_scores(scores_path)
    attrs = sc["attrs"]
    n_train = n_train if n_train is not None else int(attrs["n_train"])
    m = selection.n_to_select(settings.n, settings.fraction, n_train)
    ids = np.asarray(sc["id"], dtype=np.int64)
    excluded = _excluded_ids(sc, exclude)
    if settings.method == "qbc" and attrs["strategy"] != "qbc":
        raise InputError(f"{scores_path}: method qbc needs a scores file of strategy qbc (this is {attrs['strategy']})")
    if settings.method in ("top", "qbc"):
        sel = selection.select_top(sc["score"], ids, m, excluded)
    elif settings.method == "random":
        sel = selection.select_random(ids, m, settings.seed, excluded)
    else:
        sel = selection.select_greedy(_greedy_terms(sc, scores_path), ids, m, excluded)
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
        "selected_informativeness": [float(x) for x in sc["informativeness"][sel.indices]],
    })
    log.info("selected %d structures (%s) → %s", len(picked_ids), settings.method, out_path)
    return SelectSummary(Path(out_path), settings.method, picked_ids, sel.scores)
