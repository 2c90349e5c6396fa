"""A real one-node Slurm: bring it up and run the tiny two-iteration campaign through
`snakemake --profile profiles/slurm` (tests/slurm/run_slurm_campaign.sh).

Runs where it is root with apt-get (as CI is), unless OEDAL_TEST_SLURM=0: it installs Debian
packages and starts system daemons (stopped again on exit, by pid). One strategy and one round only, to stay quick.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

SCRIPT = Path(__file__).with_name("run_slurm_campaign.sh")
REPO = SCRIPT.parents[2]

pytestmark = [
    pytest.mark.slurm,
    pytest.mark.slow,
    pytest.mark.skipif(
        os.environ.get("OEDAL_TEST_SLURM") == "0" or os.geteuid() != 0 or shutil.which("apt-get") is None,
        reason="needs root and apt-get (and OEDAL_TEST_SLURM != 0)",
    ),
]


def test_slurm_campaign():
    proc = subprocess.run(
        ["bash", str(SCRIPT), "config/tiny.yaml"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=1800,
        # one strategy and one round (iter_000 → iter_001: every rule runs), squeue polled every second: a
        # job of this serial chain is ≈ 12 s of snakemake and python start-up, so each round costs ≈ 70 s
        env={**os.environ, "OEDAL_SLURM_STRATEGIES": "qs1-greedy", "OEDAL_SLURM_ITERATIONS": "1",
             "OEDAL_SLURM_SNAKEMAKE_ARGS": "--seconds-between-status-checks 1 "
                                           "--slurm-init-seconds-before-status-checks 1"},
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-6000:]
    if "skipped:" in proc.stdout:
        pytest.skip(proc.stdout.strip().splitlines()[-1])
    assert "job" in out and "ran on:" in out  # sbatch --wrap hostname worked
    assert "slurm campaign passed" in out, out[-6000:]
