"""The materials campaign of DESIGN §12: silicon from one crystal, GPAW labels, stress learned; on-the-fly
exploration (config/explore_si.yaml) against random frames of a CHGNet MD pool labeled by the same oracle. Not a
test.

    python benchmarks/si_materials.py testset   # the independent test set (GPAW), ≈ 10 min on 2 cores
    snakemake --cores 2 --configfile config/explore_si.yaml                 # arm (a): exploration
    python benchmarks/si_materials.py random    # arm (b): random CHGNet-MD frames, per seed of (a)
    python benchmarks/si_materials.py report    # labels to 5 meV/atom, 0.1 eV/Å, 0.5 GPa; oracle time of each arm

`make materials` runs all four (and `make gpaw` first).

Test set (results/explore_si_data/si_test.h5, one class each): GPAW Langevin MD of the 8-atom cell at 600 and
1200 K (15 frames each, 6 fs apart after 30 fs), 5 vacancy cells (7 atoms), 5 (001) slabs (8 layers, 10 Å of
vacuum) and 8 cells strained by up to 8 %, all rattled; none of it is what the walkers start from.
Arm (b) for seed s starts from the very labeled initial set of seed s of arm (a) and adds, round by round, as
many random frames of a CHGNet NVT MD pool (300, 900 and 1500 K, the walkers' temperatures) as arm (a) labeled
in that round, a fifth of them to the validation set as in (a); the same model, training settings and test set.
Labels go through the campaign's label cache (results/labels.sqlite): nothing is computed twice.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")  # before numpy: every process here is one GPAW or one training
import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "config" / "explore_si.yaml"
DATA = ROOT / "results" / "explore_si_data"
TEST = DATA / "si_test.h5"
POOL = DATA / "chgnet_pool.h5"
ARM_B = ROOT / "results" / "explore_si_random"
TARGETS = {"energy_per_atom_mae_meV/atom": 5.0, "forces_mae_eV/A": 0.1, "stress_mae_GPa": 0.5}

from random_arm import train_and_test, write_rounds  # noqa: E402  (beside this file)


def campaign():
    """The validated settings of config/explore_si.yaml."""
    import yaml

    from oedal.campaign.plan import validate_campaign

    return validate_campaign(yaml.safe_load(CONFIG.read_text()))


def start_cell():
    import ase.io

    return ase.io.read(ROOT / "config" / "starts" / "si_diamond_8.extxyz")


# ---- the test set ------------------------------------------------------------------------------------------
def _md_part(temperature: float, seed: int, frames: int = 15, skip: int = 15, every: int = 3):
    """GPAW Langevin MD (2 fs, friction 0.02/fs) of the rattled start at ``temperature``: ``frames`` frames,
    ``every`` steps apart after ``skip`` steps; each labeled with the oracle's energy, forces and stress."""
    os.environ["OMP_NUM_THREADS"] = "1"
    from ase import units
    from ase.calculators.singlepoint import SinglePointCalculator
    from ase.constraints import FixCom
    from ase.md.langevin import Langevin
    from ase.md.velocitydistribution import MaxwellBoltzmannDistribution

    from oedal.oracles.registry import get_oracle

    oracle = get_oracle(campaign().oracle)
    atoms = start_cell()
    atoms.rattle(0.05, seed=seed)
    atoms.set_constraint(FixCom())
    atoms.calc = oracle._calculator(atoms)  # one calculator along the trajectory: each SCF starts from the last
    rng = np.random.default_rng(seed)
    MaxwellBoltzmannDistribution(atoms, temperature_K=2 * temperature, rng=rng)  # half goes into the potential
    md = Langevin(atoms, 2.0 * units.fs, temperature_K=temperature, friction=0.02 / units.fs, fixcm=False, rng=rng)
    md.run(skip)
    out = []
    for _ in range(frames):
        md.run(every)
        frame = atoms.copy()
        frame.set_constraint()
        frame.calc = SinglePointCalculator(frame, energy=atoms.get_potential_energy(),
                                           forces=atoms.get_forces(apply_constraint=False), stress=atoms.get_stress())
        out.append(frame)
    return out


def _labeled(frames: list):
    """Each frame labeled by a fresh oracle call (energy, forces, stress)."""
    os.environ["OMP_NUM_THREADS"] = "1"
    from ase.calculators.singlepoint import SinglePointCalculator

    from oedal.oracles.base import stress_of
    from oedal.oracles.registry import get_oracle

    oracle = get_oracle(campaign().oracle)
    out = []
    for atoms in frames:
        result = oracle.label(atoms)
        atoms = atoms.copy()
        atoms.calc = SinglePointCalculator(atoms, energy=result[0], forces=result[1], stress=stress_of(result))
        out.append(atoms)
    return out


def _defects() -> dict[str, list]:
    """Unlabeled vacancy cells, (001) slabs and strained cells, rattled (seeded)."""
    from ase.build import diamond100

    from oedal.campaign.explore.starts import random_strain

    rng = np.random.default_rng(11)
    cell = start_cell()
    parts: dict[str, list] = {"vacancy": [], "surface": [], "strained": []}
    for k in range(5):
        vacancy = cell.copy()
        del vacancy[k]
        vacancy.rattle(0.05, seed=100 + k)
        parts["vacancy"].append(vacancy)
        slab = diamond100("Si", size=(1, 1, 8), a=cell.cell[0, 0], vacuum=5.0)
        slab.pbc = True
        slab.rattle(0.05, seed=200 + k)
        parts["surface"].append(slab)
    for k in range(8):
        strained = cell.copy()
        strained.set_cell(cell.cell[:] @ (np.eye(3) + random_strain(rng, 0.08 * (k + 1) / 8)), scale_atoms=True)
        strained.rattle(0.03, seed=300 + k)
        parts["strained"].append(strained)
    return parts


def build_test_set(args) -> None:
    """The test set, part by part (each part's file kept: a killed run resumes with the parts left)."""
    import ase.io

    from oedal.data.store import write_store
    from oedal.data.structures import Structures

    parts_dir = DATA / "test_parts"
    parts_dir.mkdir(parents=True, exist_ok=True)
    defects = _defects()
    jobs = {"md_600K": (_md_part, (600.0, 1)), "md_1200K": (_md_part, (1200.0, 2)),
            **{name: (_labeled, (frames,)) for name, frames in defects.items()}}
    start = time.perf_counter()
    with ProcessPoolExecutor(args.workers, mp_context=get_context("spawn")) as pool:
        futures = {name: pool.submit(fn, *a) for name, (fn, a) in jobs.items()
                   if not (parts_dir / f"{name}.extxyz").exists()}
        for name, future in futures.items():
            ase.io.write(parts_dir / f"{name}.extxyz", future.result())
            print(f"  {name}: done after {time.perf_counter() - start:.0f} s", flush=True)
    structures, classes = [], []
    for name in jobs:
        frames = ase.io.read(parts_dir / f"{name}.extxyz", index=":")
        structures += frames
        classes += [name] * len(frames)
    s = dataclasses.replace(Structures.from_atoms(structures), classes=np.array(classes))
    write_store(TEST, s, attrs={"content": "GPAW test set of config/explore_si.yaml (benchmarks/si_materials.py)"},
                overwrite=True)
    print(f"wrote {len(s)} structures to {TEST} ({', '.join(f'{n} {classes.count(n)}' for n in jobs)}); "
          f"{time.perf_counter() - start:.0f} s")


# ---- arm (b): random frames of a CHGNet MD pool -------------------------------------------------------
def chgnet_pool():
    """The unlabeled pool: CHGNet Langevin NVT MD of the start cell at the walkers' temperatures, 200 frames
    each, 10 steps (20 fs) apart after 50 steps (written once)."""
    from oedal.campaign.sampling import run_md
    from oedal.data.store import read_store, write_store
    from oedal.data.structures import Structures

    if POOL.exists():
        return read_store(POOL)
    settings = campaign()
    parts = []
    for k, temperature in enumerate(settings.explore.temperatures):
        md = settings.sampling.model_copy(update={"temperature": temperature, "n_frames": 200, "interval": 10,
                                                  "equilibration_steps": 50, "seed": 500 + k})
        frames = run_md(start_cell(), md).structures.without_labels()
        parts.append(dataclasses.replace(frames, classes=np.full(len(frames), f"md_{temperature:.0f}K")))
    pool = Structures.concatenate(parts)
    pool = dataclasses.replace(pool, ids=np.arange(len(pool)))
    write_store(POOL, pool, attrs={"content": "CHGNet NVT MD pool of config/explore_si.yaml's start"})
    return pool


def campaign_rounds(seed: int) -> list[int]:
    """Labels spent by arm (a)'s seed ``seed`` after each finished iteration (iteration 0: the initial set)."""
    run = ROOT / "results" / "explore_si" / "qs1-greedy" / f"seed{seed}"
    spent = []
    for d in sorted(run.glob("iter_*")):
        if (d / "metrics.json").exists():
            spent.append(json.loads((d / "status.json").read_text())["labels_spent"])
    return spent


def _label(args: tuple) -> str:
    """Label one unlabeled shard through the campaign's label cache (which records each call's seconds)."""
    unlabeled, out = args
    os.environ["OMP_NUM_THREADS"] = "1"
    from oedal.oracles.labeling import label_store

    label_store(unlabeled, out, None, campaign().oracle, cache=ROOT / "results" / "labels.sqlite")
    return str(out)


def labeled_picks(seed: int, n: int, workers: int):
    """The first ``n`` frames of seed ``seed``'s random order of the pool, labeled by the oracle (in
    ``workers`` shards through the label cache: labels of an earlier run are read, not computed)."""
    from oedal.data.store import read_store, write_store

    pool = chgnet_pool()
    order = np.random.default_rng([seed, 24]).permutation(len(pool))[:n]
    folder = ARM_B / f"seed{seed}" / "labels"
    folder.mkdir(parents=True, exist_ok=True)
    jobs = []
    for k in range(workers):
        unlabeled, out = folder / f"picks_{n}_{k}.h5", folder / f"labeled_{n}_{k}.h5"
        if not out.exists():
            write_store(unlabeled, pool.subset(np.sort(order[k::workers])), overwrite=True)
            jobs.append((unlabeled, out))
    with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool_exec:
        list(pool_exec.map(_label, jobs))
    from oedal.data.structures import Structures

    labeled = Structures.concatenate([read_store(folder / f"labeled_{n}_{k}.h5") for k in range(workers)])
    by_id = {int(i): r for r, i in enumerate(labeled.ids)}
    return labeled.subset(np.array([by_id[int(i)] for i in order if int(i) in by_id]))  # in picking order


def arm_random(args) -> None:
    """Arm (b) for every seed of arm (a) with finished iterations: the same initial set, as many random pool
    frames per round as (a) labeled, a fifth of each round's to validation; trained, tested, written under
    results/explore_si_random/seed{s}/iter_{i}/ (metrics.json, status.json)."""
    settings = campaign()
    jobs = []
    for seed in settings.seeds:
        spent = campaign_rounds(seed)
        if len(spent) < 2:
            print(f"seed {seed}: arm (a) has no finished round yet")
            continue
        picks = labeled_picks(seed, spent[-1] - spent[0], args.workers)
        init = ROOT / "results" / "explore_si" / f"seed{seed}" / "iter_000"
        jobs += write_rounds(init, picks, spent, settings.valid_share, ARM_B / f"seed{seed}", seed)
    with ProcessPoolExecutor(args.workers, mp_context=get_context("spawn")) as pool:
        for (folder, _), m in zip(jobs, pool.map(train_and_test, [j[0] for j in jobs], [settings] * len(jobs),
                                                [TEST] * len(jobs), [j[1] for j in jobs])):
            print(f"  {folder.relative_to(ROOT)}: " + ", ".join(f"{k} {m[k]:.3g}" for k in TARGETS), flush=True)


# ---- the comparison --------------------------------------------------------------------------------------
def curves(arm: str, seed: int) -> list[dict]:
    """(labels_spent and the test metrics) of every finished iteration of one seed of arm ``a`` or ``b``."""
    run = (ROOT / "results" / "explore_si" / "qs1-greedy" / f"seed{seed}") if arm == "a" else ARM_B / f"seed{seed}"
    rows = []
    if arm == "b":  # iteration 0 is arm (a)'s (the same initial set and model)
        rows += curves("a", seed)[:1]
    for d in sorted(run.glob("iter_*")):
        if (d / "metrics.json").exists() and (d / "status.json").exists():
            rows.append({**json.loads((d / "metrics.json").read_text()), **json.loads((d / "status.json").read_text())})
    return rows


def labels_to(rows: list[dict], metric: str, target: float) -> int | None:
    """Labels spent when ``metric`` first falls to ``target`` (None: not within the rows)."""
    return next((int(r["labels_spent"]) for r in rows if r.get(metric, np.inf) <= target), None)


def oracle_seconds(files: list[Path]) -> np.ndarray:
    """Seconds of the oracle call of every structure labeled in ``files``, as the label cache recorded them (the
    call's own time, one core; read-only)."""
    import sqlite3

    from oedal.data.identity import content_hashes
    from oedal.data.store import read_store

    keys = sorted({k.decode() if isinstance(k, bytes) else str(k) for f in files
                   for k in content_hashes(read_store(f))})
    with sqlite3.connect(f"file:{ROOT / 'results' / 'labels.sqlite'}?mode=ro", uri=True) as db:
        rows = [db.execute("SELECT seconds FROM labels WHERE structure = ? AND ok = 1", (k,)).fetchone() for k in keys]
    return np.array([r[0] for r in rows if r is not None])


def arm_label_files(arm: str, seeds: list[int]) -> list[Path]:
    """The stores of the labels each arm bought beyond the shared initial set."""
    if arm == "a":
        run = ROOT / "results" / "explore_si" / "qs1-greedy"
        return [f for s in seeds for f in sorted((run / f"seed{s}").glob("iter_*/labeled.h5"))]
    return [f for s in seeds for f in sorted((ARM_B / f"seed{s}" / "labels").glob("labeled_*[0-9].h5"))]


CLASS_KEYS = ("energy_per_atom_mae_meV/atom", "forces_mae_eV/A", "stress_mae_GPa")


def final_per_class(arm: str, seed: int) -> dict:
    """The final model of one seed of arm ``a`` or ``b`` evaluated again on the test set, per class (energy per
    atom, forces and stress of each: oedal.gmnn.evaluation.error_metrics)."""
    from oedal.data.store import read_store
    from oedal.gmnn.evaluation import error_metrics
    from oedal.gmnn.model import load_model

    run = (ROOT / "results" / "explore_si" / "qs1-greedy" / f"seed{seed}") if arm == "a" else ARM_B / f"seed{seed}"
    last = [d for d in sorted(run.glob("iter_*")) if (d / "model.pt").exists() and (d / "metrics.json").exists()][-1]
    return error_metrics(load_model(last / "model.pt"), read_store(TEST))["per_class"]


def chgnet_per_class() -> dict:
    """CHGNet on the test set per class, energies aligned per element (oedal.oracles.baseline)."""
    from oedal.data.store import read_store
    from oedal.oracles.baseline import baseline_metrics
    from oedal.oracles.registry import get_oracle, oracle_settings

    return baseline_metrics(get_oracle(oracle_settings(kind="chgnet")), read_store(TEST))["per_class"]


def report(args) -> None:
    settings = campaign()
    seeds = [s for s in settings.seeds if len(campaign_rounds(s)) > 1]
    chgnet = ROOT / "results" / "explore_si" / "seed0" / "potential_chgnet.json"
    test = json.loads(chgnet.read_text()) if chgnet.exists() else None
    print(f"silicon, GPAW PBE labels; test set {TEST.relative_to(ROOT)}; seeds {seeds}")
    if test:
        print("CHGNet (energies aligned per element) on it: " + ", ".join(f"{k} {test[k]:.3g}" for k in TARGETS))
    finals = {}
    arms = (("a", "(a) exploration: NPT walkers, greedy QS1"), ("b", "(b) random frames of a CHGNet MD pool"))
    for arm, name in arms:
        print(name)
        for seed in seeds:
            rows = curves(arm, seed)
            finals[arm, seed] = rows[-1]
            e_key, f_key, s_key = TARGETS
            print(f"  seed {seed}  labels: E meV/atom | F eV/Å | σ GPa   " + "  ".join(
                f"{r['labels_spent']}: {r[e_key]:.1f} | {r[f_key]:.3f} | {r[s_key]:.2f}" for r in rows))
        for metric, target in TARGETS.items():
            reached = [labels_to(curves(arm, s), metric, target) for s in seeds]
            text = ", ".join("not reached" if n is None else str(n) for n in reached)
            print(f"  labels to {metric} ≤ {target:g}: {text}")
        seconds = oracle_seconds(arm_label_files(arm, seeds))
        print(f"  oracle: {len(seconds)} labels beyond the 16 initial ones both arms share, {seconds.mean():.1f} s "
              f"per label (median {np.median(seconds):.1f} s; the label cache's record of each GPAW call), "
              f"{seconds.sum() / 60:.0f} min in all")
    paired = [s for s in seeds
              if ("b", s) in finals and finals["b", s]["labels_spent"] == finals["a", s]["labels_spent"]]
    if paired:
        print(f"final models at equal labels, (b)/(a) geometric mean over seeds {paired} (> 1: exploration lower):")
        for metric in TARGETS:
            ratios = [finals["b", s][metric] / finals["a", s][metric] for s in paired]
            print(f"  {metric}: ×{np.exp(np.mean(np.log(ratios))):.2f} (per seed " +
                  ", ".join(f"{r:.2f}" for r in ratios) + ")")
    print("per class, final models (mean over seeds) and CHGNet: E meV/atom | F eV/Å | σ GPa")
    per_arm = {arm: [final_per_class(arm, s) for s in seeds if (arm, s) in finals] for arm in ("a", "b")}
    reference = chgnet_per_class()
    for name in sorted(reference):
        cells = []
        for arm in ("a", "b"):
            values = [np.mean([c[name][k] for c in per_arm[arm]]) if per_arm[arm] else np.nan for k in CLASS_KEYS]
            cells.append(" | ".join(f"{v:.3g}" for v in values))
        ref = " | ".join(f"{reference[name][k]:.3g}" for k in CLASS_KEYS)
        print(f"  {name:9s} (a) {cells[0]:24s} (b) {cells[1]:24s} CHGNet {ref}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="what", required=True)
    t = sub.add_parser("testset")
    t.add_argument("--workers", type=int, default=2)
    r = sub.add_parser("random")
    r.add_argument("--workers", type=int, default=2)
    sub.add_parser("report")
    args = p.parse_args()
    {"testset": build_test_set, "random": arm_random, "report": report}[args.what](args)


if __name__ == "__main__":
    main()
