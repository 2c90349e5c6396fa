"""A real one-node Slurm: bring it up and run the tiny two-iteration campaign through
`snakemake --profile profiles/slurm` (tests/slurm/run_slurm_campaign.sh).

Runs only with OEDAL_TEST_SLURM=1 (CI sets it where it is root and apt-get exists): it installs
Debian packages and starts system daemons (stopped again on exit).
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

SCRIPT = Path(__file__).with_name("run_slurm_campaign.sh")
REPO = SCRIPT.parents[2]

pytestmark = [
    pytest.mark.slurm,
    pytest.mark.slow,
    pytest.mark.skipif(os.environ.get("OEDAL_TEST_SLURM") != "1", reason="set OEDAL_TEST_SLURM=1 (root + apt)"),
]


def test_slurm_campaign():
    proc = subprocess.run(
        ["bash", str(SCRIPT), "config/tiny.yaml"], cwd=REPO, capture_output=True, text=True, timeout=1800
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-6000:]
    if "skipped:" in proc.stdout:
        pytest.skip(proc.stdout.strip().splitlines()[-1])
    assert "job" in out and "ran on:" in out  # sbatch --wrap hostname worked
    assert "slurm campaign passed" in out, out[-6000:]
