"""Labels to 1 kcal/mol/Å: exploration (unbiased and biased walkers) against pool campaigns on one common test set,
over several seeds, counted in labels and in every oracle call. Not a test.

    python benchmarks/explore_campaigns.py run    [--arms a-md-bias pool] [--seeds 0 1 2] [--results results]
    python benchmarks/explore_campaigns.py report [--arms ...] [--results results] [--target 1.0]

Arms (the same GM-NN, training, batch of 30, label protocol and GFN2-xTB oracle; configs under config/):

* ``a``: exploration from one ethanol geometry, OED trigger + greedy QS1 (bench_explore.yaml);
* ``a-md``: the same, the 40 initial structures from a short xTB MD (+ bench_explore_md.yaml);
* ``a-md-bias``: as ``a-md``, the walkers biased toward what the model does not know (+ bench_explore_bias.yaml,
  explore.bias_strength A = 0.25 eV, DESIGN §13);
* ``a-force``: as ``a``, bands in eV/Å (+ bench_explore_force.yaml);
* ``pool``: greedy QS1 and random from a 2,000-frame 1000 K xTB MD pool (bench_pool.yaml); ``pool-random``: its
  random run alone (the same campaign).

Every model is tested on one common, independent 1000 K xTB MD test set (500 frames, 20 steps apart, its own
seed; dataset.transfer). ``run`` runs the arms as two queues, one core each (``--cores 1``: the CPU per job is the
wall time). ``report`` prints per arm, strategy and seed the curve labels spent: force MAE, the labels at which the
force MAE first reaches ``--target``, their mean with a 95 % t interval, the oracle calls (labels plus the xTB MD
steps the arm needed: the pool's trajectory, the short MD of ``a-md``'s initial set), each arm against pool
random at the most labels every seed of both reached (log-log interpolation, Welch interval of the ratio of
geometric means: the arms are different campaigns, so their seeds do not pair), and the cycle's wall-time split.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from oedal.campaign.statistics import FORCE_METRICS

ROOT = Path(__file__).resolve().parents[1]
TEST = ROOT / "results" / "bench_explore_data" / "xtb_1000K_test.h5"  # the common test set (dataset.transfer)
F_MAE = FORCE_METRICS[0]
STEPS = {"MD (walkers)": ("explore",), "scoring + selection": ("score", "select"), "training": ("train",),
         "labeling (xTB)": ("label",)}  # job kinds (oedal.report.cost.job_kind) by prefix
EXPLORE, MD, BIAS, FORCE, POOL = (f"config/{n}.yaml" for n in ("bench_explore", "bench_explore_md",
                                                                 "bench_explore_bias", "bench_explore_force",
                                                                 "bench_pool"))
ARMS = {  # name: (what it is, its config files in order, its campaign name, its strategies)
    "a": ("(a) exploration, OED trigger + greedy QS1", [EXPLORE], "bench_explore", ["qs1-greedy"]),
    "a-md": ("(a′) the same, initial set from a short xTB MD", [EXPLORE, MD], "bench_explore_md", ["qs1-greedy"]),
    "a-md-bias": ("(a′b) as (a′), walkers biased toward uncertainty (A = 0.25 eV)", [EXPLORE, MD, BIAS],
                  "bench_explore_bias", ["qs1-greedy"]),
    "a-force": ("(a″) as (a), bands in eV/Å (calibrated force error)", [EXPLORE, FORCE], "bench_explore_force",
                ["qs1-greedy"]),
    "pool": ("(b) pool, greedy QS1 / (c) pool, random", [POOL], "bench_pool", ["qs1-greedy", "random"]),
    "pool-random": ("(c) pool, random", [POOL], "bench_pool", ["random"]),
}
BASELINE = ("bench_pool", "random")  # what every run is compared with at equal labels


def common_test_set() -> None:
    """The independent 1000 K GFN2-xTB MD test set every arm is evaluated on (500 frames, 20 steps apart,
    its own random stream: neither the walkers nor the pool trajectory)."""
    if not TEST.exists():
        TEST.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, "-m", "oedal", "sample", "--n-frames", "500", "--interval", "20", "--seed",
                        "101", "--labels", "--threads", "1", "--out", str(TEST)], check=True)


def arm_config(arm: str, a: argparse.Namespace) -> Path:
    """The arm's config files merged, with its strategies, the seeds and results_dir, written to
    RESULTS/ARM.yaml (kept: what ran)."""
    import yaml

    config = {**merged_config(ARMS[arm][1]), "results_dir": str(a.results), "seeds": a.seeds,
              "strategies": ARMS[arm][3]}
    if config["strategies"] == ["random"]:
        config.pop("score")  # read by scores alone: the config check refuses it otherwise
    path = a.results / f"{arm}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config))
    return path


def run(a: argparse.Namespace) -> None:
    """Each arm one Snakemake call with every seed, on one core; two calls at a time, in the order given."""
    common_test_set()
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE"}

    def one(arm: str) -> None:
        subprocess.run([sys.executable, "-m", "snakemake", "--cores", "1", "--configfile", str(arm_config(arm, a))],
                       cwd=ROOT, env=env, check=True)

    with ThreadPoolExecutor(2) as pool:
        list(pool.map(one, a.arms))
    report(a)


# ---- reading the campaigns -----------------------------------------------------------------------------------
def curve(run_dir: Path) -> list[dict]:
    """Labels spent and the common test set's metrics of every finished iteration of one run (read from the
    iteration folders, so that a campaign still running can be looked at)."""
    rows = []
    for d in sorted(run_dir.glob("iter_*")):
        metrics = d / f"metrics_transfer_{TEST.stem}.json"
        if metrics.exists() and (d / "status.json").exists():
            rows.append({**json.loads(metrics.read_text()), **json.loads((d / "status.json").read_text())})
    return rows


def labels_to_reach(rows: list[dict], target: float) -> float | None:
    """Labels spent when the common test set's force MAE first reaches ``target`` kcal/mol/Å (None: never)."""
    return next((float(r["labels_spent"]) for r in rows if r[F_MAE] <= target), None)


def merged_config(files: list[str]) -> dict:
    """The arm's config files merged by Snakemake's own merge of several --configfile (later keys win,
    recursively)."""
    import yaml
    from snakemake.utils import update_config

    out: dict = {}
    for f in files:
        update_config(out, yaml.safe_load((ROOT / f).read_text()))
    return out


def md_steps(arm: str, campaign: Path) -> int:
    """xTB MD steps the arm needs beyond its labels, each an oracle call: the pool's trajectory (its store's
    ``sampling`` attribute: equilibration + frames × interval), or the short MD of an ``initial: md`` set
    ((n_train + n_valid) × initial_interval, no equilibration). The campaign's own test-set MD is not counted:
    it only measures."""
    from oedal.campaign.settings import ExploreSettings
    from oedal.data.store import StoreReader

    config = merged_config(ARMS[arm][1])
    if config["dataset"]["source"] == "sample":
        with StoreReader(campaign / "data" / "source.h5") as reader:
            md = json.loads(reader.attrs["sampling"])
        return int(md["equilibration_steps"] + md["n_frames"] * md["interval"])
    explore = config.get("explore", {})
    if explore.get("initial", "rattle") == "rattle":
        return 0
    interval = explore.get("initial_interval", ExploreSettings.model_fields["initial_interval"].default)
    return (config["split"]["n_train"] + config["split"]["n_valid"]) * interval


def cycle_seconds(iteration: Path) -> dict[str, float]:
    """Wall seconds of one AL cycle's jobs by kind, from Snakemake's benchmark files of the iteration (column
    ``s``: each job runs one thread on its own core, so this is its CPU time; the files' ``cpu_time`` is sampled
    every 30 s and misses a job's tail)."""
    from oedal.report.cost import job_kind, read_benchmark

    out = dict.fromkeys(STEPS, 0.0)
    for f in (iteration / "benchmarks").glob("*.tsv"):
        for kind, prefixes in STEPS.items():
            if job_kind(f).startswith(prefixes):
                out[kind] += read_benchmark(f).get("s", 0.0)
    return out


# ---- the report --------------------------------------------------------------------------------------------
def t_interval(values: list[float]) -> str:
    """mean (95 % t interval) of ``values``; the mean alone for one value."""
    from scipy import stats

    if len(values) < 2:
        return f"{np.mean(values):.0f}"
    low, high = stats.t.interval(0.95, len(values) - 1, loc=np.mean(values), scale=stats.sem(values))
    return f"{np.mean(values):.0f} (95 % {low:.0f}–{high:.0f})"


def unpaired_ratio(x: list[float], y: list[float]) -> str:
    """Geometric mean of ``x`` over that of ``y`` with the 95 % Welch interval of the difference of the logs."""
    from scipy import stats

    lx, ly = np.log(x), np.log(y)
    ratio = float(np.exp(lx.mean() - ly.mean()))
    if min(len(x), len(y)) < 2:
        return f"×{ratio:.2f}"
    ci = stats.ttest_ind(lx, ly, equal_var=False).confidence_interval(0.95)
    return f"×{ratio:.2f} (95 % {np.exp(ci.low):.2f}–{np.exp(ci.high):.2f})"


def runs_of(a: argparse.Namespace) -> dict[tuple[str, str], dict[int, list[dict]]]:
    """(arm, strategy) → seed → its curve, for every run with at least one evaluated model (a run that two
    arms share, once)."""
    out, seen = {}, set()
    for arm in a.arms:
        for strategy in ARMS[arm][3]:
            if (ARMS[arm][2], strategy) in seen:
                continue
            seen.add((ARMS[arm][2], strategy))
            curves = {s: curve(a.results / ARMS[arm][2] / strategy / f"seed{s}") for s in a.seeds}
            if any(curves.values()):
                out[arm, strategy] = {s: c for s, c in curves.items() if c}
    return out


def print_run(a: argparse.Namespace, arm: str, strategy: str, curves: dict[int, list[dict]]) -> None:
    """One run's curves, labels and oracle calls to the target, and its cycle split."""
    campaign = a.results / ARMS[arm][2]
    steps = md_steps(arm, campaign)
    print(f"{ARMS[arm][0]}: {strategy}")
    reached = {}
    for seed, rows in curves.items():
        n = labels_to_reach(rows, a.target)
        best = min(rows, key=lambda r: r[F_MAE])
        print(f"  seed {seed}: " + "  ".join(f"{r['labels_spent']}:{r[F_MAE]:.2f}" for r in rows)
              + (f"   → {a.target:g} at {n:.0f} labels" if n else
                 f"   → {a.target:g} not reached (best {best[F_MAE]:.2f} at {best['labels_spent']})"))
        if n:
            reached[seed] = n
    if reached:
        print(f"  to {a.target:g} kcal/mol/Å ({len(reached)} of {len(curves)} seeds): labels "
              f"{t_interval(list(reached.values()))}; oracle calls {t_interval([n + steps for n in reached.values()])}"
              f" (labels + {steps} xTB MD steps)")
    cycles = [cycle_seconds(d) for s in curves
              for d in sorted((campaign / strategy / f"seed{s}").glob("iter_*"))[1:] if (d / "benchmarks").is_dir()]
    cycles = [c for c in cycles if c["training"] > 0]
    if cycles:
        total = sum(sum(c.values()) for c in cycles)
        print(f"  per AL cycle (mean of {len(cycles)}, one thread each): " + ", ".join(
            f"{k} {np.mean([c[k] for c in cycles]):.0f} s ({100 * sum(c[k] for c in cycles) / total:.0f} %)"
            for k in STEPS))


def against(a: argparse.Namespace, runs: dict, baseline: tuple[str, str]) -> None:
    """Each other run's force MAE over the ``baseline`` run's (campaign, strategy) at the most labels every seed of
    both reached, and its labels to the target over the baseline's where every seed reached it."""
    from oedal.campaign.statistics import interpolate_loglog

    base = next((c for (arm, strategy), c in runs.items() if (ARMS[arm][2], strategy) == baseline), None)
    if not base:
        return
    name = next(arm for arm in ARMS if ARMS[arm][2] == baseline[0])
    for (arm, strategy), curves in runs.items():
        if (ARMS[arm][2], strategy) == baseline or (baseline != BASELINE and (ARMS[arm][2], strategy) == BASELINE):
            continue
        common = min(max(r["labels_spent"] for r in rows) for rows in [*curves.values(), *base.values()])

        def at(rows: list[dict]) -> float:
            x = np.array([r["labels_spent"] for r in rows], dtype=float)
            y = np.array([r[F_MAE] for r in rows])
            return float(interpolate_loglog(np.array([common], dtype=float), x, y)[0])

        print(f"{arm} {strategy} over {name} {baseline[1]}, force MAE at {common} labels: "
              f"{unpaired_ratio([at(c) for c in curves.values()], [at(c) for c in base.values()])} "
              f"({len(curves)} vs {len(base)} seeds; < 1: fewer errors)")
        mine = [labels_to_reach(c, a.target) for c in curves.values()]
        theirs = [labels_to_reach(c, a.target) for c in base.values()]
        if None not in mine + theirs:
            print(f"{arm} {strategy} over {name} {baseline[1]}, labels to {a.target:g} kcal/mol/Å: "
                  f"{unpaired_ratio(mine, theirs)} (< 1: fewer labels)")


def report(a: argparse.Namespace) -> None:
    from oedal.data.store import read_store

    print(f"ethanol, GFN2-xTB labels; test: {len(read_store(TEST).n_atoms)} frames of an independent 1000 K xTB MD; "
          f"labels spent: force MAE kcal/mol/Å")
    runs = runs_of(a)
    for (arm, strategy), curves in runs.items():
        print_run(a, arm, strategy, curves)
    against(a, runs, BASELINE)
    against(a, runs, ("bench_explore_md", "qs1-greedy"))  # the bias against the same walkers unbiased


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("what", choices=["run", "report"])
    p.add_argument("--arms", nargs="+", choices=list(ARMS), default=["a-md-bias", "pool-random", "a-md"],
                   help="in the order they start (two at a time)")
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--results", type=Path, default=ROOT / "results", help="the campaigns' results_dir")
    p.add_argument("--target", type=float, default=1.0, help="kcal/mol/Å of force MAE on the common test set")
    a = p.parse_args()
    {"run": run, "report": report}[a.what](a)


if __name__ == "__main__":
    main()
