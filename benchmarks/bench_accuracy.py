"""Accuracy of a GM-NN trained on random GM-NN ethanol structures (1000 K), under a time budget.

    .venv/bin/python benchmarks/bench_accuracy.py [--minutes 8] [--threads 2] [--seed 0]

1,000 random structures of ethanol_1000K (800 train + 200 validation, early stopping), tested on
the other 4,000. Prints force MAE/RMSE/MAXE (kcal/mol/Å), energy MAE/RMSE (kcal/mol), epochs, minutes.
The paper trains 5000 epochs on a V100; this budget is minutes on a laptop CPU.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import numpy as np

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "gmnn_ethanol" / "ethanol_1000K.npz"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=8.0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--r-cut", type=float, default=4.0)
    ap.add_argument("--n-radial", type=int, default=5)
    ap.add_argument("--n-basis", type=int, default=7)
    ap.add_argument("--data", default=str(DEFAULT_DATA))
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)

    from oedal.data.datasets import load_dataset
    from oedal.gmnn.evaluation import error_metrics
    from oedal.settings import DescriptorSettings, ModelSettings, TrainingSettings
    from oedal.gmnn.training import train_model

    data = load_dataset(args.data)
    idx = np.random.default_rng(args.seed).permutation(len(data))
    train, valid, test = data.subset(idx[:800]), data.subset(idx[800:1000]), data.subset(idx[1000:])
    ms = ModelSettings(descriptor=DescriptorSettings(r_cut=args.r_cut, n_radial=args.n_radial, n_basis=args.n_basis))
    ts = TrainingSettings(epochs=5000, patience=5000, max_minutes=args.minutes, seed=args.seed,
                          threads=args.threads, device="cpu")
    t = time.perf_counter()
    result = train_model(train, valid, ms, ts, progress=False)
    minutes = (time.perf_counter() - t) / 60
    m = error_metrics(result.model, test)
    print(f"ethanol_1000K: 800 train + 200 valid (random, seed {args.seed}), test {len(test)}; "
          f"r_c {args.r_cut} Å, n_radial {args.n_radial}, n_basis {args.n_basis}, [256,128], float32, "
          f"{args.threads} threads")
    print(f"epochs {result.epochs} (best {result.best_epoch}, stopped: {result.stopped}), {minutes:.2f} min")
    print(f"forces  MAE {m['forces_mae_kcal/mol/A']:.3f}  RMSE {m['forces_rmse_kcal/mol/A']:.3f}  "
          f"MAXE {m['forces_maxe_kcal/mol/A']:.3f} kcal/mol/Å")
    print(f"energy  MAE {m['energy_mae_kcal/mol']:.3f}  RMSE {m['energy_rmse_kcal/mol']:.3f}  "
          f"MAXE {m['energy_maxe_kcal/mol']:.3f} kcal/mol")
    print(f"structures with max |ΔF component| > 1 kcal/mol/Å: {m['n_max_force_component_error_above_1_kcal/mol/A']}"
          f" of {m['n_structures']}")
    print(json.dumps({k: v for k, v in m.items() if k != "definitions"}))


if __name__ == "__main__":
    main()
