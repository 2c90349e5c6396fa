"""Langevin MD pool generation (GFN2-xTB ethanol)."""

from __future__ import annotations

import numpy as np
import pytest

from oedal.data.store import StoreReader, read_store
from oedal.errors import InputError
from oedal.campaign.sampling import run_md, sample_pool, starting_geometry
from oedal.campaign.settings import SamplingSettings

pytest.importorskip("tblite")

SHORT = SamplingSettings(n_frames=20, interval=10, equilibration_steps=0, seed=7)  # 200 steps


@pytest.fixture(scope="module")
def short_md():
    return run_md(starting_geometry("ethanol"), SHORT)


def test_short_md_is_sane(short_md):
    s = short_md.structures
    assert len(s) == 20 and list(s.ids) == list(range(20))
    assert list(s.numbers[:9]) == list(starting_geometry("ethanol").numbers)
    assert np.all(np.isfinite(s.energy)) and np.all(np.isfinite(s.forces))
    frames = s.positions.reshape(20, 9, 3)
    steps = np.abs(np.diff(frames, axis=0)).max(axis=(1, 2))
    assert np.all(steps > 1e-3)  # frames differ
    assert np.all(steps < 1.0)  # ... but 5 fs apart, not teleported
    assert 400 < short_md.temperatures.mean() < 2000  # K, at 1000 K with 9 atoms
    assert np.ptp(s.energy) > 0.05  # eV: the MD explores
    bonds = np.linalg.norm(frames[:, 0] - frames[:, 1], axis=1)  # C–C
    assert np.all((bonds > 1.2) & (bonds < 1.9))  # the molecule stays intact


def test_md_is_reproducible_with_the_seed(short_md):
    again = run_md(starting_geometry("ethanol"), SHORT)
    np.testing.assert_array_equal(again.structures.positions, short_md.structures.positions)
    other = run_md(starting_geometry("ethanol"), SHORT.model_copy(update={"seed": 8, "n_frames": 3}))
    assert not np.allclose(other.structures.positions, short_md.structures.positions[: 3 * 9])


def test_frame_labels_are_the_potential_of_that_frame(short_md):
    from tblite.ase import TBLite

    atoms = short_md.structures.subset([5]).to_atoms()[0]
    expected = (atoms.get_potential_energy(), atoms.get_forces())
    atoms.calc = TBLite(verbosity=0)
    assert expected[0] == pytest.approx(atoms.get_potential_energy(), abs=1e-5)
    # the MD's SCF starts from the previous step's solution: equal to a fresh call within SCF noise
    np.testing.assert_allclose(expected[1], atoms.get_forces(), atol=5e-4)


def test_sample_pool_writes_an_unlabeled_store(tmp_path):
    settings = SHORT.model_copy(update={"n_frames": 5})
    sample_pool(settings, tmp_path / "pool.h5")
    with StoreReader(tmp_path / "pool.h5") as reader:
        assert not reader.has_labels and list(reader.ids) == [0, 1, 2, 3, 4]
    sample_pool(settings, tmp_path / "src.h5", labels=True)
    pool, source = read_store(tmp_path / "pool.h5"), read_store(tmp_path / "src.h5")
    np.testing.assert_array_equal(pool.positions, source.positions)
    assert source.has_labels and source.forces.shape == (45, 3)
    with pytest.raises(FileExistsError):
        sample_pool(settings, tmp_path / "pool.h5")


def test_cli_sample(tmp_path):
    from oedal.cli import main

    out = tmp_path / "pool.h5"
    args = ["sample", "--molecule", "ethanol", "--temperature", "500", "--n-frames", "4", "--interval", "5",
            "--timestep", "0.5", "--seed", "1", "--equilibration-steps", "0", "--out", str(out), "--labels"]
    assert main(args) == 0
    assert len(read_store(out)) == 4 and read_store(out).has_labels
    assert main(["sample", "--molecule", "no-such-thing", "--out", str(tmp_path / "x.h5")]) == 2


def test_starting_geometry():
    assert starting_geometry("ethanol").get_chemical_formula() == "C2H6O"
    assert len(starting_geometry("H2O")) == 3
    with pytest.raises(InputError, match="no-such"):
        starting_geometry("no-such")
