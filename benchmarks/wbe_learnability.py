"""Does the GM-NN of config/wbe_cpu.yaml learn the W–Be set from a few hundred structures? A diagnostic, not a
test: one model trained as at the campaign's iteration 0 (300 random structures, 100 for validation, r_c 5 Å,
128-64) on the set less the structures above an energy cutoff, then tested on 1,000 others; prints the energy
MAE per class, total (eV) and per atom (eV/atom).

    python benchmarks/wbe_learnability.py [--max-energy-per-atom 0] [--epochs 60] [--weight-forces 100]

(the cutoff drops the highly compressed EOS cells: up to +54 eV/atom; 0 eV/atom drops 530 structures, 524 of
them EOS)
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from oedal.data.importers import read_wbe
from oedal.gmnn.evaluation import predict
from oedal.gmnn.training import train_model
from oedal.settings import DescriptorSettings, ModelSettings, TrainingSettings

WBE = Path(__file__).resolve().parents[2] / "shared" / "data" / "wbe" / "WBe_PRB2019_JSON.tar.gz"


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--max-energy-per-atom", type=float, default=np.inf, help="eV/atom; default: keep every structure")
    p.add_argument("--epochs", type=int, default=60)
    p.add_argument("--weight-forces", type=float, default=100.0)
    args = p.parse_args()
    wbe = read_wbe(WBE)
    keep = np.flatnonzero(wbe.energy / wbe.n_atoms <= args.max_energy_per_atom)
    print(f"kept {len(keep)} of {len(wbe)} structures (E/atom ≤ {args.max_energy_per_atom} eV)")
    s = wbe.subset(keep)
    order = np.random.default_rng(0).permutation(len(s))
    train, valid, test = s.subset(order[:300]), s.subset(order[300:400]), s.subset(order[400:1400])
    model = ModelSettings(descriptor=DescriptorSettings(r_cut=5.0, r_min=0.5, n_basis=7, n_radial=5), hidden=[128, 64])
    ts = TrainingSettings(epochs=args.epochs, weight_forces=args.weight_forces, patience=10**6, threads=1, device="cpu")
    start = time.perf_counter()
    result = train_model(train, valid, model, ts, progress=False)
    error = np.abs(predict(result.model, test, forces=False).energy - test.energy)  # (n,) eV
    print(f"{args.epochs} epochs, w_F {args.weight_forces}: {time.perf_counter() - start:.0f} s, best epoch "
          f"{result.best_epoch}; test energy MAE {error.mean():.3f} eV")
    for name in np.unique(test.classes):
        m = test.classes == name
        print(f"  {name:13s} {int(m.sum()):4d} structures  {int(np.median(test.n_atoms[m])):4d} atoms (median)  "
              f"energy MAE {error[m].mean():8.3f} eV  {np.mean(error[m] / test.n_atoms[m]):7.4f} eV/atom  "
              f"(training set: {int((train.classes == name).sum())})")


if __name__ == "__main__":
    main()
