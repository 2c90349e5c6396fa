"""apax (the JAX GM-NN) on the frames of bench_training.py, one core: its training CPU time and test
errors. Used by ``bench_training.py apax``; apax lives in its own virtual environment (../apax-venv)."""

from __future__ import annotations

import json
import os
import resource
import subprocess
import tempfile
from pathlib import Path

import yaml

KCAL = 23.060547830619026  # kcal/mol per eV
ONE_CORE = {"OMP_NUM_THREADS": "1", "XLA_FLAGS": "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1",
            "JAX_PLATFORMS": "cpu"}
EVAL = """
import json, sys
import numpy as np
from ase.io import read
from apax.md import ASECalculator
frames = read(sys.argv[2], index=":")
calc = ASECalculator(model_dir=sys.argv[1])
e_err, f_err = [], []
for atoms in frames:
    ref_e, ref_f = atoms.get_potential_energy(), atoms.get_forces()
    atoms.calc = calc
    e_err.append(atoms.get_potential_energy() - ref_e)
    f_err.append((atoms.get_forces() - ref_f).ravel())
print(json.dumps({"energy_mae": float(np.mean(np.abs(e_err))), "force_mae": float(np.mean(np.abs(np.concatenate(f_err))))}))
"""


def _config(tmp: Path, epochs: int) -> Path:
    config = {
        "n_epochs": epochs, "seed": 1, "patience": None, "data_parallel": False,
        "data": {"directory": str(tmp / "models"), "experiment": "bench",
                 "train_data_path": str(tmp / "train.extxyz"), "val_data_path": str(tmp / "valid.extxyz"),
                 "batch_size": 32, "valid_batch_size": 100, "energy_unit": "eV", "pos_unit": "Ang"},
        "model": {"name": "gmnn", "basis": {"name": "gaussian", "n_basis": 9, "r_min": 0.5, "r_max": 4.0},
                  "n_radial": 7, "nn": [256, 128]},
        "loss": [{"name": "energy", "loss_type": "mse", "weight": 1.0}, {"name": "forces", "loss_type": "mse", "weight": 4.0}],
        "progress_bar": {"disable_epoch_pbar": True, "disable_batch_pbar": True},
    }
    path = tmp / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def apax_run(apax: Path, sets, epochs: int) -> dict:
    """Train apax for ``epochs`` on (train, valid, test) Structures, one core; CPU minutes and test MAE (kcal/mol)."""
    from ase.io import write

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for name, s in zip(("train", "valid", "test"), sets):
            write(tmp / f"{name}.extxyz", s.to_atoms(), format="extxyz")
        config = _config(tmp, epochs)
        env = {**os.environ, **ONE_CORE}
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        proc = subprocess.run([str(apax), "train", str(config)], env=env, cwd=tmp, capture_output=True, text=True)
        if proc.returncode:
            raise RuntimeError(f"apax train failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}")
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        model_dir = tmp / "models" / "bench"
        out = subprocess.run([str(apax.parent / "python"), "-c", EVAL, str(model_dir), str(tmp / "test.extxyz")],
                             env=env, capture_output=True, text=True, check=True)
        errors = json.loads(out.stdout.strip().splitlines()[-1])
    return {"cpu_min": cpu / 60, "force_mae": errors["force_mae"] * KCAL, "energy_mae": errors["energy_mae"] * KCAL}
