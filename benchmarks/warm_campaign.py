"""Warm starts in a real campaign: does a campaign whose middle rounds are cheap warm starts, and whose planned last
round trains from scratch (final_from_scratch), end as accurate as one that trains every round from scratch, and
at what training CPU? Not a test.

    python benchmarks/warm_campaign.py run    [--results /tmp/warm_campaign] [--epochs 200] [--cheap 10] [--arms ...]
                                      [--seeds 0 1 2 ...]
    python benchmarks/warm_campaign.py report [--results /tmp/warm_campaign]

benchmarks/bench_warm_chain.py measures warm starts on fixed nested sets, where a final from-scratch round is by
construction the scratch model. In a campaign the warm models also *select*: this benchmark measures what that
costs. Three runs of config/ethanol_gmnn_cpu.yaml (the paper's model, GM-NN ethanol_1000K replayed, 100 → 303
structures in 5 rounds of m = 0.25·N_train, 3 seeds), QS1-top only, ``--epochs`` from scratch (cosine 1e-2 → 1e-5),
no transfer test set, each under its own RESULTS/ARM with the same campaign name (so that split, test set and
iteration-0 model are the same and the seeds pair):

* ``scratch``: warm_start false: every round from scratch;
* ``warm``: warm_start true, every round warm-started (epochs / 4 at a tenth of the peak rate, the default);
* ``cheap``: warm_start true with ``--cheap`` warm epochs, and final_from_scratch: the last round from scratch.

``report``: per arm and seed, the test force MAE round by round; the final models' ratio arm/scratch of the force
MAE, RMSE and MAXE (geometric mean over seeds, 95 % t interval); and the training CPU of rounds 1–5 (Snakemake's
benchmark files: one thread per training, so wall time; process start and import included, as a user pays them)
over the scratch arm's; and the cycle's split: the seconds of a round's training, scoring, selection and labeling.
"""

from __future__ import annotations

import argparse
import csv
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from oedal.campaign.statistics import FORCE_METRICS as METRICS

ROOT = Path(__file__).resolve().parents[1]
NAME = "ethanol_gmnn_cpu"
STRATEGY = "qs1-top"
ARMS = ("scratch", "warm", "cheap")
KINDS = {"training": "train", "scoring": "score", "selection": "select", "labeling": "label"}  # job_kind prefixes


def arms(a: argparse.Namespace) -> dict[str, dict]:
    """Arm → its config: config/ethanol_gmnn_cpu.yaml with QS1-top alone (so without score.reduction, which only
    QS2/QS3 read), no transfer set, ``--epochs`` from scratch, and the arm's warm-start settings."""
    import yaml

    base = yaml.safe_load((ROOT / "config" / "ethanol_gmnn_cpu.yaml").read_text())
    base["strategies"] = [STRATEGY]
    base["dataset"].pop("transfer", None)
    base["dataset"].pop("transfer_every", None)
    base["score"].pop("reduction", None)
    base["training"].update(epochs=a.epochs, patience=a.epochs)
    if a.seeds:
        base["seeds"] = a.seeds
    # the scratch arm never reads warm_epochs, but it is in every training's rule params: pinned to the warm arm's
    # value so that a change of the shipped config's does not retrain a finished arm
    warm = {"scratch": (False, False, a.epochs // 4), "warm": (True, False, a.epochs // 4),
            "cheap": (True, True, a.cheap)}
    out = {}
    for arm, (start, final, epochs) in warm.items():
        config = {**base, "warm_start": start, "final_from_scratch": final,
                  "training": {**base["training"], "warm_epochs": epochs or base["training"]["warm_epochs"]}}
        if not start:
            config.pop("final_from_scratch")
        out[arm] = config
    return out


def run(a: argparse.Namespace) -> None:
    import yaml

    for arm, config in arms(a).items():
        if arm not in a.arms:
            continue
        path = a.results / f"{arm}.yaml"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(config))
        subprocess.run([sys.executable, "-m", "snakemake", "--cores", "2", "--configfile", str(path), "--config",
                        f"results_dir={a.results / arm}"], cwd=ROOT, check=True,
                       env={**os.environ, "OMP_WAIT_POLICY": "PASSIVE"})


def final_rows(arm_dir: Path) -> dict[str, list[dict]]:
    """Seed → its rows of summary.csv, by iteration."""
    with open(arm_dir / NAME / "summary.csv") as fh:
        rows = [r for r in csv.DictReader(fh) if r["strategy"] == STRATEGY]
    out: dict[str, list[dict]] = {}
    for r in sorted(rows, key=lambda r: int(r["iteration"])):
        out.setdefault(r["seed"], []).append(r)
    return out


def round_seconds(arm_dir: Path, seed: str) -> list[dict[str, float]]:
    """Per round 1…5 of one run, wall seconds of its jobs by kind (training, scoring, selection, labeling) from
    Snakemake's benchmark files. Each job runs one thread and the campaign runs at most two jobs on 2 cores, so
    wall time is its CPU time; the files' ``cpu_time`` is not: Snakemake samples it every 30 s once a job has run
    a while and misses its tail (14 s of CPU recorded for a 34 s single-threaded training). The replay oracle
    reads labels from a file: labeling here costs what a cached label costs."""
    from oedal.report.cost import job_kind, read_benchmark

    out = []
    for it in sorted((arm_dir / NAME / STRATEGY / f"seed{seed}").glob("iter_*"))[1:]:
        seconds = dict.fromkeys(KINDS, 0.0)
        for tsv in (it / "benchmarks").glob("*.tsv"):
            kind = next((k for k, prefix in KINDS.items() if job_kind(tsv).startswith(prefix)), None)
            if kind:
                seconds[kind] += read_benchmark(tsv).get("s", 0.0)
        out.append(seconds)
    return out


def report(a: argparse.Namespace) -> None:
    from oedal.campaign.statistics import ratio_interval

    rows = {arm: final_rows(a.results / arm) for arm in ARMS if (a.results / arm / NAME / "summary.csv").exists()}
    rounds = {arm: {seed: round_seconds(a.results / arm, seed) for seed in rows[arm]} for arm in rows}
    cpu = {arm: {seed: sum(r["training"] for r in mine) for seed, mine in rounds[arm].items()} for arm in rows}
    print(f"{NAME}, {STRATEGY}: test force MAE kcal/mol/Å round by round (n_train), training CPU of rounds 1–5")
    for arm, seeds in rows.items():
        for seed, mine in seeds.items():
            print(f"  {arm:7s} seed {seed}: " + "  ".join(f"{int(r['n_train'])}:{float(r[METRICS[0]]):.3f}"
                                                         for r in mine) + f"   CPU {cpu[arm][seed]:.0f} s")
    for arm in [arm for arm in rows if arm != "scratch"]:
        seeds = sorted(set(rows[arm]) & set(rows["scratch"]))
        parts = []
        for m in METRICS:
            est = ratio_interval([float(rows[arm][s][-1][m]) / float(rows["scratch"][s][-1][m]) for s in seeds])
            parts.append(f"{m.split('_')[1]} ×{est.ratio:.3f} [{est.low:.3f}–{est.high:.3f}]")
        share = np.sum([cpu[arm][s] for s in seeds]) / np.sum([cpu["scratch"][s] for s in seeds])
        print(f"{arm}/scratch, final models ({len(seeds)} seeds, 95 % t interval): " + ", ".join(parts)
              + f"; training CPU ×{share:.2f}")
    for arm in rows:
        every = [r for mine in rounds[arm].values() for r in mine]
        split = {k: float(np.mean([r[k] for r in every])) for k in KINDS}
        whole = sum(split.values())
        print(f"{arm}: one round (mean of rounds 1–5, seconds of one thread) {whole:.0f} s: " + ", ".join(
            f"{k} {v:.1f} s ({100 * v / whole:.1f} %)" for k, v in split.items()))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("what", choices=["run", "report"])
    p.add_argument("--results", type=Path, default=Path("/tmp/warm_campaign"))
    p.add_argument("--epochs", type=int, default=200, help="epochs of a training from scratch")
    p.add_argument("--cheap", type=int, default=10, help="warm epochs of the cheap arm")
    p.add_argument("--arms", nargs="+", choices=ARMS, default=list(ARMS), help="the arms to run")
    p.add_argument("--seeds", nargs="+", type=int, help="the seeds (default: the config's); more seeds added to "
                   "finished arms run only the new seeds' jobs")
    a = p.parse_args()
    {"run": run, "report": report}[a.what](a)


if __name__ == "__main__":
    main()
