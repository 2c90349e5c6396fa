"""Training to convergence within a CPU budget: test force MAE against CPU-minutes on 1,000 GM-NN
ethanol structures (1000 K), old schedule against new, from scratch and warm-started, and apax. Not a test.

    python benchmarks/bench_training.py schedule [--budgets 25 50 100 200]   # (1) paper's constant 1e-3 vs cosine 1e-2
    python benchmarks/bench_training.py warm     [--budgets 12 25 50]        # (2) +100 structures: scratch vs warm start
    python benchmarks/bench_training.py apax     [--budgets 25 50 100 200]   # (3) apax on the same frames, one core
    python benchmarks/bench_training.py all

Every training runs in its own process on one core (torch 1 thread, OMP_WAIT_POLICY=PASSIVE; apax
under XLA's single-thread flags), each budget a training of its own (a cosine schedule depends on
its budget); the figure is the process's CPU time (user + system; the machine is shared, so wall
time would measure the neighbours). Data: train = 1,000 frames, validation = 200 (early stopping),
test = 1,000 other frames of ethanol_1000K (../shared/data/gmnn_ethanol or $OEDAL_DATA_DIR), one
fixed permutation. Model: the paper's (r_c 4 Å, 9 Gaussians, 7 radial functions, [256, 128]).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("OEDAL_DATA_DIR", ROOT.parent / "shared" / "data" / "gmnn_ethanol"))
MODEL = {"descriptor": {"r_cut": 4.0, "n_basis": 9, "n_radial": 7}, "hidden": [256, 128]}
OLD = {"schedule": "constant", "learning_rate": 1e-3}  # the paper's (and oedal 0.1's) training
NEW = {}  # today's defaults: cosine from 1e-2 to 1e-5
KCAL = 23.060547830619026  # kcal/mol per eV


def split(first: int = 0, n_train: int = 1000):
    """(train, valid, test) of ethanol_1000K: one fixed permutation; train = frames [first, n_train) of it."""
    from oedal.data import load_dataset

    s = load_dataset("ethanol_1000K", data_dir=DATA)
    perm = np.random.default_rng(123).permutation(len(s))
    return s.subset(perm[first:n_train]), s.subset(perm[3000:3200]), s.subset(perm[4000:5000])


def child_train(spec: dict) -> dict:
    """One training in this process: {"settings", "epochs", "n_train", "warm_start"?, "save"?} → test errors."""
    import torch

    from oedal.gmnn.evaluation import error_metrics
    from oedal.gmnn.model import save_model
    from oedal.gmnn.training import train_model
    from oedal.settings import ModelSettings, TrainingSettings

    torch.set_num_threads(1)
    train, valid, test = split(spec.get("first", 0), spec["n_train"])
    ts = TrainingSettings(**spec["settings"], epochs=spec["epochs"], patience=10**6, seed=spec.get("seed", 0),
                          threads=1, device="cpu", **({"warm_epochs": spec["epochs"]} if spec.get("warm_start") else {}))
    before = resource.getrusage(resource.RUSAGE_SELF)
    result = train_model(train, valid, ModelSettings.model_validate(MODEL), ts, warm_start=spec.get("warm_start"),
                         progress=False)
    after = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if spec.get("save"):
        save_model(result.model, spec["save"])
    m = error_metrics(result.model, test)
    return {"cpu_min": cpu / 60, "epochs": result.epochs, "best_epoch": result.best_epoch,
            "force_mae": m["forces_mae_kcal/mol/A"], "energy_mae": m["energy_mae_kcal/mol"]}


def run_child(spec: dict) -> dict:
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, __file__, "child", json.dumps(spec)], env=env, capture_output=True,
                          text=True, check=False)
    if proc.returncode:
        raise SystemExit(proc.stderr[-3000:])
    return json.loads(proc.stdout.strip().splitlines()[-1])


def row(name: str, budget: int, r: dict) -> None:
    print(f"{name:42s} {budget:7d} {r['cpu_min']:9.2f} {r['force_mae']:10.3f} {r['energy_mae']:10.3f}", flush=True)


def header(title: str) -> None:
    print(f"\n{title}\n{'training':42s} {'epochs':>7s} {'CPU min':>9s} {'F MAE':>10s} {'E MAE':>10s}"
          "   (test, kcal/mol/Å and kcal/mol)", flush=True)


def bench_schedule(a) -> None:
    header("(1) from scratch on 1,000 structures: the paper's constant 1e-3 (old) against cosine 1e-2 → 1e-5 (new)")
    for budget in a.budgets:  # alternating old and new
        for name, settings in (("old: constant 1e-3 (the paper's)", OLD), ("new: cosine 1e-2 → 1e-5", NEW)):
            row(name, budget, run_child({"settings": settings, "epochs": budget, "n_train": 1000}))


def bench_warm(a) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp) / "m900.pt"
        r = run_child({"settings": NEW, "epochs": a.base_epochs, "n_train": 900, "save": str(base)})
        header(f"(2) an AL step: 900 structures trained ({a.base_epochs} epochs, {r['cpu_min']:.2f} CPU min, "
               f"F MAE {r['force_mae']:.3f}), then 100 more: from scratch on 1,000 against warm-started from the 900 model")
        for budget in a.budgets:
            row("warm start (cosine 1e-3 → 1e-5, all 1,000 replayed)", budget,
                run_child({"settings": NEW, "epochs": budget, "n_train": 1000, "warm_start": str(base)}))
        for budget in a.scratch_budgets:
            row("from scratch (cosine 1e-2 → 1e-5)", budget, run_child({"settings": NEW, "epochs": budget, "n_train": 1000}))


def bench_apax(a) -> None:
    apax = Path(a.apax_bin)
    if not apax.exists():
        raise SystemExit(f"apax not found at {apax} (python -m venv ../apax-venv && ../apax-venv/bin/pip install apax)")
    from bench_training_apax import apax_run  # noqa: PLC0415 (beside this file)

    header("(3) apax 0.14 on the same frames and one core (GM-NN, Gaussian basis 9 on [0.5, 4] Å, 7 radial, "
           "[256, 128], its default loss weights and cyclic cosine schedule)")
    for budget in a.budgets:
        row("apax", budget, apax_run(apax, split(), budget))


def main() -> None:
    if len(sys.argv) > 2 and sys.argv[1] == "child":
        print(json.dumps(child_train(json.loads(sys.argv[2]))))
        return
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("what", choices=["schedule", "warm", "apax", "all"])
    p.add_argument("--budgets", type=int, nargs="+", default=None)
    p.add_argument("--scratch-budgets", type=int, nargs="+", default=[100, 200])
    p.add_argument("--base-epochs", type=int, default=200)
    p.add_argument("--apax-bin", default=str(ROOT.parent / "apax-venv" / "bin" / "apax"))
    a = p.parse_args()
    defaults = {"schedule": [25, 50, 100, 200], "warm": [12, 25, 50], "apax": [25, 50, 100, 200]}
    for what in (["schedule", "warm", "apax"] if a.what == "all" else [a.what]):
        a.budgets = a.budgets if (a.budgets and a.what != "all") else defaults[what]
        {"schedule": bench_schedule, "warm": bench_warm, "apax": bench_apax}[what](a)


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    main()
