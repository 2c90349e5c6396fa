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


def use_baseline_descriptor() -> None:
    """The first implementation, for the before/after table: β gathered per pair and applied by a
    batched matmul, full moment tensors by index gathers, contractions as 3-operand einsums."""
    import torch

    from oedal.gmnn.descriptors import GaussianMoments, _L2, _L3, _full_index, combinations, cosine_cutoff

    full2, full3 = torch.tensor(_full_index(_L2, 2)), torch.tensor(_full_index(_L3, 3))

    def radial(self, r, pair_type):
        phi = torch.exp(-self.gamma * (r[:, None] - self.centres) ** 2)
        phi = phi * (cosine_cutoff(r, self.r_cut) * self.basis_norm)[:, None]
        return torch.bmm(self.beta[pair_type], phi[:, :, None])[:, :, 0]

    def contract(self, psi):
        a, n = psi.shape[0], self.n_radial
        m1 = psi[:, :, 1:4]
        m2 = psi[:, :, 4:10][:, :, full2].reshape(a, n, 3, 3)
        m3 = psi[:, :, 10:20][:, :, full3].reshape(a, n, 3, 3, 3)
        f2, f3 = m2.reshape(a, n, 9), m3.reshape(a, n, 27)
        full = {"c0": psi[:, :, 0], "c11": torch.bmm(m1, m1.transpose(1, 2)), "c22": torch.bmm(f2, f2.transpose(1, 2)),
                "c33": torch.bmm(f3, f3.transpose(1, 2)),
                "c222": torch.einsum("arij,asjk,atki->arst", m2, m2, m2),
                "c112": torch.einsum("ari,asj,atij->atrs", m1, m1, m2).transpose(1, 2),
                "c332": torch.einsum("arijk,asijl,atkl->arst", m3, m3, m2),
                "c321": torch.einsum("arijk,asij,atk->arst", m3, m2, m1)}
        return torch.cat([full[c].reshape(a, -1)[:, _first_sel(n, c)] for c in self.contractions], 1)

    def _first_sel(n, c):  # flat positions of the unique combinations in the full (n,)*rank tensors
        combos = combinations(n, c)
        if c == "c112":  # computed in the order (r, t, s)
            combos = [(t[0], t[2], t[1]) for t in combos]
        return torch.tensor([sum(i * n ** (len(t) - 1 - p) for p, i in enumerate(t)) for t in combos])

    GaussianMoments.radial = radial
    GaussianMoments.contract = contract


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def run_one(model_json: str, data: str, threads: int, steps: int, infer_batch: int, compile_: bool = False,
            baseline: bool = False) -> dict:
    if baseline:
        use_baseline_descriptor()
    import numpy as np
    import torch

    from oedal.gmnn.batching import BatchLoader
    from oedal.data.datasets import load_dataset
    from oedal.gmnn.model import GMNN
    from oedal.settings import ModelSettings
    from oedal.gmnn.training import batch_loss

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
    step_fn = torch.compile(batch_loss, dynamic=True) if compile_ else batch_loss
    t_compile = 0.0
    if compile_:
        t = time.perf_counter()
        step_fn(model, next(iter(loader)), 1.0, 100.0).backward()
        t_compile = time.perf_counter() - t
    times, cpu = [], []
    done = 0
    while done < steps + 5:
        for batch in loader:
            t, c = time.perf_counter(), time.process_time()
            loss = step_fn(model, batch, 1.0, 100.0)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            times.append(time.perf_counter() - t)
            cpu.append(time.process_time() - c)
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
    passes, cpu_passes = [], []
    while sum(passes) < 3.0:
        t, c = time.perf_counter(), time.process_time()
        for b in batches:
            e, f = model.energy_and_forces(b)
        passes.append(time.perf_counter() - t)
        cpu_passes.append(time.process_time() - c)
    per_pass = float(np.median(passes))
    n_atoms = int(s.n_atoms.sum())
    from torch.profiler import profile

    with profile() as prof:
        for _, batch in zip(range(5), loader):
            loss = step_fn(model, batch, 1.0, 100.0)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    train_top = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=8, max_name_column_width=30)
    with profile() as prof:
        model.energy_and_forces(batches[0])
    infer_top = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=8, max_name_column_width=30)
    return {
        "profile_train_top_ops (5 steps)": train_top,
        "profile_inference_top_ops (1 batch)": infer_top,
        "n_features": model.descriptor.n_features,
        "pairs_per_structure": float(loader.n_pairs.mean()),
        "train_ms_per_step": step_ms,
        "train_step_p90_ms": 1e3 * float(np.percentile(times[5:], 90)),
        "train_step_min_ms": 1e3 * float(np.min(times[5:])),
        "train_step_cpu_ms": 1e3 * float(np.median(cpu[5:])),
        "compile_s": t_compile,
        "epoch_s_1000": epoch_s,
        "neighbour_lists_s": t_nl,
        "peak_rss_mb": rss_train,
        "rss_before_training_mb": rss_start,
        "infer_structures_per_s": len(s) / per_pass,
        "infer_us_per_atom": 1e6 * per_pass / n_atoms,
        "infer_structures_per_s_best": len(s) / float(np.min(passes)),
        "infer_structures_per_cpu_s": len(s) / float(np.median(cpu_passes)),
        "infer_prep_s": t_prep,
        "peak_rss_after_inference_mb": rss_mb(),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--infer-batch", type=int, default=1000)
    ap.add_argument("--data", default=str(DEFAULT_DATA))
    ap.add_argument("--compile", action="store_true", help="torch.compile the training step (minutes to compile)")
    ap.add_argument("--before-after", action="store_true", help="also time the first implementation (ratio table)")
    ap.add_argument("--baseline", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--one", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        print(json.dumps(run_one(args.one, args.data, args.threads, args.steps, args.infer_batch, args.compile, args.baseline)))
        return
    print(f"GM-NN ethanol_1000K, 1000 structures, {args.threads} CPU threads, batch 32 (training), "
          f"batch {args.infer_batch} (inference); load average {os.getloadavg()[0]:.2f}")
    def child(model_settings, extra=()):
        cmd = [sys.executable, __file__, "--one", json.dumps(model_settings), "--threads", str(args.threads),
               "--steps", str(args.steps), "--infer-batch", str(args.infer_batch), "--data", args.data, *extra]
        if args.compile:
            cmd.append("--compile")
        out = subprocess.run(cmd, capture_output=True, text=True, check=True)
        return json.loads(out.stdout.strip().splitlines()[-1])

    rows = [(name, child(ms)) for name, ms in SETTINGS.items()]
    if args.before_after:
        print("before/after (same run, same load; 'before' = first implementation, see use_baseline_descriptor):")
        print(f"{'setting':58s} {'before ms/step':>14s} {'after':>6s} {'ratio':>6s} {'before st/s':>11s} "
              f"{'after':>6s} {'ratio':>6s}")
        for name, ms in SETTINGS.items():
            before, after = child(ms, ["--baseline"]), dict(rows)[name]
            print(f"{name:58s} {before['train_step_cpu_ms']:14.1f} {after['train_step_cpu_ms']:6.1f} "
                  f"{before['train_step_cpu_ms'] / after['train_step_cpu_ms']:6.2f} "
                  f"{before['infer_structures_per_cpu_s']:11.0f} {after['infer_structures_per_cpu_s']:6.0f} "
                  f"{after['infer_structures_per_cpu_s'] / before['infer_structures_per_cpu_s']:6.2f}")
        print("(CPU-time based: ms/step = CPU ms per training step, st/s = structures per CPU second)")
    hdr = f"{'setting':58s} {'feat':>5s} {'ms/step':>8s} {'min':>6s} {'p90':>6s} {'cpu ms':>7s} {'s/epoch':>8s} " \
          f"{'peakRSS MB':>10s} {'struct/s':>9s} {'best':>6s} {'per cpu s':>9s} {'µs/atom':>8s}"
    print(hdr)
    for name, r in rows:
        print(f"{name:58s} {r['n_features']:5d} {r['train_ms_per_step']:8.1f} {r['train_step_min_ms']:6.1f} "
              f"{r['train_step_p90_ms']:6.1f} {r['train_step_cpu_ms']:7.1f} "
              f"{r['epoch_s_1000']:8.2f} {r['peak_rss_mb']:10.0f} {r['infer_structures_per_s']:9.0f} "
              f"{r['infer_structures_per_s_best']:6.0f} {r['infer_structures_per_cpu_s']:9.0f} "
              f"{r['infer_us_per_atom']:8.1f}")
    print(f"load average after: {os.getloadavg()[0]:.2f} (this machine is shared: figures vary with the load)")
    print("apax 0.14 on this machine (peer figure): 29 ms/step, 4,450 structures/s (25 µs/atom)")
    print("targets: ≤ 29 ms/step, ≥ 5,000 structures/s, training peak RSS ≤ 1 GB")
    for name, r in rows:
        if r["train_ms_per_step"] > 29 or r["infer_structures_per_s"] < 5000:
            print(f"\n{name}: target missed; what limits it (torch.profiler, self CPU time):")
            print(r["profile_train_top_ops (5 steps)"])
            print(r["profile_inference_top_ops (1 batch)"])
    print(json.dumps({n: {k: v for k, v in r.items() if not k.startswith("profile")} for n, r in rows}, indent=1))


if __name__ == "__main__":
    main()
