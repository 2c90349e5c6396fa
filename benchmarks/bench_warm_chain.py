"""Warm-start protocols over a chain of active-learning rounds: does a model warm-started round after round
keep the accuracy of one trained from scratch on the same set, and at what CPU? Not a test.

    python benchmarks/bench_warm_chain.py run    [--protocols tenth rewarm shrink] [--chains 3] [--epochs 200]
                                                 [--rounds 5] [--jobs 2] [--out /tmp/warm_chain]
    python benchmarks/bench_warm_chain.py report [--out /tmp/warm_chain]

The chain is the growth of a campaign's training set (config/ethanol_gmnn_cpu.yaml: 100 structures, then
×1.25 per round: 125, 156, 195, 244, 305), here nested random subsets of GM-NN ethanol_1000K
(../shared/data/gmnn_ethanol or $OEDAL_DATA_DIR), one permutation per chain (its own validation set of 100
and test set of 1,000 frames; the chain's training seed is the chain index). Round 0 is trained from scratch
once per chain and starts every protocol's chain. Then, per round r = 1…R:

* ``scratch``: a training from scratch on the round's set (``--epochs``, cosine 1e-2 → 1e-5): the reference;
* a warm protocol: a training warm-started from the same protocol's model of round r − 1, with the
  protocol's settings (PROTOCOLS; the epoch budget ``warm_epochs`` = epochs / 4 unless it says otherwise).

Every training is its own process on one core (torch 1 thread); its figure is the process's CPU time
around ``train_model`` (user + system: the machine is shared, wall time would measure the neighbours).
Results (one JSON per training) go under ``--out``; a finished training is not rerun, so a killed run resumes.
``report`` prints, per protocol and round, the geometric mean over the chains of the ratio
warm/scratch of the test force MAE, RMSE and MAXE with a 95 % t interval over the chains, and the CPU
of the warm rounds over that of the scratch rounds, and the CPU of the chain whose last round is trained from
scratch instead (a campaign's ``final_from_scratch``: its final model is then the scratch model of that round).
"""

from __future__ import annotations

import argparse
import concurrent.futures as futures
import json
import math
import os
import resource
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("OEDAL_DATA_DIR", ROOT.parent / "shared" / "data" / "gmnn_ethanol"))
MODEL = {"descriptor": {"r_cut": 4.0, "r_min": 0.5, "n_basis": 9, "n_radial": 7}, "hidden": [256, 128]}
METRICS = ("forces_mae_kcal/mol/A", "forces_rmse_kcal/mol/A", "forces_maxe_kcal/mol/A")
N0, GROWTH = 100, 1.25  # config/ethanol_gmnn_cpu.yaml: n_train 100, select.fraction 0.25
PROTOCOLS = {  # warm-round training settings (on top of the scratch ones)
    "tenth": {},  # today's default: epochs / 4 at a tenth of the peak rate
    "third": {"warm_learning_rate": 1e-2 / 3},
    "rewarm": {"warm_learning_rate": 1e-2},  # a re-warmed cosine: the full peak again, epochs / 4
    "shrink": {"warm_shrink": 0.5, "warm_perturb": 0.1, "warm_learning_rate": 1e-2 / 3},
    "shrink-tenth": {"warm_shrink": 0.8, "warm_perturb": 0.05},  # a milder shrink at the default rate
    "thirtieth": {"warm_learning_rate": 1e-2 / 30},  # fine-tuning: stay in the basin
}


def sizes(rounds: int) -> list[int]:
    """Training-set size of rounds 0…R: N0, then ×GROWTH (rounded down) per round, as a campaign selects."""
    n = [N0]
    for _ in range(rounds):
        n.append(int(GROWTH * n[-1]))
    return n


def split(chain: int, n_train: int):
    """(train, valid, test) of chain ``chain``: its own permutation; train = the first n_train frames of it."""
    from oedal.data import load_dataset

    s = load_dataset("ethanol_1000K", data_dir=DATA)
    perm = np.random.default_rng(100 + chain).permutation(len(s))
    return s.subset(perm[:n_train]), s.subset(perm[3000:3100]), s.subset(perm[4000:5000])


def child(spec: dict) -> dict:
    """One training in this process: {chain, n_train, epochs, settings, warm_start?, save} → test errors, CPU."""
    import torch

    from oedal.gmnn.evaluation import error_metrics
    from oedal.gmnn.model import save_model
    from oedal.gmnn.training import train_model
    from oedal.settings import ModelSettings, TrainingSettings

    torch.set_num_threads(1)
    train, valid, test = split(spec["chain"], spec["n_train"])
    ts = TrainingSettings(**spec["settings"], epochs=spec["epochs"], patience=10**6, seed=spec["chain"], threads=1,
                          device="cpu")
    before = resource.getrusage(resource.RUSAGE_SELF)
    result = train_model(train, valid, ModelSettings.model_validate(MODEL), ts, warm_start=spec.get("warm_start"),
                         progress=False)
    after = resource.getrusage(resource.RUSAGE_SELF)
    save_model(result.model, spec["save"])
    m = error_metrics(result.model, test)
    return {"cpu_s": (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime),
            "epochs": result.epochs, "n_train": spec["n_train"], **{k: m[k] for k in METRICS}}


def train_once(spec: dict, out: Path) -> dict:
    """The training ``spec`` (its result JSON ``out``), run in a child process unless already done."""
    if out.exists():
        return json.loads(out.read_text())
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, __file__, "child", json.dumps(spec)], env=env, capture_output=True,
                          text=True, check=False)
    if proc.returncode:
        raise SystemExit(proc.stderr[-3000:])
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(result))
    tmp.replace(out)
    return result


def round0(folder: Path, chain: int, epochs: int) -> Path:
    """The chain's round-0 model (from scratch on N0): its path."""
    model = folder / f"c{chain}_r0.pt"
    train_once({"chain": chain, "n_train": N0, "epochs": epochs, "settings": {}, "save": str(model)},
               folder / f"scratch_c{chain}_r0.json")
    return model


def scratch(folder: Path, chain: int, r: int, epochs: int) -> str:
    n = sizes(r)[r]
    train_once({"chain": chain, "n_train": n, "epochs": epochs, "settings": {},
                "save": str(folder / f"scratch_c{chain}_r{r}.pt")}, folder / f"scratch_c{chain}_r{r}.json")
    return f"scratch chain {chain} round {r}"


def warm_chain(folder: Path, protocol: str, chain: int, rounds: int, epochs: int) -> str:
    """Rounds 1…R of ``protocol`` on chain ``chain``, each warm-started from the one before."""
    previous = round0(folder, chain, epochs)
    for r, n in enumerate(sizes(rounds)[1:], 1):
        model = folder / f"{protocol}_c{chain}_r{r}.pt"
        train_once({"chain": chain, "n_train": n, "epochs": epochs, "settings": PROTOCOLS[protocol],
                    "warm_start": str(previous), "save": str(model)}, folder / f"{protocol}_c{chain}_r{r}.json")
        previous = model
    return f"{protocol} chain {chain}"


def run(a: argparse.Namespace) -> None:
    a.out.mkdir(parents=True, exist_ok=True)
    with futures.ProcessPoolExecutor(a.jobs) as pool:  # round 0 first: every chain needs it
        list(pool.map(round0, [a.out] * a.chains, range(a.chains), [a.epochs] * a.chains))
        jobs = [pool.submit(warm_chain, a.out, p, c, a.rounds, a.epochs) for c in range(a.chains) for p in a.protocols]
        jobs += [pool.submit(scratch, a.out, c, r, a.epochs) for c in range(a.chains) for r in range(1, a.rounds + 1)]
        for done in futures.as_completed(jobs):
            print("done:", done.result(), flush=True)


def report(a: argparse.Namespace) -> None:
    from oedal.campaign.statistics import ratio_interval

    found = {p.stem: json.loads(p.read_text()) for p in a.out.glob("*_c*_r*.json")}
    chains = sorted({int(k.split("_c")[1].split("_r")[0]) for k in found})
    rounds = max(int(k.rsplit("_r", 1)[1]) for k in found)
    print(f"chains {chains}, rounds 1–{rounds}, sizes {sizes(rounds)}; ratio = warm / scratch (geometric mean over "
          "chains, 95 % t interval); CPU = Σ warm rounds / Σ scratch rounds 1…R")
    for protocol in [p for p in PROTOCOLS if any(k.startswith(p + "_c") for k in found)]:
        print(f"\n{protocol}: {PROTOCOLS[protocol] or 'the default warm start'}")
        for r in range(1, rounds + 1):
            pairs = [(found.get(f"{protocol}_c{c}_r{r}"), found.get(f"scratch_c{c}_r{r}")) for c in chains]
            pairs = [(w, s) for w, s in pairs if w and s]
            if not pairs:
                continue
            cells = []
            for m in METRICS:
                e = ratio_interval([w[m] / s[m] for w, s in pairs])
                cells.append(f"{m.split('_')[1]} ×{e.ratio:.3f} [{e.low:.3f}–{e.high:.3f}]")
            mae = np.exp(np.mean([math.log(s[METRICS[0]]) for _, s in pairs]))
            print(f"  round {r} (n={pairs[0][0]['n_train']}, {len(pairs)} chains, scratch MAE {mae:.3f}): "
                  + ", ".join(cells))
        _cpu(found, protocol, chains, rounds)


def _cpu(found: dict, protocol: str, chains: list[int], rounds: int) -> None:
    warm = [found[f"{protocol}_c{c}_r{r}"]["cpu_s"] for c in chains for r in range(1, rounds + 1)
            if f"{protocol}_c{c}_r{r}" in found and f"scratch_c{c}_r{r}" in found]
    cold = [found[f"scratch_c{c}_r{r}"]["cpu_s"] for c in chains for r in range(1, rounds + 1)
            if f"{protocol}_c{c}_r{r}" in found and f"scratch_c{c}_r{r}" in found]
    if not cold:
        return
    print(f"  CPU: {sum(warm) / 60:.1f} min warm against {sum(cold) / 60:.1f} min scratch: "
          f"×{sum(warm) / sum(cold):.2f}")
    last = [(found[f"{protocol}_c{c}_r{rounds}"]["cpu_s"], found[f"scratch_c{c}_r{rounds}"]["cpu_s"]) for c in chains
            if f"{protocol}_c{c}_r{rounds}" in found and f"scratch_c{c}_r{rounds}" in found]
    final = sum(warm) - sum(w for w, _ in last) + sum(s for _, s in last)
    print(f"  with round {rounds} from scratch instead (campaign final_from_scratch: its final model is the scratch "
          f"one, ratio ×1 by construction): CPU ×{final / sum(cold):.2f}")


def main() -> None:
    if len(sys.argv) > 2 and sys.argv[1] == "child":
        sys.path.insert(0, str(ROOT / "src"))
        print(json.dumps(child(json.loads(sys.argv[2]))))
        return
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("what", choices=["run", "report"])
    p.add_argument("--protocols", nargs="+", choices=list(PROTOCOLS), default=["tenth", "rewarm", "shrink"])
    p.add_argument("--chains", type=int, default=3)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--epochs", type=int, default=200, help="from scratch; a warm round: epochs / 4 (warm_epochs)")
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--out", type=Path, default=Path("/tmp/warm_chain"))
    a = p.parse_args()
    (run if a.what == "run" else report)(a)


if __name__ == "__main__":
    main()
