"""Exploration costs: the calculator's price for its uncertainty, and batched walkers against one ASE MD
per walker; walkers biased toward uncertainty. Labels to 1 kcal/mol/Å in campaigns: explore_campaigns.py. Not a test.

    python benchmarks/bench_explore.py calculator [--steps 300 --rounds 5]   # ms per MD step, plain vs uncertainty
    python benchmarks/bench_explore.py walkers [--walkers 1 4 16 --steps 200 --torch-sim]  # ms per walker-step
    python benchmarks/bench_explore.py loop [--baseline 9db632b --walkers 6 16]  # the batched loop: now vs a revision
    python benchmarks/bench_explore.py bias [--strengths 0 0.25 1 --seeds 0 1 2]  # where biased walkers go (≈ 5 min)
    python benchmarks/bench_explore.py bias-campaigns [--report]             # explore_ethanol ± bias, 3 seeds (≈ 20 min)

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
    from oedal.campaign.explore.starts import starting_structures

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
    """Wall ms per walker-step of ``n`` walkers stepped as one batch (campaign.explore.dynamics), checked every 10 steps."""
    import torch

    from oedal.campaign.explore.dynamics import Dynamics, run_walkers
    from oedal.campaign.explore.walker import start_walkers
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


def torch_sim_ms(path: Path, n: int, steps: int) -> float:
    """Wall ms per walker-step of the same ``n`` walkers stepped by torch-sim's batched BAOAB Langevin
    (torch_sim.integrators.nvt_langevin) with GM-NN behind torch-sim's ModelInterface: energies and forces
    only (no uncertainty at all: the comparison favours torch-sim)."""
    import torch
    import torch_sim as ts
    from ase import units
    from torch_sim.integrators.nvt import nvt_langevin
    from torch_sim.models.interface import ModelInterface

    from oedal.data.structures import Structures
    from oedal.gmnn.batching import make_batch
    from oedal.gmnn.model import load_model

    class GMNNModel(ModelInterface):
        def __init__(self, model):
            super().__init__()
            self.model, self._device, self._dtype = model, torch.device("cpu"), torch.float64
            self._compute_forces, self._compute_stress = True, False

        def forward(self, state, **_):
            n_atoms = torch.bincount(state.system_idx).numpy()
            s = Structures(positions=state.positions.detach().numpy(), numbers=state.atomic_numbers.numpy(),
                           n_atoms=n_atoms, cell=np.zeros((len(n_atoms), 3, 3)), pbc=np.zeros((len(n_atoms), 3), bool),
                           ids=np.arange(len(n_atoms)))
            ev = self.model.evaluate(make_batch(s, self.model.cutoff, self.model.species, dtype=torch.float64))
            return {"energy": ev.energy.double(), "forces": ev.forces.double()}

    model = load_model(path)
    model.eval()
    torch.set_num_threads(1)
    wrapped = GMNNModel(model)
    state = ts.io.atoms_to_state([ethanol(k) for k in range(n)], torch.device("cpu"), torch.float64)
    kt = torch.tensor(units.kB * 300.0, dtype=torch.float64)
    init, update = nvt_langevin(wrapped, dt=torch.tensor(0.5 * units.fs, dtype=torch.float64), kT=kt,
                                gamma=torch.tensor(0.01 / units.fs, dtype=torch.float64), seed=1)
    state = init(state)
    t = time.perf_counter()
    for _ in range(steps):
        state = update(state)
    return 1e3 * (time.perf_counter() - t) / (n * steps)


def bench_walkers(args) -> None:
    path = trained_model(args.folder)
    batched_ms(path, 2, 20), per_walker_ms(path, 1, 20)  # warm-up: kernels compiled, caches filled
    if args.torch_sim:
        torch_sim_ms(path, 2, 20)
    print(f"ethanol walkers at 300 K, checked every 10 steps, {args.steps} steps each, one thread (median of "
          f"{args.rounds} alternating rounds):")
    for n in args.walkers:
        ratios, b_ms, a_ms, t_ms, t_ratios = [], [], [], [], []
        for _ in range(args.rounds):
            b_ms.append(batched_ms(path, n, args.steps))
            a_ms.append(per_walker_ms(path, n, args.steps))
            ratios.append(a_ms[-1] / b_ms[-1])
            if args.torch_sim:
                t_ms.append(torch_sim_ms(path, n, args.steps))
                t_ratios.append(t_ms[-1] / b_ms[-1])
        line = (f"  {n:3d} walkers: batched {np.median(b_ms):6.2f} ms per walker-step, one ASE MD per walker "
                f"{np.median(a_ms):6.2f}: batched ×{np.median(ratios):.2f} faster")
        if t_ms:
            line += f"; torch-sim nvt_langevin {np.median(t_ms):6.2f} (×{np.median(t_ratios):.2f} of ours)"
        print(line)


def bench_loop(args) -> None:
    """Wall ms per walker-step of the batched walkers (``batched_ms``, 300 K) with this tree's oedal and with
    the one of git revision ``--baseline`` (its src/ exported beside the model), alternating, each run in its
    own process; the figure is the median of the per-round ratios baseline/now."""
    path = trained_model(args.folder)
    old = args.folder / f"src_{args.baseline}"
    if not old.exists():
        old.mkdir()
        archive = subprocess.run(["git", "-C", str(ROOT), "archive", args.baseline, "src"], check=True,
                                 capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", str(old)], input=archive, check=True)
    trees = {"baseline": old / "src", "now": ROOT / "src"}

    def run(tree: str, n: int) -> float:
        env = {**os.environ, "PYTHONPATH": str(trees[tree]), "OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE"}
        out = subprocess.run([sys.executable, __file__, "loop-child", str(path), str(n), str(args.steps)], env=env,
                             check=True, capture_output=True, text=True).stdout.split()
        assert Path(out[0]).is_relative_to(trees[tree]), f"{tree}: imported oedal from {out[0]}"
        return float(out[1])

    print(f"batched ethanol walkers at 300 K, {args.steps} steps, checked every 10, one thread; baseline "
          f"{args.baseline} against this tree, {args.rounds} alternating rounds:")
    for n in args.walkers:
        run("baseline", n), run("now", n)  # warm-up: numba caches filled
        pairs = [(run("baseline", n), run("now", n)) for _ in range(args.rounds)]
        b, w = zip(*pairs)
        print(f"  {n:3d} walkers: baseline {np.median(b):6.3f} ms per walker-step, now {np.median(w):6.3f}: "
              f"×{np.median([x / y for x, y in pairs]):.2f} (rounds {min(x / y for x, y in pairs):.2f}–"
              f"{max(x / y for x, y in pairs):.2f})", flush=True)


F_MAE = "forces_mae_kcal/mol/A"


# ---- uncertainty-biased walkers (DESIGN §13) ----------------------------------------------------------
def xtb_model(folder: Path, n_train: int) -> Path:
    """A model at the oracle's own level of theory, so that its true error can be measured: `oedal train` on
    ``n_train`` frames (+ 20 validation) of a 1000 K GFN2-xTB MD of ethanol (400 frames, 10 steps apart, its own
    seed: not the walkers'), 300 epochs, explore_ethanol's architecture (r_c 5 Å, [128, 64]), its uncertainty
    fitted. 40 frames: the model exploration has after its first round; 300: a trained one."""
    from oedal.data.store import read_store, write_store

    path = folder / f"xtb_{n_train}.pt"
    if path.exists():
        return path
    pool = folder / "xtb_1000K.h5"
    if not pool.exists():
        subprocess.run([sys.executable, "-m", "oedal", "sample", "--n-frames", "400", "--interval", "10", "--seed",
                        "77", "--labels", "--threads", "1", "--out", str(pool)], check=True)
    s = read_store(pool)
    perm = np.random.default_rng(6).permutation(len(s.n_atoms))
    write_store(folder / f"xtb_{n_train}_train.h5", s.subset(perm[:n_train]), overwrite=True)
    write_store(folder / f"xtb_{n_train}_valid.h5", s.subset(perm[n_train:n_train + 20]), overwrite=True)
    model = {"descriptor": {"r_cut": 5.0, "n_basis": 7, "n_radial": 5}, "hidden": [128, 64]}
    subprocess.run([sys.executable, "-m", "oedal", "train", "--train", str(folder / f"xtb_{n_train}_train.h5"),
                    "--valid", str(folder / f"xtb_{n_train}_valid.h5"), "--out", str(path), "--settings",
                    json.dumps({"epochs": 300, "patience": 300, "batch_size": 8}),
                    "--model-settings", json.dumps(model), "--threads", "1"],
                   check=True, env={**os.environ, "OMP_WAIT_POLICY": "PASSIVE"})
    return path


def hydroxyl_torsion(positions: np.ndarray, numbers: np.ndarray) -> float:
    """The C–C–O–H dihedral of ethanol, degrees in [0, 180] (180: trans, ≈ 60: gauche)."""
    from ase import Atoms

    atoms = Atoms(numbers, positions=positions)
    d = atoms.get_all_distances()
    o = int(np.flatnonzero(numbers == 8)[0])
    carbons, hydrogens = np.flatnonzero(numbers == 6), np.flatnonzero(numbers == 1)
    c1 = int(carbons[np.argmin(d[o, carbons])])
    c2 = int(carbons[carbons != c1][0])
    h = int(hydrogens[np.argmin(d[o, hydrogens])])
    angle = atoms.get_dihedral(c2, c1, o, h)
    return float(min(angle, 360.0 - angle))


def biased_run(model, head, strength: float, width: float, seed: int, steps: int):
    """Ethanol walkers (300, 600, 1000 K × 2) for ``steps`` steps of 0.5 fs with bias strength A (eV; 0:
    none) and width B (eV/Å), explore_ethanol's bands; (walkers, candidate records, torsions at every
    check (n_checks,), seconds)."""
    from oedal.campaign.explore.dynamics import Dynamics, run_walkers
    from oedal.campaign.explore.walker import start_walkers
    from oedal.oed.bias import UncertaintyBias

    walkers = start_walkers([ethanol()], [300.0, 600.0, 1000.0], 2, seed=seed)
    limits = {"min_distance": 0.5, "max_force": 50.0, "max_energy_jump": 5.0, "max_temperature_factor": 6.0}
    bias = UncertaintyBias(strength, width) if strength > 0 else None
    torsions: list[float] = []

    def seen(ws, _records) -> None:  # called after every check (checkpoint_seconds 0)
        torsions.extend(hydroxyl_torsion(np.asarray(w.positions), np.asarray(w.numbers)) for w in ws
                        if w.checks and w.checks[-1][0] == w.step)

    records: list = []
    t = time.perf_counter()
    run_walkers(model, head, walkers, Dynamics(steps, 0.5, 0.01, 10, 1.0, 50.0, limits, bias=bias), 0, records,
                seen, checkpoint_seconds=0.0)
    return walkers, records, np.array(torsions), time.perf_counter() - t


def true_force_errors(model, records) -> np.ndarray:
    """RMS over the 3N components of the model's force error against GFN2-xTB at each record's frame, eV/Å."""
    import torch
    from ase import Atoms

    from oedal.gmnn.calculator import atoms_as_structures
    from oedal.oracles.registry import get_oracle, oracle_settings

    xtb = get_oracle(oracle_settings(kind="xtb"))
    out = []
    for r in records:
        atoms = Atoms(r["numbers"], positions=r["positions"])
        _, forces = xtb.label(atoms)
        predicted = model.evaluate(model.batch(atoms_as_structures(atoms), torch.float64)).forces.double().numpy()
        out.append(float(np.sqrt(((predicted - forces) ** 2).mean())))
    return np.array(out)


def bench_bias(args) -> None:
    """Where biased walkers go: per bias strength A and seed, the share of checks that are candidates (the
    walker time the selection can use), walkers stopped, the model's true force error (xTB) on the candidates,
    and the hydroxyl rotamers reached (C–C–O–H torsion < 120°: gauche; the start is trans)."""
    import torch

    from oedal.gmnn.model import load_model
    from oedal.oed.bias import UncertaintyBias
    from oedal.oed.uncertainty import model_head

    torch.set_num_threads(1)
    model = load_model(xtb_model(args.folder, args.n_train))
    model.eval()
    head = model_head(model)
    width = UncertaintyBias(1.0).width_for(head)  # the calibrated force error at the lower band, I = 1
    print(f"ethanol walkers 300/600/1000 K × 2, {args.steps} steps of 0.5 fs, bands I 1 / 50, a model of "
          f"{args.n_train} xTB frames; "
          f"bias width B = {width:.3f} eV/Å (the calibrated force error at I = 1)")
    print("  A eV  seed  candidate share  stopped  candidates  true F RMS on candidates eV/Å  gauche share  s")
    summary: dict[float, list] = {}
    for strength in args.strengths:
        for seed in args.seeds:
            walkers, records, torsions, seconds = biased_run(model, head, strength, width, seed, args.steps)
            checks = [c for w in walkers for c in w.checks]
            share = sum(c[3] == "candidate" for c in checks) / max(1, len(checks))
            stopped = sum(w.status == "stopped" for w in walkers)
            errors = true_force_errors(model, records)
            gauche = float((torsions < 120.0).mean()) if len(torsions) else float("nan")
            summary.setdefault(strength, []).append((share, stopped, len(records), errors.mean(), gauche))
            print(f"  {strength:4.2f}  {seed:4d}  {share:15.2f}  {stopped:7d}  {len(records):10d}  "
                  f"{errors.mean():30.3f}  {gauche:12.2f}  {seconds:.0f}")
    print("mean over seeds:")
    for strength, rows in summary.items():
        m = np.mean(np.array(rows, dtype=float), axis=0)
        print(f"  A = {strength:4.2f} eV: candidate share {m[0]:.2f}, stopped {m[1]:.1f} of 6, candidates {m[2]:.1f}, "
              f"true force RMS on them {m[3]:.3f} eV/Å, gauche share {m[4]:.2f}")


def bias_campaigns(args) -> None:
    """``--config`` (config/explore_ethanol.yaml) with 3 seeds, unbiased (under ``--results``/plain: the config's
    strategies, its random run on the MD pool included) and with explore.bias_strength ``--strength`` eV
    (``--results``/bias, qs1-greedy alone; the width: the model's own force error at I = 1). One campaign name in
    both, so that every random stream (initial set, iteration-0 model, test set) is the same and the arms pair seed
    by seed. Per round the labels spent, the test force MAE and the share of checked walker frames that were
    candidates; then each explorer against the random run at equal labels (the verdict's comparison: the last
    point every seed reached, the explorer interpolated log-log), biased against plain on their final models, and
    the oracle calls per seed (the random run's include the MD steps of its pool)."""
    import yaml

    arms = {"plain": [], "bias": [f"explore={{bias_strength: {args.strength}, random_pool: walkers}}",
                                  "strategies=[qs1-greedy]"]}
    name = yaml.safe_load(args.config.read_text())["name"]
    if not args.report:
        for arm, extra in arms.items():
            subprocess.run([sys.executable, "-m", "snakemake", "--cores", "2", "--configfile",
                            str(args.config), "--config", f"results_dir={args.results / arm}",
                            "seeds=[0,1,2]", *extra], cwd=ROOT, check=True,
                           env={**os.environ, "OMP_WAIT_POLICY": "PASSIVE"})
    rows = {arm: arm_rows(args.results / arm / name) for arm in arms}
    for arm in arms:
        print_rounds(arm, args.results / arm / name, rows[arm])
    compare_arms(rows, args.results / "plain" / name)


def arm_rows(campaign: Path) -> list[dict]:
    """summary.csv of one arm's campaign, its sizes and force MAE as floats, ``stopped`` as a bool."""
    import csv

    with open(campaign / "summary.csv") as fh:
        return [{**r, **{k: float(r[k]) for k in ("labels_spent", "n_train", F_MAE)}, "stopped": r["stopped"] == "True"}
                for r in csv.DictReader(fh)]


def print_rounds(arm: str, campaign: Path, rows: list[dict]) -> None:
    """Per strategy and seed: labels spent: test force MAE (candidate share of the walkers' checked frames)."""
    print(f"{arm}: labels spent: test force MAE kcal/mol/Å (candidate share of checked frames)")
    for strategy, seed in sorted({(r["strategy"], r["seed"]) for r in rows}):
        mine = sorted((r for r in rows if (r["strategy"], r["seed"]) == (strategy, seed)),
                      key=lambda r: int(r["iteration"]))
        shares = []
        for r in mine:
            counts = campaign / strategy / f"seed{seed}" / f"iter_{int(r['iteration']):03d}" / "explore.json"
            c = json.loads(counts.read_text()) if counts.exists() else {}
            checked = c.get("accurate_frames", 0) + c.get("candidate_frames", 0)
            shares.append(f" ({c['candidate_frames'] / checked:.2f})" if checked else "")
        print(f"  {strategy} seed {seed}: " + "  ".join(f"{r['labels_spent']:.0f}: {r[F_MAE]:.2f}{share}"
                                                       for r, share in zip(mine, shares)))


def compare_arms(rows: dict[str, list[dict]], plain: Path) -> None:
    """Each explorer against the plain arm's random run at equal labels (statistics.verdict_records), biased
    against plain on the final models, and the oracle calls per seed."""
    from oedal.campaign.statistics import ratio_interval, verdict_records
    from oedal.campaign.tree import Tree
    from oedal.data.store import StoreReader

    explorers = {"plain": [r for r in rows["plain"] if r["strategy"] != "random"],
                 "bias": [{**r, "strategy": "biased"} for r in rows["bias"]]}
    random = [r for r in rows["plain"] if r["strategy"] == "random"]
    if random:
        for arm, mine in explorers.items():
            for v in verdict_records(mine + random, metrics=[F_MAE]):
                if getattr(v, "x", None) == "labels_spent":
                    print(f"{arm}: {v.sentence()}")
    last = {arm: {r["seed"]: r for r in sorted(mine, key=lambda r: int(r["iteration"]))}
            for arm, mine in explorers.items()}
    seeds = sorted(set(last["plain"]) & set(last["bias"]))
    if seeds:
        est = ratio_interval([last["plain"][s][F_MAE] / last["bias"][s][F_MAE] for s in seeds])
        print(f"final force MAE plain/biased: ×{est.ratio:.2f} (95 % {est.low:.2f}–{est.high:.2f}, {est.n} seeds; > 1: "
              "the bias helped) at " + ", ".join(f"{last['plain'][s]['labels_spent']:.0f} vs "
                                                 f"{last['bias'][s]['labels_spent']:.0f}" for s in seeds) + " labels")
    pool = Path(Tree.of(plain.parent, plain.name).md_pool)
    steps = 0
    if pool.exists():
        with StoreReader(pool) as reader:
            steps = int(reader.attrs["md_steps"])
    calls = {arm: np.mean([r["labels_spent"] for r in last[arm].values()]) for arm in last}
    if random:
        calls["random"] = np.mean([max(r["labels_spent"] for r in random if r["seed"] == s)
                                   for s in {r["seed"] for r in random}]) + steps
    print("oracle calls per seed: " + ", ".join(f"{arm} {n:.0f}" for arm, n in calls.items())
          + (f" (random: its labels + the {steps} MD steps of its pool)" if random else ""))


def main() -> None:
    if sys.argv[1:2] == ["loop-child"]:  # one timing of bench_loop, with whichever oedal PYTHONPATH gives
        import oedal

        path, n, steps = sys.argv[2:5]
        print(Path(oedal.__file__).resolve().parents[1], batched_ms(Path(path), int(n), int(steps)))
        return
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="what", required=True)
    c = sub.add_parser("calculator")
    c.add_argument("--steps", type=int, default=300)
    c.add_argument("--rounds", type=int, default=5)
    w = sub.add_parser("walkers")
    w.add_argument("--walkers", type=int, nargs="+", default=[1, 4, 16])
    w.add_argument("--steps", type=int, default=200)
    w.add_argument("--rounds", type=int, default=3)
    w.add_argument("--torch-sim", action="store_true", help="also torch-sim's batched Langevin (pip install "
                   "torch-sim-atomistic; energies and forces only)")
    lp = sub.add_parser("loop")
    lp.add_argument("--baseline", default="9db632b", help="git revision to compare with (default: before the "
                    "device-resident loop and its skin neighbour list)")
    lp.add_argument("--walkers", type=int, nargs="+", default=[6, 16])
    lp.add_argument("--steps", type=int, default=300)
    lp.add_argument("--rounds", type=int, default=5)
    b = sub.add_parser("bias")
    b.add_argument("--strengths", type=float, nargs="+", default=[0.0, 0.25, 1.0], help="A, eV (0: unbiased)")
    b.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    b.add_argument("--steps", type=int, default=1000)
    b.add_argument("--n-train", type=int, default=40, help="xTB MD frames the model is trained on (40: as after "
                   "exploration's first round; 300: a trained model)")
    bc = sub.add_parser("bias-campaigns")
    bc.add_argument("--results", type=Path, default=ROOT / "results")
    bc.add_argument("--config", type=Path, default=ROOT / "config" / "explore_ethanol.yaml")
    bc.add_argument("--strength", type=float, default=0.25, help="the biased arm's explore.bias_strength A, eV")
    bc.add_argument("--report", action="store_true", help="only print the figures of the finished campaigns")
    for q in (c, w, lp, b, bc):
        q.add_argument("--folder", type=Path, default=Path(tempfile.gettempdir()) / "oedal_bench_explore")
    args = p.parse_args()
    args.folder.mkdir(parents=True, exist_ok=True)
    {"calculator": bench_calculator, "walkers": bench_walkers,
     "bias": bench_bias, "bias-campaigns": bias_campaigns, "loop": bench_loop}[args.what](args)


if __name__ == "__main__":
    main()
