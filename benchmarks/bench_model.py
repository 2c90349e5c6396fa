"""Speed and memory of GM-NN training steps and inference on GM-NN ethanol (1000 structures).

    .venv/bin/python benchmarks/bench_model.py [--threads 2] [--steps 60] [--data PATH]

(a) training step (energy + force loss, eq. 4, batch 32, AMSGrad): median ms/step, peak RSS;
(b) inference energies + forces in large batches: structures/s and µs/atom.
Each setting runs in its own process so that its peak RSS is its own.
Peer figures on this machine (docs/environment): apax ≈ 29 ms/step, ≈ 4,450 structures/s.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "gmnn_ethanol" / "ethanol_1000K.npz"
SETTINGS = {
    "apax-like (r_c 5, n_radial 5, n_basis 7, [256,128])": {"descriptor": {"r_cut": 5.0, "n_radial": 5, "n_basis": 7}},
    "paper ethanol (r_c 4, n_radial 7, n_basis 9, [256,128])": {"descriptor": {"r_cut": 4.0, "n_radial": 7, "n_basis": 9}},
}


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def run_one(model_json: str, data: str, threads: int, steps: int, infer_batch: int) -> dict:
    import numpy as np
    import torch

    from oedal.batching import BatchLoader
    from oedal.data.datasets import load_dataset
    from oedal.model import GMNN
    from oedal.settings import ModelSettings
    from oedal.training import structure_loss

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    s = load_dataset(data).subset(np.arange(1000))
    ms = ModelSettings.model_validate(json.loads(model_json))
    model = GMNN(ms, [1, 6, 8])
    model.init_scale_shift(s.numbers, s.n_atoms, s.energy)
    rss_start = rss_mb()
    t0 = time.perf_counter()
    loader = BatchLoader(s, model.cutoff, model.species, 32, shuffle=True, seed=0, dtype=model.dtype)
    t_nl = time.perf_counter() - t0
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, amsgrad=True)
    times = []
    done = 0
    while done < steps + 5:
        for batch in loader:
            t = time.perf_counter()
            energy, forces = model.energy_and_forces(batch, create_graph=True)
            loss = structure_loss(batch, energy, forces, 1.0, 100.0).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            times.append(time.perf_counter() - t)
            done += 1
            if done >= steps + 5:
                break
    step_ms = 1e3 * float(np.median(times[5:]))
    epoch_s = step_ms * len(loader) / 1e3
    rss_train = rss_mb()
    # inference: energies + forces, large batches, neighbour lists included once
    model.eval()
    t0 = time.perf_counter()
    inf = BatchLoader(s, model.cutoff, model.species, infer_batch, dtype=model.dtype)
    batches = list(inf)
    t_prep = time.perf_counter() - t0
    for b in batches[:1]:
        model.energy_and_forces(b)
    reps, t_inf = 0, 0.0
    while t_inf < 3.0:
        t = time.perf_counter()
        for b in batches:
            e, f = model.energy_and_forces(b)
        t_inf += time.perf_counter() - t
        reps += 1
    per_pass = t_inf / reps
    n_atoms = int(s.n_atoms.sum())
    return {
        "n_features": model.descriptor.n_features,
        "pairs_per_structure": float(loader.n_pairs.mean()),
        "train_ms_per_step": step_ms,
        "train_step_p90_ms": 1e3 * float(np.percentile(times[5:], 90)),
        "epoch_s_1000": epoch_s,
        "neighbour_lists_s": t_nl,
        "peak_rss_mb": rss_train,
        "rss_before_training_mb": rss_start,
        "infer_structures_per_s": len(s) / per_pass,
        "infer_us_per_atom": 1e6 * per_pass / n_atoms,
        "infer_prep_s": t_prep,
        "peak_rss_after_inference_mb": rss_mb(),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--infer-batch", type=int, default=1000)
    ap.add_argument("--data", default=str(DEFAULT_DATA))
    ap.add_argument("--one", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        print(json.dumps(run_one(args.one, args.data, args.threads, args.steps, args.infer_batch)))
        return
    print(f"GM-NN ethanol_1000K, 1000 structures, {args.threads} CPU threads, batch 32 (training), "
          f"batch {args.infer_batch} (inference); load average {os.getloadavg()[0]:.2f}")
    rows = []
    for name, model_settings in SETTINGS.items():
        out = subprocess.run([sys.executable, __file__, "--one", json.dumps(model_settings), "--threads",
                              str(args.threads), "--steps", str(args.steps), "--infer-batch", str(args.infer_batch),
                              "--data", args.data], capture_output=True, text=True, check=True)
        rows.append((name, json.loads(out.stdout.strip().splitlines()[-1])))
    hdr = f"{'setting':58s} {'feat':>5s} {'ms/step':>8s} {'p90':>6s} {'s/epoch':>8s} {'peakRSS MB':>10s} " \
          f"{'struct/s':>9s} {'µs/atom':>8s}"
    print(hdr)
    for name, r in rows:
        print(f"{name:58s} {r['n_features']:5d} {r['train_ms_per_step']:8.1f} {r['train_step_p90_ms']:6.1f} "
              f"{r['epoch_s_1000']:8.2f} {r['peak_rss_mb']:10.0f} {r['infer_structures_per_s']:9.0f} "
              f"{r['infer_us_per_atom']:8.1f}")
    print("apax 0.14 on this machine (peer figure): 29 ms/step, 4,450 structures/s (25 µs/atom)")
    print("targets: ≤ 29 ms/step, ≥ 5,000 structures/s, training peak RSS ≤ 1 GB")
    print(json.dumps(dict(rows), indent=1))


if __name__ == "__main__":
    main()
