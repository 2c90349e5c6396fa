"""The report's class views (DESIGN §11) on a synthetic energy-only campaign with classes, built here in
tmp_path: picks_by_class counts equal a brute-force count of the picked ids, the threshold study equals a
direct numpy computation under σ_th = median and mean, and the page has the three sections with those numbers
(errors per class as in metrics.json, the ratio random/strategy as the geometric mean over paired seeds)."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import h5py
import numpy as np
import pytest
from tolerances import assert_close

from oedal.data import keys
from oedal.data.store import write_store
from oedal.data.structures import Structures
from oedal.errors import InputError
from oedal.oed.scoring import SCORES_FORMAT
from oedal.report import find_runs, write_report
from oedal.report.selection import picks_by_class, threshold_study

N_SOURCE, N_POOL, N_PICK, N_INIT = 60, 40, 5, 10
SEEDS, ITERS = (0, 1), 3  # iterations 0, 1, 2; the last picks nothing
TEST_CLASSES = ("A", "B")
KCAL = 0.0433641  # eV per kcal/mol


class Truth:
    """What the synthetic campaign holds, kept apart from its files: per source id its class and size, per
    (strategy, seed, iteration) the picked ids, the pool's ids and scores and the training scores."""

    def __init__(self, rng: np.random.Generator) -> None:
        self.classes = np.array([("A", "B", "C", "")[i % 4] for i in range(N_SOURCE)])  # (N_SOURCE,) "" = none
        self.n_atoms = rng.integers(2, 12, N_SOURCE)  # (N_SOURCE,)
        self.picked: dict[tuple[str, int, int], list[int]] = {}
        self.pool: dict[tuple[str, int, int], np.ndarray] = {}
        self.scores: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = {}  # (seed, it) → pool, train scores
        self.metrics: dict[tuple[str, int, int], dict] = {}


def _pool_store(path: Path, ids: np.ndarray, truth: Truth) -> None:
    n = truth.n_atoms[ids]
    total = int(n.sum())
    write_store(path, Structures(np.arange(3 * total, dtype=float).reshape(total, 3), np.ones(total, int), n,
                                 np.zeros((len(ids), 3, 3)), np.zeros((len(ids), 3), bool), ids,
                                 classes=truth.classes[ids]))


def _scores_file(path: Path, ids: np.ndarray, truth: Truth, pool: np.ndarray, train: np.ndarray) -> None:
    sigma = float(np.median(train))
    with h5py.File(path, "w") as h5:
        h5.attrs.update({"format": SCORES_FORMAT, "format_version": 1, "threshold": sigma, "threshold_kind": "median"})
        for name, data in ((keys.SCORE, pool), (keys.ID, ids), (keys.N_ATOMS, truth.n_atoms[ids]),
                           (keys.TRAIN_SCORE, train), (keys.INFORMATIVENESS, pool / sigma)):
            h5[name] = data


def _metrics(rng: np.random.Generator) -> dict:
    """An energy-only metrics.json with per_class errors (no forces_* anywhere, as QM9)."""
    def figures(n: int) -> dict:
        mae, rmse, maxe = np.sort(rng.uniform(0.5, 9.0, 3))
        out = {"n_structures": n, "n_energy_error_above_1_kcal/mol": int(rng.integers(0, n + 1))}
        for stat, v in (("mae", mae), ("rmse", rmse), ("maxe", maxe)):
            out[f"energy_{stat}_kcal/mol"], out[f"energy_{stat}_eV"] = float(v), float(v * KCAL)
        return out

    return {**figures(20), "per_class": {c: figures(10) for c in TEST_CLASSES}}


def _iteration(d: Path, key: tuple[str, int, int], pool: np.ndarray, truth: Truth,
               rng: np.random.Generator) -> list[int]:
    """Write one iteration folder; returns its picks (none in the last iteration)."""
    strategy, seed, it = key
    d.mkdir(parents=True)
    _pool_store(d / "pool.h5", pool, truth)
    (d / "status.json").write_text(json.dumps({"iteration": it, "stopped": False, "reason": None,
                                               "n_train": N_INIT + N_PICK * it, "n_valid": 5, "n_pool": len(pool),
                                               "labels_spent": N_INIT + 5 + N_PICK * it, "labels_failed": 0}))
    truth.metrics[key] = _metrics(rng)
    (d / "metrics.json").write_text(json.dumps(truth.metrics[key]))
    truth.pool[key] = pool
    if it == ITERS - 1:
        return []
    picked = [int(i) for i in rng.choice(pool, N_PICK, replace=False)]
    if strategy != "random":
        if (seed, it) not in truth.scores:  # skewed scores: the mean of the training scores is well above the median
            truth.scores[(seed, it)] = (rng.lognormal(0, 1.5, len(pool)), rng.lognormal(0, 1.5, N_INIT + N_PICK * it))
        _scores_file(d / "scores.h5", pool, truth, *truth.scores[(seed, it)])
    (d / "request.json").write_text(json.dumps({"stop": False, "reason": None, "selected_ids": picked,
                                                "valid_ids": [], "n_informative": None, "n_shards": 1}))
    truth.picked[key] = picked
    return picked


@pytest.fixture(scope="module")
def campaign(tmp_path_factory) -> tuple[Path, Truth]:
    """RESULTS/syn: strategies qs1 (scores) and random, seeds 0 and 1, iterations 0–2, energies only."""
    rng = np.random.default_rng(7)
    truth = Truth(rng)
    root = tmp_path_factory.mktemp("results") / "syn"
    for strategy in ("qs1", "random"):
        for seed in SEEDS:
            pool = np.arange(N_POOL)
            for it in range(ITERS):
                picked = _iteration(root / strategy / f"seed{seed}" / f"iter_{it:03d}", (strategy, seed, it), pool,
                                    truth, rng)
                pool = np.setdiff1d(pool, picked)
    return root, truth


def test_picks_by_class_count_the_picked_ids_by_class(campaign):
    root, truth = campaign
    picks = picks_by_class(find_runs(root))
    assert sorted((p.strategy, p.seed, p.iteration) for p in picks) == sorted(truth.picked)  # the last picks nothing
    for p in picks:
        ids = truth.picked[(p.strategy, p.seed, p.iteration)]
        assert p.counts == dict(Counter(truth.classes[i] for i in ids)), p
        assert p.n_picked == N_PICK
        assert p.mean_n_atoms == pytest.approx(np.mean([truth.n_atoms[i] for i in ids]), rel=1e-14)
        pool = truth.pool[(p.strategy, p.seed, p.iteration)]
        assert p.pool_counts == dict(Counter(truth.classes[pool])), p
        assert p.pool_mean_n_atoms == pytest.approx(truth.n_atoms[pool].mean(), rel=1e-14)
    assert any("" in p.counts for p in picks)  # structures without a class are counted too


def test_the_threshold_study_equals_a_direct_computation_for_both_thresholds(campaign):
    root, truth = campaign
    rows = threshold_study(find_runs(root))
    assert {r.strategy for r in rows} == {"qs1"}  # random has no scores
    assert sorted((r.seed, r.iteration, r.kind) for r in rows) == sorted(
        (s, i, k) for s in SEEDS for i in range(ITERS - 1) for k in ("median", "mean"))
    shares = {}
    for r in rows:
        pool_scores, train = truth.scores[(r.seed, r.iteration)]
        sigma = {"median": np.median, "mean": np.mean}[r.kind](train)
        score_of = dict(zip(truth.pool[(r.strategy, r.seed, r.iteration)].tolist(), pool_scores))
        info = np.array([score_of[i] for i in truth.picked[(r.strategy, r.seed, r.iteration)]]) / sigma
        assert_close(r.sigma_th, sigma)
        assert r.share_informative == np.count_nonzero(info > 1) / len(info)
        assert_close(r.mean_informativeness, info.mean())
        assert r.pool_share_informative == np.count_nonzero(pool_scores / sigma > 1) / len(pool_scores)
        assert r.used == (r.kind == "median") and r.n_picked == N_PICK
        shares[(r.seed, r.iteration, r.kind)] = r.pool_share_informative
    # the data tell the thresholds apart: swapping them would fail the assertions above
    assert any(shares[(s, i, "median")] != shares[(s, i, "mean")] for s in SEEDS for i in range(ITERS - 1))


def test_a_picked_id_not_in_the_pool_is_an_error_naming_the_file(campaign, tmp_path):
    import shutil

    root, _ = campaign
    copy = tmp_path / "syn"
    shutil.copytree(root, copy)
    request = copy / "random" / "seed0" / "iter_001" / "request.json"
    data = json.loads(request.read_text())
    request.write_text(json.dumps({**data, "selected_ids": data["selected_ids"] + [10_000]}))
    with pytest.raises(InputError, match=r"iter_001/pool\.h5: 1 picked id\(s\) not in it, e.g. \[10000\]"):
        picks_by_class(find_runs(copy))


def _table(page: str, ident: str) -> list[dict]:
    """The rows of table ``ident``: its ``data-*`` row attributes and, per cell, data-value or text."""
    body = re.search(rf'<table id="{re.escape(ident)}">(.*?)</table>', page, re.S)
    assert body, f"no table {ident}"
    rows = []
    for attrs, cells in re.findall(r"<tr([^>]*)>(.*?)</tr>", body.group(1), re.S):
        row = dict(re.findall(r'data-([\w-]+)="([^"]*)"', attrs))
        for key, rest, text in re.findall(r'<td data-key="([^"]+)"([^>]*)>(.*?)</td>', cells):
            value = re.search(r'data-value="([^"]*)"', rest)
            row[key] = value.group(1) if value else text
        if row:
            rows.append(row)
    return rows


def test_the_report_of_an_energy_only_campaign_shows_the_three_sections(campaign, tmp_path):
    root, truth = campaign
    out = write_report(root, tmp_path / "report.html", inspect=False, figures_dir=tmp_path / "figures")
    page = out.read_text(encoding="utf-8")
    for ident in ("class-errors", "selection", "threshold"):
        section = re.search(rf'<section id="{ident}">(.*?)</section>', page, re.S).group(1)
        assert "not available" not in section and "<img" in section, section[:400]
    for name in ("class_errors", "picks_by_class", "pick_sizes", "threshold_study"):
        assert (tmp_path / "figures" / f"{name}.png").stat().st_size > 1000

    last = ITERS - 1  # every strategy finished it
    errors = _table(page, "class-errors")
    assert {(r["class"], r["strategy"]) for r in errors} == {(c, s) for c in TEST_CLASSES for s in ("qs1", "random")}
    assert not any("force" in k for r in errors for k in r)  # energies only
    for r in errors:
        for metric in ("energy_rmse_kcal/mol", "n_energy_error_above_1_kcal/mol"):
            want = np.mean([truth.metrics[(r["strategy"], s, last)]["per_class"][r["class"]][metric] for s in SEEDS])
            assert float(r[metric]) == pytest.approx(want, rel=1e-12), (r, metric)
    ev = {(r["class"], r["strategy"]): r for r in _table(page, "class-errors-ev")}
    assert float(ev[("A", "qs1")]["energy_maxe_eV"]) == pytest.approx(
        np.mean([truth.metrics[("qs1", s, last)]["per_class"]["A"]["energy_maxe_eV"] for s in SEEDS]), rel=1e-12)

    ratios = {(r["class"], r["metric"]): r for r in _table(page, "class-ratios")}
    assert set(ratios) == {(c, f"energy_{s}_kcal/mol") for c in TEST_CLASSES for s in ("mae", "rmse", "maxe")}
    per_seed = [truth.metrics[("random", s, last)]["per_class"]["B"]["energy_maxe_kcal/mol"]
                / truth.metrics[("qs1", s, last)]["per_class"]["B"]["energy_maxe_kcal/mol"] for s in SEEDS]
    row = ratios[("B", "energy_maxe_kcal/mol")]
    assert float(row["ratio"]) == pytest.approx(np.exp(np.mean(np.log(per_seed))), rel=1e-12)
    assert float(row["low"]) < float(row["ratio"]) < float(row["high"]) and row["n"] == "2"

    picks = {(r["strategy"], int(r["iteration"])): r for r in _table(page, "picks-by-class")}
    assert set(picks) == {(s, i) for s in ("qs1", "random") for i in range(last)}
    for (strategy, it), r in picks.items():
        share = np.mean([Counter(truth.classes[truth.picked[(strategy, s, it)]])["B"] / N_PICK for s in SEEDS])
        assert float(r["share_B"]) == pytest.approx(share, rel=1e-12)
    study = _table(page, "threshold-study")
    assert {(r["strategy"], r["kind"], r["used"]) for r in study} == {("qs1", "median", "yes"), ("qs1", "mean", "no")}


def test_with_forces_the_class_columns_are_energies_then_forces_and_the_common_iteration_is_the_shortest_run():
    from oedal.report.classes import class_errors, class_metrics, class_names, common_iteration

    def row(strategy: str, seed: int, it: int, scale: float) -> dict:
        out = {"strategy": strategy, "seed": seed, "iteration": it, "n_train": 10 + it}
        for name in ("W", "Be_W"):  # a class name with "_" in it
            out[f"per_class_{name}_n_structures"] = 4
            for kind, unit in (("energy", "kcal/mol"), ("forces", "kcal/mol/A")):
                for k, stat in enumerate(("mae", "rmse", "maxe")):
                    out[f"per_class_{name}_{kind}_{stat}_{unit}"] = scale * (k + 1)
            out[f"per_class_{name}_n_max_force_component_error_above_1_kcal/mol/A"] = seed + 1
        return out

    rows = [row("qs3", s, i, 1.0 + s) for s in (0, 1) for i in range(3)] + [row("random", 0, i, 2.0) for i in range(2)]
    classes = class_names(rows)
    assert classes == ["Be_W", "W"] and common_iteration(rows) == 1
    metrics = class_metrics(rows, classes)
    assert metrics == ["energy_mae_kcal/mol", "energy_rmse_kcal/mol", "energy_maxe_kcal/mol",
                       "forces_mae_kcal/mol/A", "forces_rmse_kcal/mol/A", "forces_maxe_kcal/mol/A",
                       "n_max_force_component_error_above_1_kcal/mol/A"]  # no energy count in these rows
    errors = {(r["class"], r["strategy"]): r for r in class_errors(rows, classes, 1, metrics)}
    assert errors[("W", "qs3")]["seeds"] == 2 and errors[("W", "qs3")]["forces_rmse_kcal/mol/A"] == 3.0  # (2 + 4) / 2
    assert errors[("Be_W", "qs3")]["n_max_force_component_error_above_1_kcal/mol/A"] == 1.5
    assert errors[("W", "random")]["n_train"] == 11 and errors[("W", "random")]["seeds"] == 1
