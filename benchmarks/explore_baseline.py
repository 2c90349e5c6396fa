"""The exploration demo against its baseline: random frames of an MD of the oracle at equal labels. Not a test.

    snakemake --cores 2 --configfile config/explore_ethanol.yaml --config results_dir=/tmp/eb 'seeds=[0,1,2]'
    python benchmarks/explore_baseline.py run    --results /tmp/eb     # the random arm (≈ 10 min on 2 cores)
    python benchmarks/explore_baseline.py report --results /tmp/eb

Arm (a) is the finished campaign of ``--config`` (default config/explore_ethanol.yaml): on-the-fly exploration,
walkers driven by the model, greedy QS1 picks, labeled by the oracle. Arm (b), per seed of (a): the same
initial training and validation sets (SEED/iter_000), then after every round of (a) as many frames as (a) had
labeled by then, drawn at random (the seed's own order) from a pool of Langevin MD frames of the start run with
the sampling potential at the walkers' temperatures (for explore_ethanol that potential is the oracle, GFN2-xTB,
so the pool's frames carry its labels); a fifth of each round's frames to validation, as (a) does
(split.valid_share); trained with (a)'s model and training settings, tested on (a)'s test set. Files:
RESULTS/NAME_random/pool.h5 and seed{s}/iter_NNN/ (train.h5, valid.h5, model.pt, metrics.json, status.json);
a finished iteration is not redone.

``report``: per seed, labels → test force MAE of both arms; the ratio (b)/(a) of the last round's force MAE
(equal labels) with a 95 % t interval over seeds; the oracle calls each arm spent: (a) its labels (the walkers
run on the model), (b) its labels plus every MD step of the pool (each an oracle call, equilibration included).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
from random_arm import ENV, train_and_test, write_rounds  # noqa: E402  (beside this file)

F_MAE = "forces_mae_kcal/mol/A"
POOL_FRAMES = 150  # per walker temperature


def settings(config: Path):
    from oedal.campaign.plan import validate_campaign
    import yaml

    return validate_campaign(yaml.safe_load(config.read_text()), str(config))


def folders(a: argparse.Namespace):
    """(arm (a)'s campaign folder, arm (b)'s folder)."""
    name = settings(a.config).name
    return a.results / name, a.results / f"{name}_random"


def md_pool(a: argparse.Namespace) -> tuple[Path, int]:
    """Arm (b)'s pool (labeled by the sampling potential) and the MD steps it took: one Langevin run of the start
    per walker temperature, POOL_FRAMES frames ``sampling.interval`` steps apart after the equilibration."""
    from oedal.data.store import read_store, write_store
    from oedal.data.structures import Structures

    s = settings(a.config)
    out = folders(a)[1] / "pool.h5"
    sampling = s.sampling.model_dump(mode="json", exclude_unset=True)
    steps = len(s.explore.temperatures) * (s.sampling.equilibration_steps + POOL_FRAMES * s.sampling.interval)
    if out.exists():
        return out, steps
    out.parent.mkdir(parents=True, exist_ok=True)
    parts = []
    for k, t in enumerate(s.explore.temperatures):
        part = out.with_name(f"pool_{t:g}K.h5")
        if not part.exists():
            subprocess.run([sys.executable, "-m", "oedal", "sample", "--settings", json.dumps(sampling),
                            "--molecule", s.explore.starts[0], "--temperature", str(t), "--n-frames",
                            str(POOL_FRAMES), "--seed", str(500 + k), "--labels", "--threads", "1", "--out",
                            str(part)], check=True, env=ENV)
        parts.append(read_store(part))
    pool = Structures.concatenate(parts)
    import dataclasses

    write_store(out, dataclasses.replace(pool, ids=np.arange(len(pool)) + 2 * 10**12))  # apart from (a)'s ids
    return out, steps


def spent(run: Path) -> list[int]:
    """Labels spent after each finished iteration of one run of arm (a) (iteration 0: the initial sets)."""
    return [json.loads((d / "status.json").read_text())["labels_spent"] for d in sorted(run.glob("iter_*"))
            if (d / "metrics.json").exists()]


def run(a: argparse.Namespace) -> None:
    from oedal.data.store import read_store

    s = settings(a.config)
    root, arm_b = folders(a)
    pool = read_store(md_pool(a)[0])
    jobs = []
    for seed in a.seeds or s.seeds:
        labels = spent(root / s.strategies[0] / f"seed{seed}")
        if len(labels) < 2:
            print(f"seed {seed}: arm (a) has no finished round")
            continue
        order = np.random.default_rng([seed, 25]).permutation(len(pool))
        rounds = [np.sort(order[labels[i - 1] - labels[0]:labels[i] - labels[0]]) for i in range(1, len(labels))]
        picks = pool.subset(np.concatenate(rounds))  # in picking order, each round's frames in pool order
        test = root / f"seed{seed}" / "test.h5"
        jobs += [(folder, test, training_seed) for folder, training_seed in
                 write_rounds(root / f"seed{seed}" / "iter_000", picks, labels, s.valid_share, arm_b / f"seed{seed}",
                              seed)]
    with ProcessPoolExecutor(a.jobs) as ex:
        done = ex.map(train_and_test, [j[0] for j in jobs], [s] * len(jobs), [j[1] for j in jobs],
                      [j[2] for j in jobs])
        for (folder, _, _), m in zip(jobs, done):
            print(f"  {folder}: force MAE {m[F_MAE]:.3f} kcal/mol/Å", flush=True)


def curve(run_dir: Path) -> list[tuple[int, float]]:
    """(labels spent, test force MAE) of every finished iteration of a run folder."""
    rows = []
    for d in sorted(run_dir.glob("iter_*")):
        if (d / "metrics.json").exists() and (d / "status.json").exists():
            rows.append((json.loads((d / "status.json").read_text())["labels_spent"],
                         json.loads((d / "metrics.json").read_text())[F_MAE]))
    return rows


def report(a: argparse.Namespace) -> None:
    from oedal.campaign.statistics import ratio_interval

    s = settings(a.config)
    root, arm_b = folders(a)
    _, md_steps = md_pool(a)
    ratios, calls = [], {"a": [], "b": []}
    print(f"{s.name}: (a) exploration ({s.strategies[0]}) against (b) random frames of the sampling MD at equal "
          f"labels; test force MAE in kcal/mol/Å on (a)'s test set")
    for seed in a.seeds or s.seeds:
        ca = curve(root / s.strategies[0] / f"seed{seed}")
        cb = ca[:1] + curve(arm_b / f"seed{seed}")
        if len(cb) < 2 or len(ca) != len(cb):
            print(f"  seed {seed}: not finished ({len(ca)} and {len(cb)} iterations)")
            continue
        print(f"  seed {seed} (a) " + "  ".join(f"{n}:{f:.2f}" for n, f in ca))
        print(f"  seed {seed} (b) " + "  ".join(f"{n}:{f:.2f}" for n, f in cb))
        ratios.append(cb[-1][1] / ca[-1][1])
        calls["a"].append(ca[-1][0])
        calls["b"].append(cb[-1][0] + md_steps)
    if not ratios:
        return
    r = ratio_interval(ratios)
    print(f"final force MAE (b)/(a) at equal labels: ×{r.ratio:.2f} (95 % {r.low:.2f}–{r.high:.2f}, {r.n} seeds; "
          "> 1: exploration better)")
    print(f"oracle calls per seed: (a) {np.mean(calls['a']):.0f} (its labels; the walkers run on the model), "
          f"(b) {np.mean(calls['b']):.0f} (its labels + {md_steps} MD steps of the pool, each an oracle call)")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("what", choices=["run", "report"])
    p.add_argument("--results", type=Path, required=True, help="results_dir of the finished campaign (arm a)")
    p.add_argument("--config", type=Path, default=ROOT / "config" / "explore_ethanol.yaml")
    p.add_argument("--seeds", type=int, nargs="+", default=None, help="the campaign's seeds (default: the config's)")
    p.add_argument("--jobs", type=int, default=2)
    a = p.parse_args()
    (run if a.what == "run" else report)(a)


if __name__ == "__main__":
    main()
