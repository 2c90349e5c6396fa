"""Score a pool against a training set and write SCORES.h5 (docs/file-formats.md, "Scores file").

The training set is read whole (it is small); the pool is streamed in chunks of ``chunk_size``
structures, so memory stays bounded however large the pool. What is computed is the registered
Scorer's business (oedal.oed.scorers); this module declares the file and streams the pool through
it. Output is written to a temporary file beside the destination and renamed when complete.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple, Sequence

import h5py
import numpy as np

from oedal.data.store import StoreReader, read_store
from oedal.data import keys
from oedal.data.identity import content_hashes
from oedal.errors import InputError
from oedal.files import atomic_path
from oedal.oed import fisher
from oedal.oed.scorers import ROW_DATASETS, QS1Settings, Scorer, ScoreSettings, scorer_of
from oedal.progress import progress_bar

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


def _dataset(h5: h5py.File, name: str, shape: tuple[int, ...], dtype) -> h5py.Dataset:
    chunks = (max(1, min(shape[0], 16384)),) + shape[1:] if shape[0] else None
    return h5.create_dataset(name, shape=shape, dtype=dtype, chunks=chunks)


def _load_models(model_paths: Sequence[str | Path], device: str) -> list[GMNN]:
    from oedal.device import resolve_device
    from oedal.gmnn.model import load_model

    if not model_paths:
        raise InputError("score: give at least one --model")
    dev = resolve_device(device)
    models = [load_model(p, device=dev) for p in model_paths]
    for m in models:
        m.eval()
    return models


def score_pool(
    model_paths: Sequence[str | Path],
    train_path: str | Path,
    pool_path: str | Path,
    out_path: str | Path,
    settings: ScoreSettings | None = None,
    *,
    save_sensitivities: bool = False,
) -> ScoreSummary:
    """Score every pool structure with the score ``settings.kind`` names and write SCORES.h5 atomically."""
    settings = settings or QS1Settings()
    models = _load_models(model_paths, settings.device)
    train = read_store(train_path)
    if len(train) == 0:
        raise InputError(f"{train_path}: the training set is empty")
    scorer_cls = scorer_of(settings.kind)
    _check_force_labels(scorer_cls, train, train_path)
    scorer = scorer_cls(models, train, settings, save_sensitivities=save_sensitivities)
    sigma_th = fisher.threshold(scorer.train_scores, settings.threshold)
    log.info("%s: %d training structures, threshold (%s) %.6g", settings.kind, len(train), settings.threshold, sigma_th)
    out_path = Path(out_path)
    with atomic_path(out_path) as tmp, StoreReader(pool_path) as reader, h5py.File(tmp, "w") as h5:
        attrs = {"threshold": sigma_th, "d": models[0].d, "models": json.dumps([str(p) for p in model_paths]),
                 "model": str(model_paths[0]), "train": str(train_path), "pool": str(pool_path)}
        datasets = declare_scores(h5, scorer, settings, train, np.asarray(reader.n_atoms, dtype=np.int64), attrs)
        n_inf = stream_scores(reader, scorer, datasets, sigma_th, settings)
        n_pool = len(reader)
    log.info("wrote %s: %d pool structures, %d with I > 1", out_path, n_pool, n_inf)
    return ScoreSummary(out_path, settings.kind, n_pool, len(train), sigma_th, n_inf)


def _check_force_labels(scorer_cls, train, train_path: str | Path) -> None:
    """A score built on the forces (QS2, QS3: the Fisher information of the force loss) needs a model trained on
    forces: an energy-only training set (QM9, DESIGN §11) is refused, in one line that says what to use."""
    if getattr(scorer_cls, "forces", False) and train.forces is None:
        raise InputError(f"{train_path}: {scorer_cls.kind} needs force labels (its Fisher information is that of the "
                         "force term of the loss) and the training set has energies only; use qs1")


def declare_scores(h5: h5py.File, scorer: Scorer, settings, train, n_atoms: np.ndarray, attrs: dict) -> dict:
    """Write the attributes and the whole-file datasets of a scores file; create (empty) every per-pool
    dataset and return them by name (docs/file-formats.md, "Scores file")."""
    n_pool = len(n_atoms)
    attrs = {"format": SCORES_FORMAT, "format_version": SCORES_FORMAT_VERSION, "strategy": settings.kind,
             "threshold_kind": settings.threshold, "n_train": len(train), "n_pool": n_pool, **attrs,
             **scorer.attrs(), "settings": settings.model_dump_json()}
    for k, v in attrs.items():
        h5.attrs[k] = v
    h5.create_dataset(keys.TRAIN_ID, data=np.asarray(train.ids, dtype=np.int64))
    h5.create_dataset(keys.TRAIN_HASH, data=content_hashes(train))  # selection excludes the training set by content
    h5.create_dataset(keys.TRAIN_SCORE, data=scorer.train_scores)
    h5.create_dataset(keys.N_ATOMS, data=n_atoms)
    datasets = {name: _dataset(h5, name, (n_pool,), np.float64) for name in (keys.SCORE, keys.INFORMATIVENESS)}
    datasets[keys.ID] = _dataset(h5, keys.ID, (n_pool,), np.int64)
    for name, (shape, dtype) in scorer.layout(n_pool, 3 * int(n_atoms.sum())).items():
        datasets[name] = _dataset(h5, name, shape, dtype)
    for name, data in scorer.constants(n_atoms).items():
        h5.create_dataset(name, data=data)
    return datasets


def stream_scores(reader: StoreReader, scorer: Scorer, datasets: dict, sigma_th: float, settings) -> int:
    """Score the pool chunk by chunk into ``datasets``; returns how many structures are informative (I > 1)."""
    bar = progress_bar(total=len(reader), desc=f"score {settings.kind}", unit="structure")
    start = row = n_informative = 0
    for chunk in reader.iter_chunks(settings.chunk_size):
        res = scorer.chunk(chunk)
        stop = start + len(chunk)
        res[keys.ID] = np.asarray(chunk.ids, dtype=np.int64)
        res[keys.INFORMATIVENESS] = fisher.informativeness(res[keys.SCORE], sigma_th)
        n_rows = 3 * int(np.sum(chunk.n_atoms))
        for name, dset in datasets.items():
            if name in ROW_DATASETS:
                dset[row : row + n_rows] = res[name]
            else:
                dset[start:stop] = res[name]
        n_informative += int(np.sum(res[keys.INFORMATIVENESS] > 1.0))
        row += n_rows
        start = stop
        bar.update(len(chunk))
        log.debug("scored %d / %d pool structures", stop, len(reader))
    bar.close()
    return n_informative


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
