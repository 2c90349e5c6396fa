"""A rare event exploration must find (DESIGN §13): malonaldehyde's intramolecular proton transfer, with and without
the uncertainty bias. Not a test.

    python benchmarks/rare_event.py run    --results /tmp/rare   # plain and biased campaigns, 3 seeds (≈ 25 min)
    python benchmarks/rare_event.py report --results /tmp/rare

``run`` is ``bench_explore.py bias-campaigns --config config/explore_malonaldehyde.yaml`` (the same campaign
unbiased under RESULTS/plain and with explore.bias_strength A under RESULTS/bias, seeds paired), then builds the
transfer path: a GFN2-xTB relaxed scan of the transfer coordinate δ = d(H–O_donor) − d(H–O_acceptor) from
−0.8 to +0.8 Å (every other coordinate relaxed, ASE FixInternals on the bond combination), labeled by xTB.

``report``, per run (plain and biased exploration, and the plain campaign's random run on its xTB MD pool) and seed,
round by round:
  * labels spent, the test force MAE (the 1000 K MD test set, which holds no transfer);
  * |δ|min of what was offered (the walkers' candidates, or the random run's MD pool) and of the training +
    validation set (0: the proton midway, the transition state; the start sits at |δ| = 0.72 Å; the transferred
    tautomer is the start with its atoms relabeled by the molecule's mirror plane, the same structure to a
    permutation-invariant model, so what is new to it is the middle);
  * how many training + validation frames lie within ``--event`` Å of the midpoint (default 0.1), and the first
    round whose training set holds one;
then the final models' transfer barrier, E(δ = 0) − E(minimum of the path), against xTB's, and their energy
error along the path (RMSE after the common offset, meV).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "config" / "explore_malonaldehyde.yaml"
START = ROOT / "config" / "starts" / "malonaldehyde.extxyz"
RUNS = {"plain exploration": ("plain", "qs1-greedy"), "biased exploration": ("bias", "qs1-greedy"),
        "random frames of the xTB MD pool": ("plain", "random")}  # name → (arm folder, strategy)
PATH = np.round(np.linspace(-0.8, 0.8, 17), 3)  # δ = d(H–O4) − d(H–O0) of the transfer path's images, Å
F_MAE = "forces_mae_kcal/mol/A"


def transfer_coordinate(positions: np.ndarray, numbers: np.ndarray) -> float:
    """δ = d(H–O_a) − d(H–O_b) in Å for the H nearest an oxygen, O_a the nearer oxygen: ≤ 0, 0 at the midpoint."""
    oxygens, hydrogens = np.flatnonzero(numbers == 8), np.flatnonzero(numbers == 1)
    d = np.linalg.norm(positions[hydrogens][:, None] - positions[oxygens][None], axis=-1)  # (n_H, 2)
    near = d[np.argmin(d.min(axis=1))]
    return float(near.min() - near.max())


def coordinates(path: Path) -> np.ndarray:
    """δ (n,) of every structure of a store (empty where the file does not exist)."""
    from oedal.data.store import read_store

    if not path.exists():
        return np.zeros(0)
    s = read_store(path)
    return np.array([transfer_coordinate(s.positions[o:o + n], s.numbers[o:o + n])
                     for o, n in zip(s.offsets, s.n_atoms)])


def relaxed_scan(deltas: np.ndarray):
    """ase.Atoms along the transfer: at each δ (Å, d(H–O4) − d(H–O0)) the xTB minimum with that δ held."""
    import ase.io
    from ase.constraints import FixInternals
    from ase.optimize import BFGS
    from tblite.ase import TBLite

    frames = []
    for delta in deltas:
        atoms = ase.io.read(START)
        o_far, o_near, h = 0, 4, 5  # the start: H 5 on O 4, hydrogen-bonded to O 0
        direction = atoms.positions[o_far] - atoms.positions[o_near]
        atoms.positions[h] += direction / np.linalg.norm(direction) * (delta - atoms.get_distance(h, o_near)
                                                                        + atoms.get_distance(h, o_far)) / 2
        atoms.set_constraint(FixInternals(bondcombos=[[float(delta), [[h, o_near, 1.0], [h, o_far, -1.0]]]]))
        atoms.calc = TBLite(method="GFN2-xTB", verbosity=0)
        BFGS(atoms, logfile=None).run(fmax=0.01, steps=500)
        atoms.set_constraint()
        frames.append(atoms)
    return frames


def build_path(results: Path) -> Path:
    """RESULTS/transfer_path.h5: the relaxed scan from −0.8 to 0.8 Å in steps of 0.1, labeled by xTB."""
    from oedal.data.structures import Structures
    from oedal.data.store import write_store
    from oedal.oracles.registry import get_oracle, oracle_settings

    out = results / "transfer_path.h5"
    if out.exists():
        return out
    frames = relaxed_scan(PATH)
    xtb = get_oracle(oracle_settings(kind="xtb"))
    labels = [xtb.label(a) for a in frames]  # (energy eV, forces eV/Å, ...)
    s = Structures.from_atoms(frames)
    s.energy = np.array([label[0] for label in labels])
    s.forces = np.concatenate([label[1] for label in labels])
    write_store(out, s)
    return out


def run(a: argparse.Namespace) -> None:
    subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_explore.py"), "bias-campaigns", "--config",
                    str(CONFIG), "--results", str(a.results), "--strength", str(a.strength)], check=True)
    build_path(a.results)


def path_energies(model: Path, path: Path) -> np.ndarray:
    """The model's energies (n_path,) eV on the transfer path."""
    from oedal import GMNNCalculator
    from oedal.data.store import read_store

    s = read_store(path)
    calc = GMNNCalculator(str(model), threads=1)
    out = []
    for atoms in s.to_atoms():
        atoms.calc = calc
        out.append(atoms.get_potential_energy())
    return np.array(out)


def barrier(energies: np.ndarray, deltas: np.ndarray) -> float:
    """E(δ = 0) − the lowest energy of the path, eV."""
    return float(energies[np.argmin(np.abs(deltas))] - energies.min())


def seed_rows(run_dir: Path, event: float) -> list[dict]:
    """Per round of one seed: labels, test force MAE, |δ|min of candidates and of the training set, event frames."""
    rows = []
    for d in sorted(run_dir.glob("iter_*")):
        if not (d / "metrics.json").exists():
            continue
        train = np.abs(np.concatenate([coordinates(d / "train.h5"), coordinates(d / "valid.h5")]))
        offered = np.abs(coordinates(d / "pool.h5"))
        rows.append({"round": int(d.name[5:]), "labels": json.loads((d / "status.json").read_text())["labels_spent"],
                     "mae": json.loads((d / "metrics.json").read_text())[F_MAE],
                     "train_min": train.min(), "offered_min": offered.min() if len(offered) else np.nan,
                     "events": int((train <= event).sum())})
    return rows


def report(a: argparse.Namespace) -> None:
    from oedal.data.store import read_store

    path = a.results / "transfer_path.h5"
    truth = read_store(path).energy if path.exists() else None
    if truth is not None:
        print(f"xTB along the relaxed transfer path: barrier {1000 * barrier(truth, PATH):.0f} meV; energies "
              "(meV above the lowest): " + " ".join(f"{1000 * (e - truth.min()):.0f}" for e in truth))
    print(f"|δ|: how far the proton is from the midpoint coordinate, Å (start 0.72); event frames: |δ| ≤ {a.event} Å")
    for name, (arm, strategy) in RUNS.items():
        print(f"{name}: round) labels:MAE kcal/mol/Å |δ|min offered / in training [event frames in training]")
        for seed_dir in sorted((a.results / arm / "explore_malonaldehyde" / strategy).glob("seed*")):
            rows = seed_rows(seed_dir, a.event)
            first = next((r["round"] for r in rows if r["events"]), None)
            print(f"  {seed_dir.name}: " + "  ".join(
                f"{r['round']}) {r['labels']}:{r['mae']:.2f} {r['offered_min']:.2f}/{r['train_min']:.2f} "
                f"[{r['events']}]" for r in rows) + "; first event frame in training: "
                + (f"round {first}" if first is not None else "never"))
            final = sorted(seed_dir.glob("iter_*/model.pt"))[-1]
            if truth is not None:
                e = path_energies(final, path)
                err = (e - truth) - (e - truth).mean()
                print(f"    final model ({final.parent.name}): barrier {1000 * barrier(e, PATH):.0f} meV, "
                      f"path energy RMSE {1000 * np.sqrt((err ** 2).mean()):.0f} meV")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("what", choices=["run", "report", "path"])
    p.add_argument("--results", type=Path, default=Path("/tmp/rare"))
    p.add_argument("--strength", type=float, default=0.25, help="the biased arm's explore.bias_strength A, eV")
    p.add_argument("--event", type=float, default=0.1, help="Å: a frame with |δ| at most this is of the transfer")
    a = p.parse_args()
    {"run": run, "report": report, "path": lambda a: print(build_path(a.results))}[a.what](a)


if __name__ == "__main__":
    main()
