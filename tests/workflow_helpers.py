"""What the workflow tests share (tests/test_workflow.py, tests/test_report.py): running Snakemake on a
config in a subprocess from the repository root, results in a given results_dir."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SNAKEMAKE = [sys.executable, "-m", "snakemake"]
TINY = ROOT / "config" / "tiny.yaml"


def run_snakemake(env: dict, results: Path, *args: str, config: Path = TINY, check: bool = True):
    cmd = [*SNAKEMAKE, "--configfile", str(config), "--config", f"results_dir={results}", "--cores", "2", *args]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    if check and proc.returncode != 0:
        raise AssertionError(f"snakemake failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-6000:]}")
    return proc
