"""Shared fixtures: the read-only reference data in ../shared/data and a small ethanol set; the Snakemake
environment and the tiny campaign, run once per session (tests/test_workflow.py, tests/test_report.py)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from workflow_helpers import run_snakemake

SHARED_DATA = (Path(__file__).resolve().parent / ".." / ".." / "shared" / "data").resolve()


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Path of ../shared/data (beside the repository); a missing reference fails, it does not skip."""
    if not (SHARED_DATA / "gmnn_ethanol" / "ethanol_1000K.npz").is_file():
        pytest.fail(f"reference data not found at {SHARED_DATA} (expected gmnn_ethanol/ethanol_1000K.npz)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def ethanol_structures(shared_data: Path):
    """The first 300 frames of ethanol_1000K as Structures (Å, eV, eV/Å; ids 0..299); shared: do not modify."""
    from oedal.data import load_dataset

    return load_dataset("ethanol_1000K", data_dir=shared_data, limit=300)


@pytest.fixture(scope="session")
def small_periodic_cells():
    """Two random triclinic H/C/O cells (4 and 3 atoms, edges ≈ 2.5 Å): with r_c ≈ 3 Å a pair list
    holds several images of one neighbour and of the centre atom itself."""
    import numpy as np
    from ase import Atoms

    from oedal.data.structures import Structures

    rng = np.random.default_rng(5)
    frames = [Atoms(numbers=rng.choice([1, 6, 8], n), scaled_positions=rng.random((n, 3)),
                    cell=np.diag([a, 1.1 * a, 0.9 * a]) + 0.2 * rng.random((3, 3)), pbc=True)
              for n, a in ((4, 2.6), (3, 2.4))]
    return Structures.from_atoms(frames)


@pytest.fixture(params=["numba", "torch"])
def kernel_backend(request):
    """Runs the test once per kernel backend (oedal.gmnn.kernels.using): the numba CPU kernels, and
    the torch routes a GPU takes; yields the resolved Backend."""
    from oedal.gmnn.kernels import using

    with using(request.param) as chosen:
        yield chosen


@pytest.fixture(scope="session")
def smk_env(tmp_path_factory) -> dict:
    """The environment of the Snakemake subprocess.

    The Slurm executor plugin asks `scontrol show config` for MinJobAge when Snakemake starts; on a
    machine with the Slurm client but no reachable controller that waits 10 s per invocation. These
    tests use the local executor, so a stub `scontrol` that fails at once goes first on PATH."""
    stub = tmp_path_factory.mktemp("stub")
    (stub / "scontrol").write_text("#!/bin/sh\nexit 1\n")
    (stub / "scontrol").chmod(0o755)
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(stub), str(Path(sys.executable).parent), env.get("PATH", "")])
    return env


@pytest.fixture(scope="session")
def tiny_run(smk_env, tmp_path_factory) -> Path:
    """The tiny campaign (config/tiny.yaml), run once per test session for tests/test_workflow.py and
    tests/test_report.py, in a results_dir with a space in its name (every path of every shell line must
    be quoted for it to work). Tests that change its files say so and run last (test_workflow.py)."""
    results = tmp_path_factory.mktemp("results") / "with space"
    run_snakemake(smk_env, results)
    return results
