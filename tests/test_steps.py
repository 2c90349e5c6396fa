"""The workflow's glue steps (oedal.campaign: split, scatter, stop, gather, merge, summary), seeds and the plan."""

from __future__ import annotations

import json

import numpy as np
import pytest

from oedal.data.store import read_store, write_store
from oedal.errors import SettingsError
from oedal.campaign.settings import CampaignSettings, SplitSettings
from oedal.campaign.plan import derive_seed, parse_strategy, plan_batches
from oedal.campaign.gather import gather_stores
from oedal.campaign.merge import merge_labels, validation_picks
from oedal.campaign.records import Status
from oedal.campaign.scatter import scatter_selection, shard_selection
from oedal.campaign.split import split_dataset, split_indices
from oedal.campaign.stop import decide_stop, stop_reason


@pytest.fixture()
def source(tmp_path, ethanol_structures):
    path = tmp_path / "source.h5"
    write_store(path, ethanol_structures.subset(np.arange(200)))
    return path


@pytest.fixture()
def iteration0(tmp_path, source):
    split = SplitSettings(n_train=20, n_valid=15, n_test=40, n_pool=100)
    out = tmp_path / "iter_000"
    result = split_dataset(source, out, tmp_path / "test.h5", split, seed=7)
    return out, result


def ids(path) -> np.ndarray:
    return np.asarray(read_store(path).ids)


def test_split_sizes_disjoint_and_pool_unlabeled(tmp_path, iteration0, source):
    out, result = iteration0
    sets = {name: ids(out / f"{name}.h5") for name in ("train", "valid", "pool")}
    sets["test"] = ids(tmp_path / "test.h5")
    assert {k: len(v) for k, v in sets.items()} == {"train": 20, "valid": 15, "pool": 100, "test": 40}
    everything = np.concatenate(list(sets.values()))
    assert len(np.unique(everything)) == len(everything), "splits overlap"
    assert not read_store(out / "pool.h5").has_labels, "the pool must never carry labels"
    for name in ("train", "valid"):
        assert read_store(out / f"{name}.h5").has_labels
    # ids point back to the source and the positions are the source's
    src = read_store(source)
    train = read_store(out / "train.h5")
    np.testing.assert_array_equal(train.positions, src.subset(np.searchsorted(src.ids, train.ids)).positions)
    status = json.loads((out / "status.json").read_text())
    assert status["labels_spent"] == 35 and status["n_pool"] == 100 and not status["stopped"]


def test_split_is_reproducible_and_seed_dependent():
    split = SplitSettings(n_train=10, n_valid=10, n_test=10)
    a, b, c = (split_indices(100, split, s) for s in (1, 1, 2))
    np.testing.assert_array_equal(a.pool, b.pool)
    assert not np.array_equal(a.train, c.train)
    assert len(a.pool) == 70  # the pool takes what is left


def test_split_too_small_names_the_keys():
    with pytest.raises(SettingsError, match="n_train"):
        split_indices(50, SplitSettings(n_train=30, n_valid=10, n_test=20), 0)


def _select(pool_path, out, k, seed=0):
    pool = read_store(pool_path)
    rows = np.sort(np.random.default_rng(seed).choice(len(pool), size=k, replace=False))
    write_store(out, pool.subset(rows))
    return np.asarray(pool.ids[rows])


def _label(tmp_path, shards, source, drop=()):
    """Replay labels for each shard (what the oracle does), dropping some ids as failures."""
    src = read_store(source)
    labeled = []
    for k, shard in enumerate(shards):
        part = read_store(shard)
        keep = np.flatnonzero(~np.isin(part.ids, list(drop)))
        rows = np.searchsorted(src.ids, part.ids[keep])
        path = tmp_path / f"labeled_{k}.h5"
        write_store(path, src.subset(rows))
        labeled.append(path)
    return labeled


@pytest.mark.parametrize("redraw", [False, True])
def test_shard_gather_merge(tmp_path, iteration0, source, redraw):
    out, _ = iteration0
    selected_ids = _select(out / "pool.h5", out / "selected.h5", 9)
    shards = [tmp_path / f"shard_{k}.h5" for k in range(4)]
    decision = shard_selection(out / "selected.h5", out / "pool.h5", out / "status.json", shards,
                               out / "request.json", n_valid=15 if redraw else 0, seed=3, informative=False)
    assert not decision.stop
    parts = [read_store(p) for p in shards]
    assert sum(len(p) for p in parts) == 9 + (15 if redraw else 0)
    assert all(not p.has_labels for p in parts), "shards go to the oracle without labels"
    shard_ids = np.concatenate([p.ids for p in parts])
    assert set(selected_ids) <= set(shard_ids) and len(np.unique(shard_ids)) == len(shard_ids)

    failed_id = int(selected_ids[0])
    labeled = _label(tmp_path, shards, source, drop=[failed_id])
    assert gather_stores(labeled, out / "labeled.h5") == len(shard_ids) - 1

    nxt = tmp_path / "iter_001"
    status = merge_labels(out, nxt, redraw_valid=redraw)
    train0, train1 = ids(out / "train.h5"), ids(nxt / "train.h5")
    pool0, pool1 = ids(out / "pool.h5"), ids(nxt / "pool.h5")
    valid0, valid1 = ids(out / "valid.h5"), ids(nxt / "valid.h5")
    # training set = previous + labeled selection (the failed one is excluded, not dropped silently)
    np.testing.assert_array_equal(np.sort(train1), np.sort(np.concatenate([train0, selected_ids[1:]])))
    assert status.labels_failed == 1
    assert status.labels_spent == 35 + len(shard_ids)
    assert not read_store(nxt / "pool.h5").has_labels
    assert read_store(nxt / "train.h5").has_labels and read_store(nxt / "valid.h5").has_labels
    if redraw:
        redrawn = np.asarray(json.loads((out / "request.json").read_text())["valid_ids"])
        np.testing.assert_array_equal(np.sort(valid1), np.sort(redrawn))
        expected_pool = np.setdiff1d(pool0, shard_ids).tolist() + valid0.tolist()
    else:
        np.testing.assert_array_equal(valid1, valid0)
        expected_pool = np.setdiff1d(pool0, shard_ids).tolist()
    assert sorted(pool1.tolist()) == sorted(expected_pool)
    # train, valid and pool stay disjoint; every id is accounted for
    for a, b in ((train1, valid1), (train1, pool1), (valid1, pool1)):
        assert not set(a.tolist()) & set(b.tolist())
    assert len(train1) + len(valid1) + len(pool1) + 1 == len(train0) + len(valid0) + len(pool0)


def test_stop_decision_makes_empty_shards(tmp_path, iteration0):
    out, _ = iteration0
    _select(out / "pool.h5", out / "selected.h5", 5)
    (out / "metrics.json").write_text(json.dumps({"forces_mae_kcal/mol/A": 0.5}))
    shards = [tmp_path / f"shard_{k}.h5" for k in range(2)]
    decision = shard_selection(out / "selected.h5", out / "pool.h5", out / "status.json", shards,
                               out / "request.json", metrics=out / "metrics.json", target=1.0)
    assert decision.stop and "target reached" in decision.reason
    assert all(len(read_store(p)) == 0 for p in shards)


def test_stop_decision_apart_from_the_scatter(tmp_path, iteration0):
    out, _ = iteration0
    (out / "metrics.json").write_text(json.dumps({"forces_mae_kcal/mol/A": 0.5}))
    assert decide_stop(out / "status.json") == (None, None)
    decision = decide_stop(out / "status.json", metrics=out / "metrics.json", target=1.0)
    assert "target reached" in decision.reason and decision.n_informative is None
    selected = _select(out / "pool.h5", out / "selected.h5", 4)
    shards = [tmp_path / f"shard_{k}.h5" for k in range(3)]
    sel, valid = scatter_selection(out / "selected.h5", out / "pool.h5", shards, n_valid=2, seed=1)
    np.testing.assert_array_equal(sel, selected)
    assert len(valid) == 2 and not set(valid.tolist()) & set(sel.tolist())
    assert [len(read_store(p)) for p in shards] == [2, 2, 2]


def test_stop_reason():
    go = Status.initial(20, 5, 100)
    assert stop_reason(go, {"f": 2.0}, 3, "f", 1.0) is None
    assert "target" in stop_reason(go, {"f": 0.9}, 3, "f", 1.0)
    assert "informative" in stop_reason(go, None, 0, "f", None)
    stopped = Status(3, True, "x", 20, 5, 100, 25)
    assert stop_reason(stopped, None, 5, "f", None) == "x"


def test_seeds_are_stable_and_distinct():
    assert derive_seed("c", "qs1-greedy", 0, 1, "select") == derive_seed("c", "qs1-greedy", 0, 1, "select")
    seeds = {derive_seed("c", s, 0, i, p) for s in ("qs1-greedy", "random") for i in range(5) for p in ("a", "b")}
    assert len(seeds) == 20
    assert 0 <= derive_seed("x") < 2**31


def test_strategies_and_plan():
    assert parse_strategy("qs2-top") == ("qs2", "top")
    assert parse_strategy("random") == (None, "random")
    assert parse_strategy("qbc") == ("qbc", "qbc")
    paper = CampaignSettings(split={"n_train": 100}, select={"fraction": 0.1}, stop={"iterations": 50, "max_train": 150})
    batches = plan_batches(paper)
    assert batches[:3] == [10, 11, 12] and 100 + sum(batches) == 150
    fixed = CampaignSettings(select={"n": 7}, stop={"iterations": 3})
    assert plan_batches(fixed) == [7, 7, 7]


def test_no_informative_candidate_stops(tmp_path, iteration0):
    import h5py

    out, _ = iteration0
    selected = _select(out / "pool.h5", out / "selected.h5", 5)
    scores = tmp_path / "scores.h5"
    with h5py.File(scores, "w") as h5:
        h5["id"] = ids(out / "pool.h5")
        h5["informativeness"] = np.full(100, 0.7)  # I ≤ 1 everywhere (sec. 4)
    shards = [tmp_path / "shard_0.h5"]
    decision = shard_selection(out / "selected.h5", out / "pool.h5", out / "status.json", shards,
                               out / "request.json", scores=scores)
    assert decision.stop and "informative" in decision.reason and decision.n_informative == 0
    assert len(read_store(shards[0])) == 0 and len(selected) == 5
    # the next iteration keeps everything and says it stopped
    write_store(out / "labeled.h5", read_store(shards[0]))
    status = merge_labels(out, tmp_path / "iter_001")
    assert status.stopped and status.n_train == 20 and status.labels_spent == 35
    assert read_store(tmp_path / "iter_001" / "train.h5").has_labels


def test_scatter_and_merge_go_by_content(tmp_path, iteration0, source):
    """A selection is matched to the pool by id and content; a pool copy of a selected structure under
    another id leaves the pool with it; labels whose ids name other structures in the training set are
    refused with both files named."""
    from oedal.data.structures import Structures

    out, _ = iteration0
    pool = read_store(out / "pool.h5")
    copy = pool.subset([0])
    copy.ids = np.array([9999])
    write_store(out / "pool.h5", Structures.concatenate([pool, copy]))
    write_store(out / "selected.h5", pool.subset([0, 1]))
    shards = [tmp_path / "shard_0.h5"]
    shard_selection(out / "selected.h5", out / "pool.h5", out / "status.json", shards, out / "request.json",
                    informative=False)
    assert read_store(shards[0]).ids.tolist() == pool.ids[:2].tolist()
    write_store(out / "labeled.h5", read_store(source).subset(np.searchsorted(read_store(source).ids, pool.ids[:2])))
    merge_labels(out, tmp_path / "iter_001")
    assert 9999 not in ids(tmp_path / "iter_001" / "pool.h5")  # already selected, by content

    moved = pool.subset([0, 1])
    moved.positions += 0.1  # the same ids, other structures
    write_store(out / "selected.h5", moved)
    with pytest.raises(ValueError, match="not in the pool"):
        scatter_selection(out / "selected.h5", out / "pool.h5", shards)

    train_ids = ids(out / "train.h5")[:2]
    other = read_store(out / "pool.h5")
    other.ids[:2] = train_ids  # a pool from another file: its ids name other structures than the training set's
    write_store(out / "pool.h5", other)
    labeled = read_store(out / "labeled.h5")
    labeled.ids = train_ids
    write_store(out / "labeled.h5", labeled)
    request = json.loads((out / "request.json").read_text())
    request.update(selected_ids=train_ids.tolist(), valid_ids=[])
    (out / "request.json").write_text(json.dumps(request))
    with pytest.raises(ValueError, match=r"train\.h5 and .*labeled\.h5: 2 id\(s\)"):
        merge_labels(out, tmp_path / "iter_002")


def test_summary_comparison_and_verdict_files(tmp_path):
    """Two strategies × two seeds × two iterations of fake results: the summary rows, the paired ratio
    in comparison.csv equals the one computed by hand, the verdict names the metric and the interval."""
    import csv
    import json
    import math

    from oedal.campaign.summary import write_summary

    runs = []
    for strategy, factor in (("random", 1.0), ("qs1-greedy", 0.8)):
        for seed in (0, 1):
            run = tmp_path / strategy / f"seed{seed}"
            runs.append((strategy, seed, run))
            for it, n in enumerate((20, 30)):
                d = run / f"iter_{it:03d}"
                d.mkdir(parents=True)
                Status(it, False, None, n, 5, 100 - n, n + 5, 0).write(d / "status.json")
                mae = 10.0 * factor * (1 + 0.1 * seed) / math.sqrt(n)
                (d / "metrics.json").write_text(json.dumps({"forces_mae_kcal/mol/A": mae, "training_stopped": "epochs",
                                                            "training_epochs": 7}))
    rows = write_summary(runs, 1, tmp_path / "summary.csv", comparison=tmp_path / "comparison.csv",
                         verdict=tmp_path / "verdict.txt")
    assert len(rows) == 8 and rows[0]["training_stopped"] == "epochs" and rows[0]["training_epochs"] == 7
    table = list(csv.DictReader(open(tmp_path / "comparison.csv")))
    at_30 = next(r for r in table if r["x"] == "n_train" and float(r["x_value"]) == 30)
    assert float(at_30["ratio"]) == pytest.approx(1 / 0.8) and int(at_30["n"]) == 2
    text = (tmp_path / "verdict.txt").read_text()
    assert "qs1-greedy vs random at n train 30: forces mae 1.25× lower" in text


@pytest.mark.parametrize("n, share, expected", [(3, 0.2, [2]), (10, 0.2, [2, 7]), (5, 0.5, [0, 2, 4]),
                                                 (4, 0.0, []), (1, 0.2, [])])
def test_validation_picks_take_every_kth_pick_rounded(n, share, expected):
    assert validation_picks(n, share).tolist() == expected


def test_merge_sends_a_share_of_the_picks_to_validation_in_picking_order(tmp_path, iteration0, source):
    """valid_share 0.2 of 9 picks (one failed): picks 2 and 7 of the picking order join the validation set."""
    out, _ = iteration0
    selected_ids = _select(out / "pool.h5", out / "selected.h5", 9)
    shards = [tmp_path / f"shard_{k}.h5" for k in range(2)]
    shard_selection(out / "selected.h5", out / "pool.h5", out / "status.json", shards, out / "request.json",
                    informative=False)
    picked = json.loads((out / "request.json").read_text())["selected_ids"]
    failed = picked[7]  # a failed pick that would have gone to validation joins nothing
    gather_stores(_label(tmp_path, shards, source, drop=[failed]), out / "labeled.h5")
    nxt = tmp_path / "iter_001"
    status = merge_labels(out, nxt, keep_pool=False, valid_share=0.2)
    train0, train1, valid0, valid1 = (ids(p) for p in (out / "train.h5", nxt / "train.h5", out / "valid.h5",
                                                        nxt / "valid.h5"))
    assert sorted(set(valid1) - set(valid0)) == [picked[2]]
    assert sorted(set(train1) - set(train0)) == sorted(set(selected_ids) - {picked[2], failed})
    assert status.n_pool == 0 and not (nxt / "pool.h5").exists() and status.labels_failed == 1
