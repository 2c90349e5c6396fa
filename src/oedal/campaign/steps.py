"""The workflow's own steps: split, shard (scatter), gather, merge, carry, summary.

These are the glue between the library's steps (train, score, select, label) that the Snakemake
rules call through ``oedal split|shard|gather|merge|summary`` and ``oedal train --carry-from``
(DESIGN §1, §7). Nothing here imports snakemake or torch; what the Snakefile imports at parse time
is in :mod:`oedal.campaign.plan`.

Per iteration directory ``iter_{NNN}/``:

* ``status.json`` — the state entering the iteration: sizes, labels spent so far, and whether the
  campaign has stopped (written by ``split`` for iteration 0 and by ``merge`` afterwards);
* ``request.json`` — what this iteration sends to the oracle (the selected ids and, with
  ``split.valid_redraw``, a fresh validation draw) and the stop decision taken after evaluation.

Stopping early (target error reached, or no informative candidate, I ≤ 1) never changes the shape of
the unrolled workflow: the following iterations request nothing, train nothing (the previous model is
carried over) and keep the training set, so every target path still exists and ``snakemake -n``
shows the whole loop.
"""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, NamedTuple

import numpy as np

from oedal.campaign.settings import SplitSettings
from oedal.errors import InputError, SettingsError
from oedal.files import atomic_path

log = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------------
# Small file helpers
# ---------------------------------------------------------------------------------------------


def _read_json(path: str | Path) -> dict:
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except json.JSONDecodeError as err:
        raise InputError(f"{path}: not valid JSON ({err})") from None


def _write_json(path: str | Path, data: dict) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    tmp.replace(path)


def _write(path: str | Path, structures, **attrs) -> None:
    from oedal.data.store import write_store

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    write_store(path, structures, attrs=attrs or None, overwrite=True)


def _read(path: str | Path):
    from oedal.data.store import read_store

    return read_store(path)


def _read_hashed(path: str | Path):
    """(Structures, content hashes (n,) S64) of a store (oedal.data.identity)."""
    from oedal.data.store import StoreReader

    with StoreReader(path) as reader:
        return reader.read(), reader.hashes


def _rows_of(ids: np.ndarray, wanted: Iterable[int]) -> np.ndarray:
    """Rows of ``ids`` whose id is in ``wanted``, in file order (ids of one file: unique there)."""
    return np.flatnonzero(np.isin(ids, np.fromiter(wanted, dtype=np.int64)))


# ---------------------------------------------------------------------------------------------
# Split (iteration 0)
# ---------------------------------------------------------------------------------------------


@dataclass
class SplitResult:
    train: np.ndarray  # rows of the source, sorted
    valid: np.ndarray
    pool: np.ndarray
    test: np.ndarray


def split_indices(n: int, split: SplitSettings, seed: int) -> SplitResult:
    """Disjoint random rows for train, valid, test and pool (the pool takes what is left, or n_pool)."""
    fixed = split.n_train + split.n_valid + split.n_test
    n_pool = n - fixed if split.n_pool is None else split.n_pool
    if fixed + max(n_pool, 0) > n or n_pool < 1:
        raise SettingsError(
            f"split: n_train + n_valid + n_test + n_pool = {split.n_train} + {split.n_valid} + "
            f"{split.n_test} + {split.n_pool if split.n_pool is not None else '(rest)'} needs more than the "
            f"{n} structures of the data set"
        )
    perm = np.random.default_rng(seed).permutation(n)
    cuts = np.cumsum([split.n_train, split.n_valid, split.n_test, n_pool])
    parts = [np.sort(p) for p in np.split(perm[: cuts[-1]], cuts[:-1])]
    return SplitResult(train=parts[0], valid=parts[1], test=parts[2], pool=parts[3])


def split_dataset(
    source: str | Path, out_dir: str | Path, test: str | Path, split: SplitSettings, seed: int
) -> SplitResult:
    """Write ``train.h5 valid.h5 pool.h5 status.json`` into ``out_dir`` (iteration 0) and ``test``.

    The pool is written without labels; the labeled source is kept for replay and the test set."""
    from oedal.data.store import StoreReader

    with StoreReader(source) as reader:
        if not reader.has_labels:
            raise InputError(f"{source}: the data set has no labels (needed for train, valid and test)")
        result = split_indices(len(reader), split, seed)
        out = Path(out_dir)
        _write(out / "train.h5", reader.read(result.train))
        _write(out / "valid.h5", reader.read(result.valid))
        _write(out / "pool.h5", reader.read(result.pool).without_labels())
        _write(test, reader.read(result.test))
    _write_initial_status(out, len(result.train), len(result.valid), len(result.pool))
    log.info("split %s: train %d, valid %d, pool %d, test %d (seed %d)", source, len(result.train),
             len(result.valid), len(result.pool), len(result.test), seed)
    return result


def _write_initial_status(out: Path, n_train: int, n_valid: int, n_pool: int) -> None:
    """Iteration 0's status.json: the initial training and validation structures are the labels spent."""
    _write_json(out / "status.json", {
        "iteration": 0, "stopped": False, "reason": None, "n_train": n_train, "n_valid": n_valid,
        "n_pool": n_pool, "labels_spent": n_train + n_valid, "labels_failed": 0})


def split_explore(initial: str | Path, sampled: str | Path, out_dir: str | Path, test: str | Path,
                  split: SplitSettings, seed: int) -> None:
    """Iteration 0 of an exploration campaign: ``train.h5 valid.h5 status.json`` from the labeled
    ``initial`` structures (rattled starts), the test set from the labeled ``sampled`` MD; no pool (the
    walkers make each iteration's)."""
    rng = np.random.default_rng(seed)
    out = Path(out_dir)
    initial_set, sampled_set = _read(initial), _read(sampled)
    for path, s, need in ((initial, initial_set, split.n_train + split.n_valid), (sampled, sampled_set, split.n_test)):
        if not s.has_labels:
            raise InputError(f"{path}: no labels (the oracle labels the initial and test structures)")
        if len(s) < need:
            raise SettingsError(f"split: {path} holds {len(s)} structures, fewer than the {need} asked for")
    rows = rng.permutation(len(initial_set))
    train, valid = np.sort(rows[: split.n_train]), np.sort(rows[split.n_train: split.n_train + split.n_valid])
    _write(out / "train.h5", initial_set.subset(train))
    _write(out / "valid.h5", initial_set.subset(valid))
    _write(test, sampled_set.subset(np.sort(rng.permutation(len(sampled_set))[: split.n_test])))
    _write_initial_status(out, len(train), len(valid), 0)
    log.info("split (exploration): train %d, valid %d from %s; test %d from %s", len(train), len(valid), initial,
             split.n_test, sampled)


# ---------------------------------------------------------------------------------------------
# Stop decision and scatter (shard)
# ---------------------------------------------------------------------------------------------


def stop_reason(
    status: dict, metrics: dict | None, informative: int | None, target_metric: str, target: float | None
) -> str | None:
    """Why the campaign stops after this iteration's evaluation and selection, or None to go on."""
    if status.get("stopped"):
        return status.get("reason") or "stopped earlier"
    if target is not None and metrics is not None:
        if target_metric not in metrics:
            raise InputError(f"stop.target_metric {target_metric!r} is not in metrics.json (keys: {sorted(metrics)})")
        value = float(metrics[target_metric])
        if value <= target:
            return f"target reached: {target_metric} = {value:.4g} ≤ {target:.4g}"
    if informative is not None and informative == 0:
        return "no informative candidate left (I ≤ 1)"
    return None


def count_informative(scores_path: str | Path) -> int | None:
    """How many pool structures are informative, I > 1 (None when the scores file has no I)."""
    import h5py

    from oedal.data import keys

    with h5py.File(scores_path, "r") as h5:
        if keys.INFORMATIVENESS not in h5:
            return None
        return int(np.count_nonzero(h5[keys.INFORMATIVENESS][()] > 1.0))


class StopDecision(NamedTuple):
    reason: str | None  # why the campaign stops after this iteration; None: go on
    n_informative: int | None  # pool structures with I > 1 (None: not asked or not scored)


def decide_stop(
    status: str | Path,
    *,
    metrics: str | Path | None = None,
    scores: str | Path | None = None,
    target_metric: str = "forces_mae_kcal/mol/A",
    target: float | None = None,
    informative: bool = True,
    explore: str | Path | None = None,
) -> StopDecision:
    """The stop decision of an iteration from its status.json, metrics.json (``target``) and scores
    file (``informative``: stop when no candidate has I > 1, section 4) and the walkers' explore.json
    (``explore``: :func:`explore_stop_reason`); see :func:`stop_reason`."""
    n_informative = count_informative(scores) if (scores and informative) else None
    reason = stop_reason(_read_json(status), _read_json(metrics) if metrics else None, n_informative,
                         target_metric, target)
    if reason is None and explore is not None:
        reason = explore_stop_reason(_read_json(explore))
    return StopDecision(reason, n_informative)


def explore_stop_reason(counts: dict) -> str | None:
    """Exploration has converged (DP-GEN's accurate ratio), or found nothing to label while no walker
    waits for the temperature ramp (hotter walkers still to run may well find something)."""
    if counts.get("converged"):
        return (f"exploration converged: {counts['clean']} of {counts['walkers']} walkers ran their full length "
                f"without a trigger ({counts['clean_share']:.0%} ≥ {counts['converged_at']:.0%})")
    if counts.get("candidates", 1) == 0 and not counts.get("waiting"):
        return "exploration found no candidate (every walker accurate or stopped by a sanity check)"
    return None


def scatter_selection(
    selected: str | Path, pool: str | Path, shards: list[str | Path], *, n_valid: int = 0, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Write the structures to label, unlabeled, over a fixed number of contiguous (possibly empty)
    shards: the selected batch and, when ``n_valid`` > 0 (validation redraw), ``n_valid`` random pool
    structures that were not selected. Returns (selected ids, redrawn validation ids)."""
    from oedal.data.identity import pair_keys

    chosen, chosen_hashes = _read_hashed(selected)
    selected_ids = np.asarray(chosen.ids, dtype=np.int64)
    pool_structures, pool_hashes = _read_hashed(pool)
    rows = np.flatnonzero(np.isin(pair_keys(pool_structures.ids, pool_hashes), pair_keys(selected_ids, chosen_hashes)))
    if len(rows) != len(selected_ids):
        raise InputError(f"{selected}: {len(selected_ids) - len(rows)} selected structures are not in the pool {pool} "
                         "(same id and content)")
    rest = np.flatnonzero(~np.isin(pool_hashes, chosen_hashes))  # by content: a copy under another id is taken too
    if n_valid > len(rest):
        raise InputError(f"{pool}: {len(rest)} structures left, cannot redraw {n_valid} validation structures")
    valid_rows = np.sort(np.random.default_rng(seed).choice(rest, size=n_valid, replace=False))
    valid_ids = np.asarray(pool_structures.ids[valid_rows], dtype=np.int64)
    _write_shards(pool_structures.subset(np.concatenate([rows, valid_rows])).without_labels(), shards)
    return selected_ids, valid_ids


def _write_shards(structures, shards: list[str | Path]) -> None:
    for path, part in zip(shards, np.array_split(np.arange(len(structures)), len(shards))):
        _write(path, structures.subset(part))


def shard_selection(
    selected: str | Path,
    pool: str | Path,
    status: str | Path,
    shards: list[str | Path],
    request: str | Path,
    *,
    metrics: str | Path | None = None,
    scores: str | Path | None = None,
    n_valid: int = 0,
    seed: int = 0,
    target_metric: str = "forces_mae_kcal/mol/A",
    target: float | None = None,
    informative: bool = True,
    explore: str | Path | None = None,
) -> dict:
    """Decide whether to stop (:func:`decide_stop`), then scatter the structures to label over the
    shards (:func:`scatter_selection`; empty shards once stopped) and write the decision to ``request``."""
    stop = decide_stop(status, metrics=metrics, scores=scores, target_metric=target_metric, target=target,
                       informative=informative, explore=explore)
    if stop.reason is None:
        selected_ids, valid_ids = scatter_selection(selected, pool, shards, n_valid=n_valid, seed=seed)
    else:
        selected_ids = valid_ids = np.zeros(0, dtype=np.int64)
        _write_shards(_read(pool).subset(selected_ids), shards)
    decision = {
        "stop": stop.reason is not None,
        "reason": stop.reason,
        "selected_ids": [int(i) for i in selected_ids],
        "valid_ids": [int(i) for i in valid_ids],
        "n_informative": stop.n_informative,
        "n_shards": len(shards),
    }
    _write_json(request, decision)
    log.info("shard: %d to label (%d selected, %d validation) in %d shards%s", len(selected_ids) + len(valid_ids),
             len(selected_ids), len(valid_ids), len(shards), f"; stop: {stop.reason}" if stop.reason else "")
    return decision


# ---------------------------------------------------------------------------------------------
# Gather and merge
# ---------------------------------------------------------------------------------------------


def gather_stores(parts: list[str | Path], out: str | Path, *, labeled: bool = True) -> int:
    """Concatenate the (labeled) shards into one store (returns the number of structures)."""
    from oedal.data.structures import Structures

    joined = Structures.concatenate([_read(p) for p in parts])
    if labeled and len(joined) and not joined.has_labels:
        raise InputError(f"{out}: a labeled shard holds structures without labels")
    _write(out, joined)
    return len(joined)


def gather_failed(parts: list[str | Path], out: str | Path) -> int:
    """Concatenate the oracle's failure records (structure store + ``reason`` and ``attempts``)."""
    import h5py

    from oedal.data import keys
    from oedal.data.structures import Structures

    structures, reasons, attempts = [], [], []
    for path in parts:
        structures.append(_read(path))
        with h5py.File(path, "r") as h5:
            if keys.REASON in h5:
                reasons += [r.decode() if isinstance(r, bytes) else str(r) for r in h5[keys.REASON][()]]
            attempts += list(h5[keys.ATTEMPTS][()]) if keys.ATTEMPTS in h5 else []
    joined = Structures.concatenate(structures)
    if len(reasons) != len(joined):
        raise InputError(f"{out}: failure records without a reason in {[str(p) for p in parts]}")
    from oedal.data.store import write_store

    Path(out).parent.mkdir(parents=True, exist_ok=True)
    write_store(out, joined, attrs={"content": "structures the oracle failed to label"},
                extra={keys.REASON: np.array(reasons, dtype=h5py.string_dtype()),
                       keys.ATTEMPTS: np.array(attempts or [0] * len(reasons), dtype=np.int64)})
    return len(joined)


def validation_picks(n: int, share: float) -> np.ndarray:
    """Positions (in picking order) of the picks that join the validation set: every 1/share-th, rounded
    to nearest (share 0.2: picks 2, 7, 12, ...; 3 picks give 1), so the first, most informative picks train."""
    i = np.arange(n)
    return np.flatnonzero(np.floor((i + 1) * share + 0.5) > np.floor(i * share + 0.5))


def merge_labels(prev_dir: str | Path, out_dir: str | Path, *, redraw_valid: bool = False,
                 keep_pool: bool = True, valid_share: float = 0.0) -> dict:
    """Iteration i from i−1: train += labeled selection; pool −= requested; validation redrawn or kept.

    With a redraw, the old validation structures go back to the pool without labels (as in the
    paper) and the freshly labeled draw becomes the validation set."""
    from oedal.data.structures import Structures

    prev, out = Path(prev_dir), Path(out_dir)
    state, request = _read_json(prev / "status.json"), _read_json(prev / "request.json")
    (train, train_hashes), (pool, pool_hashes) = _read_hashed(prev / "train.h5"), _read_hashed(prev / "pool.h5")
    valid = _read(prev / "valid.h5")
    new, new_hashes = _read_hashed(prev / "labeled.h5")  # the oracle's labels of everything requested, no failures
    stopped = bool(request["stop"])
    requested = np.asarray(request["selected_ids"] + request["valid_ids"], dtype=np.int64)
    requested_hashes = pool_hashes[_rows_of(pool.ids, requested)]
    _check_labeled(prev, new.ids, new_hashes, requested_hashes, train.ids, train_hashes)
    sel_rows = _rows_of(new.ids, request["selected_ids"])
    picked = np.asarray(request["selected_ids"], dtype=np.int64)  # in picking order
    to_valid = picked[validation_picks(len(picked), valid_share)] if valid_share else picked[:0]
    to_valid = _rows_of(new.ids, to_valid[np.isin(to_valid, new.ids)])  # (a failed label joins nothing)
    sel_rows = sel_rows[~np.isin(sel_rows, to_valid)]
    new_train = Structures.concatenate([train, new.subset(sel_rows)]) if len(sel_rows) else train
    valid = Structures.concatenate([valid, new.subset(to_valid)]) if len(to_valid) else valid
    pool_rest = pool.subset(np.flatnonzero(~np.isin(pool_hashes, requested_hashes)))  # by content
    valid_rows = _rows_of(new.ids, request["valid_ids"])
    if redraw_valid and not stopped and len(valid_rows):  # (every redrawn label failed: keep the old set)
        new_valid = new.subset(valid_rows)
        new_pool = Structures.concatenate([pool_rest, valid.without_labels()])
    else:
        new_valid, new_pool = valid, pool_rest
    _write(out / "train.h5", new_train)
    _write(out / "valid.h5", new_valid)
    if keep_pool:  # (exploration: the walkers make the next pool)
        _write(out / "pool.h5", new_pool.without_labels())
    n_requested = len(requested)
    status = {
        "iteration": int(state["iteration"]) + 1,
        "stopped": stopped,
        "reason": request.get("reason"),
        "n_train": len(new_train),
        "n_valid": len(new_valid),
        "n_pool": len(new_pool) if keep_pool else 0,
        "labels_spent": int(state["labels_spent"]) + n_requested,
        "labels_failed": int(state.get("labels_failed", 0)) + n_requested - len(new),
    }
    if (prev / "explore.json").exists():  # the walkers that made the labeled pool: accurate / candidate / stopped
        status["explore"] = _read_json(prev / "explore.json")
    _write_json(out / "status.json", status)
    log.info("merge → %s: train %d, valid %d, pool %d, labels spent %d%s", out, status["n_train"], status["n_valid"],
             status["n_pool"], status["labels_spent"], " (stopped)" if stopped else "")
    return status


def _check_labeled(prev: Path, ids, hashes, requested_hashes, train_ids, train_hashes) -> None:
    """The labeled structures are those requested from the pool, and none reuses a training id."""
    from oedal.data.identity import check_no_id_clash

    foreign = ~np.isin(hashes, requested_hashes)
    if foreign.any():
        raise InputError(f"{prev / 'labeled.h5'}: {int(foreign.sum())} structure(s) (ids "
                         f"{', '.join(str(int(i)) for i in ids[foreign][:5])}) are not among those requested from "
                         f"{prev / 'pool.h5'} (an oracle must keep the geometry it was given)")
    check_no_id_clash(train_ids, train_hashes, str(prev / "train.h5"), ids, hashes, str(prev / "labeled.h5"))


def carry_over(status: str | Path, source: str | Path | None, target: str | Path) -> bool:
    """Once the campaign has stopped (``status``: this iteration's status.json), copy the previous
    iteration's model ``source`` to ``target`` instead of training and return True; else False."""
    state = _read_json(status)
    if not state.get("stopped"):
        return False
    reason = state.get("reason") or "stopped earlier"
    if source is None:
        raise InputError(f"{status}: the campaign has stopped ({reason}) but no model to carry over was given")
    with atomic_path(target) as tmp:
        shutil.copyfile(source, tmp)
    log.info("campaign stopped (%s): copied %s -> %s instead of training", reason, source, target)
    return True


# ---------------------------------------------------------------------------------------------
# Summary
# ---------------------------------------------------------------------------------------------


def _benchmark_seconds(path: Path) -> float | None:
    """Wall time (column ``s``) of a Snakemake benchmark file, None when missing."""
    if not path.exists():
        return None
    lines = path.read_text().splitlines()
    if len(lines) < 2:
        return None
    header, values = lines[0].split("\t"), lines[1].split("\t")
    return float(values[header.index("s")]) if "s" in header else None


def _flat_metrics(metrics: dict, prefix: str = "") -> dict:
    """Numeric leaves of metrics.json, nested keys joined by '_', and how the model was trained
    (``training_*``: epochs, budget, best epoch, why it stopped, seconds, warm start)."""
    flat: dict = {}
    for key, value in metrics.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(_flat_metrics(value, name + "_"))
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            flat[name] = value
        elif name.startswith("training_") and value is not None:
            flat[name] = value
    return flat


def _errors(d: Path, extra: dict[str, str], k: int = 0) -> dict:
    """Model k's errors in iteration folder ``d``: the test set's, then ``{prefix}_`` those of ``extra``
    (how the model was trained is said once, with the test set's)."""
    from oedal.campaign.plan import member_metrics

    row = _flat_metrics(_read_json(d / member_metrics("metrics.json", k)))
    for prefix, name in extra.items():
        row.update({key: v for key, v in _flat_metrics(_read_json(d / member_metrics(name, k)), prefix=f"{prefix}_").items()
                    if not key.startswith(f"{prefix}_training_")})
    return row


def _seed_columns(d: Path, extra: dict[str, str], first: dict, members: int) -> dict:
    """``seeds_*`` columns (oedal.campaign.statistics.training_seed_columns) over the ``members`` models
    of one iteration; ``first`` = model 0's errors."""
    from oedal.campaign.statistics import metrics_in, training_seed_columns

    models = [first] + [_errors(d, extra, k) for k in range(1, members)]
    return training_seed_columns(models, metrics_in(models))


def summary_rows(run_dirs: list[tuple[str, int, str | Path]], iterations: int,
                 extra: dict[str, str] | None = None, members: int = 1) -> list[dict]:
    """One row per (strategy, seed, iteration): sizes, labels spent, test errors, how the model was
    trained, selection time; ``extra``: prefix → another metrics file of every iteration (transfer
    test sets), its errors under ``{prefix}_`` columns; ``members`` > 1 (training seeds): the
    geometric mean and spread of every error over the models trained on the same set (``seeds_*``)."""
    extra = extra or {}
    rows = []
    for strategy, seed, run_dir in run_dirs:
        for it in range(iterations + 1):
            d = Path(run_dir) / f"iter_{it:03d}"
            status = _read_json(d / "status.json")
            row = {"strategy": strategy, "seed": seed, "iteration": it}
            row.update({k: status[k] for k in ("n_train", "n_valid", "n_pool", "labels_spent", "labels_failed")})
            row["stopped"] = bool(status.get("stopped"))
            errors = _errors(d, extra)
            row.update(errors)
            if members > 1:
                row.update(_seed_columns(d, extra, errors, members))
            if (d / "metrics_labeled.json").exists():  # this model on the frames it picked, once labeled
                labeled = _flat_metrics(_read_json(d / "metrics_labeled.json"), prefix="labeled_")
                row.update({k: v for k, v in labeled.items() if not k.startswith("labeled_training_")})
            if (d / "explore.json").exists():  # this model's walkers: accurate / candidate / stopped
                row.update(_flat_metrics(_read_json(d / "explore.json"), prefix="explore_"))
            row.update(_job_seconds(d, Path(run_dir).parent.parent / f"seed{seed}" / d.name))
            rows.append(row)
    return rows


def _job_seconds(d: Path, shared: Path) -> dict:
    """Selection and training wall time (s) of an iteration from its job benchmarks (iteration 0's
    training ran once per seed, in ``shared``)."""
    times = [_benchmark_seconds(d / "benchmarks" / f"{s}.tsv") for s in ("score", "select")]
    known = [t for t in times if t is not None]
    train = _benchmark_seconds(d / "benchmarks" / "train.tsv")
    if train is None:
        train = _benchmark_seconds(shared / "benchmarks" / "train.tsv")
    return {"selection_s": round(sum(known), 3) if known else None, "train_s": train}


def _write_csv(rows: list[dict], out: str | Path) -> None:
    import csv

    columns: list[str] = []
    for row in rows:
        columns += [k for k in row if k not in columns]
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out) as tmp, open(tmp, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)


def write_summary(run_dirs: list[tuple[str, int, str | Path]], iterations: int, out: str | Path,
                  comparison: str | Path | None = None, verdict: str | Path | None = None,
                  baseline: str = "random", extra: dict[str, str] | None = None, members: int = 1) -> list[dict]:
    """Write the campaign's summary table (CSV) and, when asked, the paired comparison of every strategy
    with ``baseline`` (oedal.campaign.statistics: ratios with intervals over seeds, CSV) and the verdict
    (one sentence per strategy and force metric, and a warning when a wall-clock limit cut a training);
    returns the summary rows."""
    from oedal.campaign import statistics

    rows = summary_rows(run_dirs, iterations, extra, members)
    _write_csv(rows, out)
    if comparison is not None:
        _write_csv(statistics.compare_strategies(rows, baseline, statistics.metrics_in(rows)), comparison)
    if verdict is not None:
        lines = statistics.verdict_lines(rows, baseline)
        with atomic_path(verdict) as tmp:
            tmp.write_text("\n".join(lines) + "\n")
        for line in lines:
            (log.warning if line.startswith("WARNING") else log.info)("%s", line)
    return rows
