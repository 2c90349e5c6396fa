"""Where a report's numbers come from: package versions, the data set's checksum, the git revision of
the workflow and the campaign settings."""

from __future__ import annotations

import subprocess
from importlib import metadata
from pathlib import Path

PACKAGES = ("oedal", "torch", "numpy", "ase", "h5py", "snakemake", "matplotlib", "scipy")


def package_versions(names: tuple[str, ...] = PACKAGES) -> dict[str, str]:
    """Installed version of each package ("not installed" when missing)."""
    out = {}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def data_checksums(root: Path) -> dict[str, str]:
    """SHA-256 of every store of the campaign's data folder (``data/*.h5``: the source, transfer sets)."""
    from oedal.data.datasets import sha256_of

    return {p.name: sha256_of(p) for p in sorted((root / "data").glob("*.h5"))}


def git_revision(cwd: Path | None = None) -> str:
    """``git rev-parse HEAD`` of the working directory, with ``(modified)`` when the tree has changes;
    "unknown" outside a git checkout."""
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=10)
        if head.returncode != 0:
            return "unknown (not a git checkout)"
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=cwd,
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return "unknown (git not available)"
    return head.stdout.strip() + (" (modified)" if dirty else "")
