"""Selection or training noise? Retrain the selected sets of a finished campaign with several training
seeds and compare strategies on the mean over those seeds. Not a test.

    python benchmarks/bench_retrain.py train  results/ethanol_gmnn_cpu [--iteration 5] [--training-seeds 3]
                                              [--strategies qs1-top random qs2-top] [--jobs 2]
    python benchmarks/bench_retrain.py report results/ethanol_gmnn_cpu [--iteration 5]

``train``: for every strategy and seed of the campaign, the training set of ``iter_NNN`` (what the
strategy had selected by then) and its validation set are trained on from scratch with the
campaign's own model and training settings (``campaign.json``: epochs, cosine schedule), once per
training seed (1000 + t; the campaign's own models used other seeds and, with warm start, another
protocol, so they are not mixed in); every model is evaluated on the seed's test set and on the
campaign's transfer test sets. Each job is an ``oedal train`` + ``oedal evaluate`` on one core; a
job whose metrics file exists is skipped, so a killed run resumes. Files:
``RESULTS/CAMPAIGN/retrain/iter_NNN/{strategy}_seed{s}_t{t}[.pt|.json|_transfer_NAME.json]``.

``report``: the summary rows of those models (one row per strategy, seed and training seed), then,
per test set and force metric, (1) the ratio random/strategy of one model per selected set (training
seed t = 0 only, as a campaign without training replicas sees it) and (2) of the geometric mean over
the training seeds (oedal.campaign.statistics.average_training_seeds), both with 95 % t intervals
over the data seeds, and (3) the training-seed spread: the standard deviation of log(error) between
models trained on the same set (statistics.training_seed_spread). Printed, and written to
``retrain/iter_NNN/comparison.csv``.
"""

from __future__ import annotations

import argparse
import concurrent.futures as futures
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
OEDAL = [sys.executable, "-m", "oedal"]
from oedal.campaign.statistics import FORCE_METRICS as FORCES  # noqa: E402  (after the path insert)


def campaign_settings(folder: Path) -> dict:
    return json.loads((folder / "campaign.json").read_text())["campaign"]


def runs(folder: Path, strategies: list[str] | None) -> list[tuple[str, int]]:
    c = campaign_settings(folder)
    return [(s, seed) for s in (strategies or c["strategies"]) for seed in c["seeds"]]


def transfer_sets(folder: Path) -> dict[str, Path]:
    return {p.stem.removeprefix("transfer_"): p for p in sorted((folder / "data").glob("transfer_*.h5"))}


def job(folder: Path, out: Path, strategy: str, seed: int, t: int, iteration: int) -> str:
    """Train one model on the run's iteration set with training seed t, then evaluate it: its name."""
    c = campaign_settings(folder)
    run = folder / strategy / f"seed{seed}"
    it = run / f"iter_{iteration:03d}"
    stem = out / f"{strategy}_seed{seed}_t{t}"
    model = stem.with_suffix(".pt")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE"}
    if not model.exists():
        training = {**c["training"], "seed": 1000 + t, "max_minutes": None}
        subprocess.run([*OEDAL, "train", "--train", str(it / "train.h5"), "--valid", str(it / "valid.h5"),
                        "--out", str(model), "--settings", json.dumps(training),
                        "--model-settings", json.dumps(c["model"]), "--device", "cpu", "--threads", "1",
                        "--no-uncertainty"], check=True, env=env, stdout=subprocess.DEVNULL,
                       stderr=open(stem.with_suffix(".log"), "w"))
    sets = {"": run / "test.h5", **{f"_transfer_{k}": v for k, v in transfer_sets(folder).items()}}
    for suffix, data in sets.items():
        metrics = stem.parent / f"{stem.name}{suffix}.json"
        if not metrics.exists():
            subprocess.run([*OEDAL, "evaluate", "--model", str(model), "--data", str(data), "--out", str(metrics),
                            "--device", "cpu", "--threads", "1"], check=True, env=env,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return stem.name


def train(args: argparse.Namespace) -> None:
    out = args.folder / "retrain" / f"iter_{args.iteration:03d}"
    out.mkdir(parents=True, exist_ok=True)
    # training seed first: an interrupted run still has t = 0, 1, ... for every selected set
    todo = [(s, seed, t) for t in range(args.training_seeds) for s, seed in runs(args.folder, args.strategies)
            if not (out / f"{s}_seed{seed}_t{t}.json").exists()]
    print(f"{len(todo)} trainings to run on {args.jobs} cores -> {out}", flush=True)
    start = time.time()
    with futures.ProcessPoolExecutor(args.jobs) as pool:
        pending = [pool.submit(job, args.folder, out, s, seed, t, args.iteration) for s, seed, t in todo]
        for k, done in enumerate(futures.as_completed(pending), 1):
            print(f"[{k}/{len(todo)}] {done.result()} ({(time.time() - start) / 60:.1f} min)", flush=True)


def rows(folder: Path, iteration: int) -> list[dict]:
    """Summary-like rows, one per (strategy, seed, training seed), with the test and transfer errors."""
    out = folder / "retrain" / f"iter_{iteration:03d}"
    found = []
    for path in sorted(out.glob("*_seed*_t*.json")):
        name = path.stem
        if "_transfer_" in name:
            continue
        strategy, rest = name.rsplit("_seed", 1)
        seed, t = rest.split("_t")
        metrics = json.loads(path.read_text())
        row = {"strategy": strategy, "seed": int(seed), "training_seed": int(t), "iteration": iteration,
               "n_train": iteration, **{m: metrics[m] for m in FORCES}}
        for extra in out.glob(f"{name}_transfer_*.json"):
            prefix = extra.stem.removeprefix(name + "_")
            row.update({f"{prefix}_{m}": json.loads(extra.read_text())[m] for m in FORCES})
        found.append(row)
    return found


def report(args: argparse.Namespace) -> None:
    from oedal.campaign import statistics

    found = [r for r in rows(args.folder, args.iteration) if not args.strategies or r["strategy"] in args.strategies]
    if not found:
        raise SystemExit(f"no retrained models under {args.folder}/retrain: run `train` first")
    metrics = statistics.metrics_in(found, FORCES)
    one = [{k: v for k, v in r.items() if k != "training_seed"} for r in found if r["training_seed"] == 0]
    mean = statistics.average_training_seeds(found)
    k = sorted({r["training_seed"] for r in found})
    lines, table = [], []
    print(f"{args.folder.name}, iteration {args.iteration}: {len({(r['strategy'], r['seed']) for r in found})} "
          f"selected sets × training seeds {k}; ratio = error(random)/error(strategy), 95 % t interval over data seeds")
    for metric in metrics:
        spread = statistics.training_seed_spread(mean, metric)
        for strategy in sorted({r["strategy"] for r in found} - {"random"}):
            for label, data, column in (("one model", one, metric), (f"mean of {len(k)}", mean, "seeds_" + metric)):
                p = statistics.paired_ratios(data, column, strategy, "random", "n_train")
                if not p:
                    continue
                e = p[-1]
                table.append({"metric": metric, "strategy": strategy, "models": label, "ratio": e["ratio"],
                              "low": e["low"], "high": e["high"], "p_value": e["p_value"], "seeds": e["n"],
                              "training_seed_sd_log": spread})
                lines.append(f"{metric:55s} {strategy:8s} {label:10s} {e['ratio']:.3f} [{e['low']:.3f}–{e['high']:.3f}]"
                             f" p={e['p_value']:.3f} n={e['n']}   training-seed sd(log) {spread:.3f}")
    print("\n".join(lines))
    import csv

    with open(args.folder / "retrain" / f"iter_{args.iteration:03d}" / "comparison.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(table[0]))
        writer.writeheader()
        writer.writerows(table)
    _print_per_run(args.folder, args.iteration, found, metrics)


def _campaign_model(folder: Path, strategy: str, seed: int, iteration: int, metric: str) -> float:
    """The campaign's own model of that iteration (its protocol, e.g. the warm-started chain): ``metric``."""
    d = folder / strategy / f"seed{seed}" / f"iter_{iteration:03d}"
    prefix, _, base = metric.partition("_forces_") if metric.startswith("transfer_") else ("", "", "")
    path = d / (f"metrics_{prefix}.json" if prefix else "metrics.json")
    key = f"forces_{base}" if prefix else metric
    return json.loads(path.read_text())[key] if path.exists() else math.nan


def _print_per_run(folder: Path, iteration: int, found: list[dict], metrics: list[str]) -> None:
    """Each selected set's errors over its training seeds: min–max, to see the noise beside the effect,
    and the campaign's own model of that set."""
    print("\nper selected set, min–max over training seeds (and the campaign's own model):")
    for metric in metrics:
        print(metric)
        own = []  # the campaign's model / the geometric mean of the retrained ones, per set
        for s, seed in sorted({(r["strategy"], r["seed"]) for r in found}):
            v = [r[metric] for r in found if r["strategy"] == s and r["seed"] == seed]
            mean, campaign = math.exp(sum(map(math.log, v)) / len(v)), _campaign_model(folder, s, seed, iteration, metric)
            own.append(campaign / mean)
            print(f"  {s:8s} seed {seed}: {min(v):7.3f}–{max(v):7.3f} (geometric mean {mean:7.3f}, {len(v)} models; "
                  f"campaign's model {campaign:7.3f})")
        print(f"  campaign's model / retrained mean: ×{math.exp(sum(map(math.log, own)) / len(own)):.3f} "
              f"(sets: {min(own):.2f}–{max(own):.2f})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("mode", choices=("train", "report"))
    ap.add_argument("folder", type=Path, help="a finished campaign's folder, e.g. results/ethanol_gmnn_cpu")
    ap.add_argument("--iteration", type=int, default=None, help="whose training sets (default: the last)")
    ap.add_argument("--training-seeds", type=int, default=3)
    ap.add_argument("--strategies", nargs="+", default=None)
    ap.add_argument("--jobs", type=int, default=2)
    args = ap.parse_args()
    if args.iteration is None:
        args.iteration = json.loads((args.folder / "campaign.json").read_text())["last_iteration"]
    (train if args.mode == "train" else report)(args)


if __name__ == "__main__":
    main()
