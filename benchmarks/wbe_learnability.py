"""Does the GM-NN of config/wbe_cpu.yaml learn the W–Be set from a few hundred structures? A diagnostic, not a
test: one model trained as at the campaign's iteration 0 (300 random structures, 100 for validation, r_c 5 Å,
128-64) on the set less the structures above an energy cutoff, then tested on 1,000 others; prints the energy
MAE per class, total (eV) and per atom (eV/atom).

    python benchmarks/wbe_learnability.py [--max-energy-per-atom 0] [--epochs 60] [--weight-forces 100]
        [--energy-loss total|per_atom]

Beside every figure, the composition baseline: E ≈ Σ_Z count_Z μ_Z fitted by least squares on the same training
set (a model that does not beat it has learned nothing but the stoichiometry).

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
    p.add_argument("--energy-loss", choices=["total", "per_atom"], default="total")
    args = p.parse_args()
    wbe = read_wbe(WBE)
    keep = np.flatnonzero(wbe.energy / wbe.n_atoms <= args.max_energy_per_atom)
    print(f"kept {len(keep)} of {len(wbe)} structures (E/atom ≤ {args.max_energy_per_atom} eV)")
    s = wbe.subset(keep)
    order = np.random.default_rng(0).permutation(len(s))
    train, valid, test = s.subset(order[:300]), s.subset(order[300:400]), s.subset(order[400:1400])
    model = ModelSettings(descriptor=DescriptorSettings(r_cut=5.0, r_min=0.5, n_basis=7, n_radial=5), hidden=[128, 64])
    ts = TrainingSettings(epochs=args.epochs, weight_forces=args.weight_forces, energy_loss=args.energy_loss,
                          patience=10**6, threads=1, device="cpu")
    start = time.perf_counter()
    result = train_model(train, valid, model, ts, progress=False)
    seconds = time.perf_counter() - start
    pred = predict(result.model, test, forces=True)
    error = np.abs(pred.energy - test.energy)  # (n,) eV
    mu, *_ = np.linalg.lstsq(_counts(train), train.energy, rcond=None)  # (n_species,) eV
    base = np.abs(_counts(test) @ mu - test.energy)  # (n,) eV
    print(f"{args.epochs} epochs, w_F {args.weight_forces}, {args.energy_loss} energy loss: {seconds:.0f} s, best "
          f"epoch {result.best_epoch}; test energy MAE {error.mean():.3f} eV, {np.mean(error / test.n_atoms):.4f} "
          f"eV/atom (composition baseline {np.mean(base / test.n_atoms):.4f}); force MAE "
          f"{np.abs(pred.forces - test.forces).mean():.3f} eV/Å")
    for name in np.unique(test.classes):
        m = test.classes == name
        print(f"  {name:13s} {int(m.sum()):4d} structures  {int(np.median(test.n_atoms[m])):4d} atoms (median)  "
              f"energy MAE {error[m].mean():8.3f} eV  {np.mean(error[m] / test.n_atoms[m]):7.4f} eV/atom  "
              f"(baseline {np.mean(base[m] / test.n_atoms[m]):7.4f}; training set: {int((train.classes == name).sum())})")


def _counts(s) -> np.ndarray:
    """(n_structures, n_species) atoms of each element (W, Be) per structure."""
    struct = np.repeat(np.arange(len(s)), s.n_atoms)
    return np.stack([np.bincount(struct, weights=s.numbers == z, minlength=len(s)) for z in (4, 74)], axis=1)


if __name__ == "__main__":
    main()
