"""Shared fixtures: the read-only reference data in ../shared/data and a small ethanol set."""

from __future__ import annotations

from pathlib import Path

import pytest

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
