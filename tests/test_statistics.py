"""Paired strategy comparisons: the interval maths, its coverage, interpolation at equal labels."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from oedal.campaign.statistics import compare_strategies, interpolate_loglog, paired_ratios, ratio_interval, verdict


def test_ratio_interval_is_the_t_interval_of_the_log_ratios():
    r = [1.1, 1.25, 1.3]
    logs = np.log(r)
    half = stats.t.ppf(0.975, 2) * logs.std(ddof=1) / math.sqrt(3)
    est = ratio_interval(r)
    assert est.ratio == pytest.approx(math.exp(logs.mean()))
    assert (est.low, est.high) == pytest.approx((math.exp(logs.mean() - half), math.exp(logs.mean() + half)))
    assert est.p_value == pytest.approx(stats.ttest_1samp(logs, 0.0).pvalue)
    one = ratio_interval([1.2])
    assert one.n == 1 and one.ratio == pytest.approx(1.2) and math.isnan(one.low)


def test_interval_covers_an_injected_ratio_as_often_as_its_level():
    rng = np.random.default_rng(1)
    truth, trials = 1.25, 2000
    hits = sum(lo <= truth <= hi for lo, hi in
               (ratio_interval(truth * np.exp(rng.normal(0, 0.15, 3)))[1:3] for _ in range(trials)))
    assert 0.93 <= hits / trials <= 0.97  # binomial sd at 0.95 over 2000 trials: 0.005


def curve(strategy, seed, a, n, labels):
    return [{"strategy": strategy, "seed": seed, "iteration": i, "n_train": n_, "labels_spent": l_,
             "forces_rmse_kcal/mol/A": a * n_ ** -0.5, "stopped": False} for i, (n_, l_) in enumerate(zip(n, labels))]


def test_paired_ratios_at_equal_size_and_at_equal_labels():
    n = np.array([100, 150, 200, 250])
    rows = []
    for seed, noise in enumerate((1.0, 1.1, 0.95)):
        rows += curve("random", seed, 10 * noise, n, n + 300)
        rows += curve("qs1-greedy", seed, 10 * noise / 1.2, n, 2 * n)  # 1.2× better, but pays twice the labels
    at_size = paired_ratios(rows, "forces_rmse_kcal/mol/A", "qs1-greedy")
    assert [r["x_value"] for r in at_size] == list(n)
    assert all(r["ratio"] == pytest.approx(1.2) and r["n"] == 3 for r in at_size)
    at_labels = paired_ratios(rows, "forces_rmse_kcal/mol/A", "qs1-greedy", x="labels_spent")
    # random has labels n+300; qs1-greedy reaches those labels at n' = (n+300)/2 training structures
    for r in at_labels:
        n_equal = r["x_value"] / 2
        expected = (r["x_value"] - 300) ** -0.5 / (n_equal ** -0.5 / 1.2)
        assert r["ratio"] == pytest.approx(expected, rel=1e-9)
    assert len(at_labels) == 3  # random's last point (550 labels) lies beyond qs1-greedy's range (200–500)


def test_interpolation_is_exact_for_power_laws_and_nan_outside():
    x = np.array([10.0, 20.0, 40.0])
    y = 3.0 * x ** -0.7
    np.testing.assert_allclose(interpolate_loglog(np.array([15.0, 30.0]), x, y), 3.0 * np.array([15.0, 30.0]) ** -0.7)
    assert np.isnan(interpolate_loglog(np.array([5.0, 50.0]), x, y)).all()


def test_compare_and_verdict_sentences():
    n = np.array([100, 200])
    rows = []
    for seed, noise in enumerate((1.0, 1.02, 0.99)):
        rows += curve("random", seed, 10, n, n)
        rows += curve("qs1-greedy", seed, 10 / (1.3 * noise), n, n)
        rows += curve("qs1-top", seed, 10 * (1.0 + 0.2 * (seed - 1)), n, n)  # no consistent effect
    table = compare_strategies(rows, metrics=["forces_rmse_kcal/mol/A"], xs=["n_train"])
    greedy = next(r for r in table if r["strategy"] == "qs1-greedy")
    top = next(r for r in table if r["strategy"] == "qs1-top")
    assert "exceeds the seed-to-seed spread" in verdict(greedy) and "1.30× lower" in verdict(greedy)
    assert "within the seed-to-seed spread" in verdict(top)


def test_verdict_lines_compare_at_the_last_point_and_warn_about_wall_clock_cuts():
    from oedal.campaign.statistics import verdict_lines

    n = np.array([100, 200])
    rows = []
    for seed, noise in enumerate((1.0, 1.05, 0.97)):
        rows += curve("random", seed, 10, n, n)
        rows += curve("qs1-greedy", seed, 10 / (1.2 * noise), n, n)
    lines = verdict_lines(rows, metrics=["forces_rmse_kcal/mol/A"])
    assert lines[0].startswith("qs1-greedy vs random at n train 200: forces rmse 1.") and "exceeds" in lines[0]
    assert lines[1].startswith("qs1-greedy vs random at labels spent 200")
    assert not any(line.startswith("WARNING") for line in lines)
    rows[3]["training_stopped"] = "time"
    assert verdict_lines(rows, metrics=["forces_rmse_kcal/mol/A"])[-1].startswith("WARNING: 1 training(s) stopped")
    assert verdict_lines([r for r in rows if r["strategy"] != "random"])[0] == "no random runs: nothing to compare with"


def test_the_verdict_of_an_explorer_is_at_the_most_labels_every_seed_reached():
    """Exploration spends a different number of labels per seed (here 100, 85, 110) and the random run on the MD
    pool 40, 60, ... 120 in all: the verdict compares where all three seeds pair (80), the explorer's error
    interpolated log-log there, and not at 100 (two seeds) or 120 (none)."""
    from oedal.campaign.statistics import verdict_records

    labels = np.array([40, 60, 80, 100, 120])
    reached = (100, 85, 110)
    rows = []
    for seed, (last, noise) in enumerate(zip(reached, (1.0, 1.1, 0.9))):
        rows += curve("random", seed, 10 * noise, labels - 10, labels)
        mine = np.array([40, 52, 70, last])
        rows += curve("qs1-greedy", seed, 10 * noise / 1.25, mine - 10, mine)
    verdict_at = [v for v in verdict_records(rows, metrics=["forces_rmse_kcal/mol/A"]) if v.x == "labels_spent"][0]
    assert (verdict_at.x_value, verdict_at.n) == (80.0, 3)
    # brute force: error a·(l − 10)^−½ at l = 80 for random; the explorer's straight line in log–log between its
    # points around 80 (70 and the seed's last), at 80
    ratios = []
    for seed, (last, noise) in enumerate(zip(reached, (1.0, 1.1, 0.9))):
        x0, x1 = 70.0, float(last)
        y0, y1 = (10 * noise / 1.25 * (x - 10) ** -0.5 for x in (x0, x1))
        at = math.exp(math.log(y0) + (math.log(y1) - math.log(y0)) * (math.log(80) - math.log(x0))
                      / (math.log(x1) - math.log(x0)))
        ratios.append(10 * noise * 70 ** -0.5 / at)
    assert verdict_at.ratio == pytest.approx(math.exp(np.mean(np.log(ratios))), rel=1e-12)


def seeded_rows(rng, data_seeds: int, k: int, effect: float, training_sd: float, data_sd: float = 0.3) -> list[dict]:
    """One row per (strategy, data seed, training seed): log error = the data seed's difficulty (shared by
    both strategies: paired) − log(effect) for qs1 + a training seed's own noise (sd ``training_sd``)."""
    rows = []
    for seed in range(data_seeds):
        hard = rng.normal(0, data_sd)
        for strategy, gain in (("random", 1.0), ("qs1-top", effect)):
            for t in range(k):
                error = 2.0 * math.exp(hard + rng.normal(0, training_sd)) / gain
                rows.append({"strategy": strategy, "seed": seed, "training_seed": t, "iteration": 5, "n_train": 305, "labels_spent": 305,
                             "forces_maxe_kcal/mol/A": error, "transfer_x_forces_maxe_kcal/mol/A": 3 * error})
    return rows


def test_training_seed_columns_are_the_geometric_mean_and_the_sd_of_the_logs():
    from oedal.campaign.statistics import training_seed_columns

    models = [{"forces_mae_kcal/mol/A": 1.0, "energy_mae_kcal/mol": 0.5},
              {"forces_mae_kcal/mol/A": 4.0, "energy_mae_kcal/mol": math.nan}]
    cols = training_seed_columns(models, ["forces_mae_kcal/mol/A", "energy_mae_kcal/mol"])
    assert cols["seeds_n"] == 2 and cols["seeds_forces_mae_kcal/mol/A"] == pytest.approx(2.0)
    assert cols["seeds_sdlog_forces_mae_kcal/mol/A"] == pytest.approx(math.log(4.0) / math.sqrt(2))
    assert "seeds_energy_mae_kcal/mol" not in cols  # one model without it: no mean of a part


def test_averaging_training_seeds_recovers_an_injected_gain_and_the_training_noise():
    """K models per selected set: the ratio of the geometric means recovers the injected gain with an
    interval about √K narrower than one model per set, and the pooled spread recovers the injected
    training-seed sd; the spread is not itself compared as a metric."""
    from oedal.campaign.statistics import average_training_seeds, metrics_in, training_seed_spread, verdict_lines

    rng = np.random.default_rng(7)
    k, effect, sd = 4, 1.3, 0.25
    rows = seeded_rows(rng, data_seeds=40, k=k, effect=effect, training_sd=sd)
    mean = average_training_seeds(rows)
    assert len(mean) == 80 and all(r["seeds_n"] == k and "training_seed" not in r for r in mean)
    assert training_seed_spread(mean, "forces_maxe_kcal/mol/A") == pytest.approx(sd, rel=0.12)
    assert "seeds_sdlog_forces_maxe_kcal/mol/A" not in metrics_in(mean)
    assert "seeds_transfer_x_forces_maxe_kcal/mol/A" in metrics_in(mean)
    one = [r for r in rows if r["training_seed"] == 0]
    single = paired_ratios(one, "forces_maxe_kcal/mol/A", "qs1-top")[-1]
    averaged = paired_ratios(mean, "seeds_forces_maxe_kcal/mol/A", "qs1-top")[-1]
    assert averaged["ratio"] == pytest.approx(effect, rel=0.06)
    width = lambda e: math.log(e["high"] / e["low"])  # noqa: E731
    assert width(averaged) / width(single) == pytest.approx(1 / math.sqrt(k), rel=0.35)
    lines = verdict_lines(mean)
    assert lines[0].startswith("qs1-top vs random at n train 305: forces maxe (geometric mean over training seeds)")
    assert "exceeds the seed-to-seed spread" in lines[0]
    spread = math.exp(training_seed_spread(mean, "forces_maxe_kcal/mol/A"))
    assert lines[-1].startswith("training seeds: 4 models per selected set") and f"forces maxe ×{spread:.2f}" in lines[-1]


def test_without_a_gain_the_averaged_comparison_finds_none():
    """Training noise alone (no selection effect): the interval of the averaged ratio holds 1."""
    from oedal.campaign.statistics import average_training_seeds

    est = paired_ratios(average_training_seeds(seeded_rows(np.random.default_rng(3), 8, 3, 1.0, 0.4)),
                        "seeds_forces_maxe_kcal/mol/A", "qs1-top")[-1]
    assert est["low"] < 1 < est["high"]
