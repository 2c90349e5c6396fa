"""Exploration costs: the calculator's price for its uncertainty, and batched walkers against one ASE MD
per walker; the exploration campaign against pool-based selection. Not a test.

    python benchmarks/bench_explore.py calculator [--steps 300 --rounds 5]   # ms per MD step, plain vs uncertainty
    python benchmarks/bench_explore.py walkers [--walkers 1 4 16 --steps 200] # ms per walker-step, batched vs ASE
    python benchmarks/bench_explore.py campaigns                             # labels to 1 kcal/mol/Å (xTB, long)

Model: the paper's GM-NN (r_c 4 Å, 9 Gaussians, 7 radial functions, [256, 128]) trained by `oedal train` for
60 epochs on 300 frames of ethanol_1000K (../shared/data/gmnn_ethanol or $OEDAL_DATA_DIR), which stores its
fitted uncertainty. One torch thread (the calculator's ``threads=1``), OMP_WAIT_POLICY=PASSIVE; the plain
and the uncertainty calculators (and the batched and per-walker runs) alternate round by round and the
figure is the median of the per-round ratios: the machine is shared, so only ratios taken together count.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("OEDAL_DATA_DIR", ROOT.parent / "shared" / "data" / "gmnn_ethanol"))
MODEL = {"descriptor": {"r_cut": 4.0, "n_basis": 9, "n_radial": 7}, "hidden": [256, 128]}


def trained_model(folder: Path) -> Path:
    """The benchmark's model (trained once per folder by `oedal train`, which fits its uncertainty)."""
    from oedal.data import load_dataset
    from oedal.data.store import write_store

    path = folder / "model.pt"
    if path.exists():
        return path
    s = load_dataset("ethanol_1000K", data_dir=DATA)
    perm = np.random.default_rng(5).permutation(len(s))
    write_store(folder / "train.h5", s.subset(perm[:300]))
    write_store(folder / "valid.h5", s.subset(perm[300:400]))
    cmd = [sys.executable, "-m", "oedal", "train", "--train", str(folder / "train.h5"), "--valid",
           str(folder / "valid.h5"), "--out", str(path), "--settings", json.dumps({"epochs": 60, "patience": 60}),
           "--model-settings", json.dumps(MODEL), "--threads", "1", "--atom-uncertainty"]
    subprocess.run(cmd, check=True, env={**os.environ, "OMP_WAIT_POLICY": "PASSIVE"})
    return path


def ethanol(seed: int = 0):
    from oedal.campaign.explore import starting_structures

    atoms = starting_structures(["ethanol"])[0]
    atoms.rattle(0.02, seed=seed)
    return atoms


def md_ms_per_step(calc, steps: int) -> float:
    """Wall ms per step of ASE Langevin (300 K, 0.5 fs) of ethanol with ``calc`` (after 5 warm-up steps)."""
    from ase import units
    from ase.md.langevin import Langevin

    atoms = ethanol()
    atoms.calc = calc
    md = Langevin(atoms, 0.5 * units.fs, temperature_K=300, friction=0.01 / units.fs, fixcm=False,
                  rng=np.random.default_rng(0))
    md.run(5)
    t = time.perf_counter()
    md.run(steps)
    return 1e3 * (time.perf_counter() - t) / steps


def bench_calculator(args) -> None:
    from oedal.gmnn.calculator import GMNNCalculator
    from oedal.oed.calculator import UncertaintyCalculator

    path = trained_model(args.folder)
    makers = {
        "plain": lambda: GMNNCalculator(path, threads=1),
        "uncertainty (QS1 score, I, force error)": lambda: UncertaintyCalculator(path, threads=1),
        "+ per-atom force uncertainty (QS2 per atom)": lambda: UncertaintyCalculator(path, threads=1, atoms=True),
    }
    times: dict[str, list[float]] = {k: [] for k in makers}
    for r in range(args.rounds):
        for name, make in makers.items():
            times[name].append(md_ms_per_step(make(), args.steps))
    base = np.array(times["plain"])
    print(f"ethanol (9 atoms), ASE Langevin, one thread, {args.steps} steps × {args.rounds} rounds (median):")
    for name, t in times.items():
        ratio = np.median(np.array(t) / base)
        print(f"  {name:45s} {np.median(t):7.2f} ms/step   ×{ratio:.2f} of plain")


def batched_ms(path: Path, n: int, steps: int) -> float:
    """Wall ms per walker-step of ``n`` walkers stepped as one batch (campaign.walkers), checked every 10 steps."""
    import torch

    from oedal.campaign.explore import start_walkers
    from oedal.campaign.walkers import Dynamics, run_walkers
    from oedal.gmnn.model import load_model
    from oedal.oed.uncertainty import model_head

    model = load_model(path)
    model.eval()
    torch.set_num_threads(1)
    walkers = start_walkers([ethanol()], [300.0], n, seed=1)
    limits = {"min_distance": 0.1, "max_force": 1e6, "max_energy_jump": 1e6, "max_temperature_factor": 1e6}
    dyn = Dynamics(steps, 0.5, 0.01, 10, 1e9, 2e9, limits)  # bands that never stop a walker: pure cost
    t = time.perf_counter()
    run_walkers(model, model_head(model), walkers, dyn, 0, [])
    return 1e3 * (time.perf_counter() - t) / (n * steps)


def per_walker_ms(path: Path, n: int, steps: int) -> float:
    """The same walkers, one ASE Langevin per walker with the uncertainty calculator (which scores every
    step; its informativeness read every 10 steps, as a user of the ASE calculator would run it)."""
    from ase import units
    from ase.md.langevin import Langevin

    from oedal.oed.calculator import UncertaintyCalculator

    t = time.perf_counter()
    for k in range(n):
        atoms = ethanol(k)
        atoms.calc = UncertaintyCalculator(path, threads=1)
        md = Langevin(atoms, 0.5 * units.fs, temperature_K=300, friction=0.01 / units.fs, fixcm=False,
                      rng=np.random.default_rng(k))
        for _ in range(steps // 10):
            md.run(10)
            atoms.calc.results["informativeness"]
    return 1e3 * (time.perf_counter() - t) / (n * steps)


def bench_walkers(args) -> None:
    path = trained_model(args.folder)
    batched_ms(path, 2, 20), per_walker_ms(path, 1, 20)  # warm-up: kernels compiled, caches filled
    print(f"ethanol walkers at 300 K, checked every 10 steps, {args.steps} steps each, one thread (median of "
          f"{args.rounds} alternating rounds):")
    for n in args.walkers:
        ratios, b_ms, a_ms = [], [], []
        for _ in range(args.rounds):
            b_ms.append(batched_ms(path, n, args.steps))
            a_ms.append(per_walker_ms(path, n, args.steps))
            ratios.append(a_ms[-1] / b_ms[-1])
        print(f"  {n:3d} walkers: batched {np.median(b_ms):6.2f} ms per walker-step, one ASE MD per walker "
              f"{np.median(a_ms):6.2f}: batched ×{np.median(ratios):.2f} faster")


def bench_campaigns(args) -> None:
    """Labels spent against test force MAE: exploration (config/explore_ethanol.yaml) and the pool campaign
    (config/config.yaml: QS1-greedy and random on an xTB MD pool), each on its own xTB MD test set."""
    for config in ("config/explore_ethanol.yaml", "config/config.yaml"):
        subprocess.run([sys.executable, "-m", "snakemake", "--cores", str(args.cores), "--configfile", config],
                       cwd=ROOT, check=True)
    import csv

    for name in ("explore_ethanol", "default"):
        with open(ROOT / "results" / name / "summary.csv") as fh:
            rows = list(csv.DictReader(fh))
        print(f"{name}:")
        for r in rows:
            print(f"  {r['strategy']:12s} seed {r['seed']} iter {r['iteration']}: labels {r['labels_spent']:>5s}, "
                  f"force MAE {float(r['forces_mae_kcal/mol/A']):.2f} kcal/mol/Å")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="what", required=True)
    c = sub.add_parser("calculator")
    c.add_argument("--steps", type=int, default=300)
    c.add_argument("--rounds", type=int, default=5)
    w = sub.add_parser("walkers")
    w.add_argument("--walkers", type=int, nargs="+", default=[1, 4, 16])
    w.add_argument("--steps", type=int, default=200)
    w.add_argument("--rounds", type=int, default=3)
    k = sub.add_parser("campaigns")
    k.add_argument("--cores", type=int, default=2)
    for q in (c, w, k):
        q.add_argument("--folder", type=Path, default=Path(tempfile.gettempdir()) / "oedal_bench_explore")
    args = p.parse_args()
    args.folder.mkdir(parents=True, exist_ok=True)
    {"calculator": bench_calculator, "walkers": bench_walkers, "campaigns": bench_campaigns}[args.what](args)


if __name__ == "__main__":
    main()
