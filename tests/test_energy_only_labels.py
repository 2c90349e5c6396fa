"""Energy-only labels (a data set without forces, e.g. QM9): the replay oracle serves energies alone, the
labeling job writes a labeled store without forces, the label cache keeps and serves them (never
quarantined, never recomputed), and a shard mixing labels with and without forces is a clear error."""

from __future__ import annotations

from pathlib import Path

import ase.io
import h5py
import numpy as np
import pytest
from ase import Atoms
from ase.build import molecule

from oedal.data import keys
from oedal.data.store import read_store, write_store
from oedal.data.structures import Structures
from oedal.errors import InputError
from oedal.oracles import Oracle, export_labels, get_oracle, label_store, oracle_settings
from oedal.oracles.base import ID_KEY
from oedal.oracles.cache.transfer import add_stores, check_cache

NAMES = ["H2O", "CH4", "NH3", "CO2", "C2H2", "HCN"]


def small_molecules(seed: int = 0) -> list[Atoms]:
    rng = np.random.default_rng(seed)
    frames = []
    for name in NAMES:
        atoms = molecule(name)
        atoms.positions += rng.normal(0.0, 0.02, atoms.positions.shape)
        frames.append(atoms)
    return frames


class CountingOracle(Oracle):
    """Wraps an oracle and records the id of every call (as tests/test_oracles.py counts them)."""

    def __init__(self, inner: Oracle, drop_forces_of: int | None = None):
        self.inner, self.drop_forces_of = inner, drop_forces_of
        self.calls: list[int] = []
        self.name = "counting " + inner.name

    def prepare(self, ids):
        self.inner.prepare(ids)

    def label(self, atoms):
        energy, forces = self.inner.label(atoms)
        ident = int(atoms.info[ID_KEY])
        self.calls.append(ident)
        return energy, None if ident == self.drop_forces_of else forces


@pytest.fixture
def qm9_like(tmp_path) -> tuple[Structures, Path, Path]:
    """(the source, an energy-only source store, the unlabeled pool of all its structures)."""
    source = Structures.from_atoms(small_molecules(), ids=np.arange(len(NAMES)) + 40)
    source.energy = np.random.default_rng(1).normal(-500.0, 50.0, len(NAMES))  # eV, no forces
    assert source.forces is None
    write_store(tmp_path / "source.h5", source)
    write_store(tmp_path / "pool.h5", source.without_labels())
    return source, tmp_path / "source.h5", tmp_path / "pool.h5"


def test_replay_of_an_energy_only_source_gives_energies_without_forces(qm9_like):
    source, store, _ = qm9_like
    oracle = get_oracle(oracle_settings(kind="replay", source=str(store)))
    oracle.prepare(source.ids)
    for k, atoms in enumerate(source.without_labels().to_atoms()):
        energy, forces = oracle.label(atoms)
        assert energy == source.energy[k] and forces is None
    atoms = source.without_labels().to_atoms()[2]  # not preloaded: read on demand
    assert oracle.label(atoms) == (source.energy[2], None)


def test_energy_only_labels_are_written_cached_and_served_without_recomputing(qm9_like, tmp_path):
    source, store, pool = qm9_like
    settings = oracle_settings(kind="replay", source=str(store))
    cache = tmp_path / "labels.sqlite"
    first = CountingOracle(get_oracle(settings))
    report = label_store(pool, tmp_path / "l1.h5", None, settings, oracle=first, cache=cache)
    assert (report.n_labeled, report.n_failed, report.n_oracle_calls) == (len(NAMES), 0, len(NAMES))
    with h5py.File(tmp_path / "l1.h5", "r") as f:
        assert keys.ENERGY in f and keys.FORCES not in f
    labeled = read_store(tmp_path / "l1.h5")
    np.testing.assert_array_equal(labeled.ids, source.ids)
    np.testing.assert_array_equal(labeled.energy, source.energy)
    assert labeled.forces is None

    again = CountingOracle(get_oracle(settings))  # a second run: everything from the cache
    report = label_store(pool, tmp_path / "l2.h5", None, settings, oracle=again, cache=cache)
    assert again.calls == [] and (report.n_oracle_calls, report.n_cached) == (0, len(NAMES))
    np.testing.assert_array_equal(read_store(tmp_path / "l2.h5").energy, source.energy)
    with h5py.File(tmp_path / "l2.h5", "r") as f:
        assert keys.FORCES not in f

    assert check_cache(cache) == (len(NAMES), [])  # the check on read finds nothing to quarantine
    assert export_labels(cache, tmp_path / "x.extxyz") == len(NAMES)
    exported = ase.io.read(tmp_path / "x.extxyz", ":")
    np.testing.assert_allclose([a.get_potential_energy() for a in exported], source.energy)
    assert all("forces" not in a.calc.results for a in exported)

    refilled = tmp_path / "refilled.sqlite"  # a cache rebuilt from the energy-only labeled store
    assert add_stores(refilled, [tmp_path / "l1.h5"]).labels == len(NAMES)
    third = CountingOracle(get_oracle(settings))
    report = label_store(pool, tmp_path / "l3.h5", None, settings, oracle=third, cache=refilled)
    assert third.calls == [] and report.n_cached == len(NAMES)
    np.testing.assert_array_equal(read_store(tmp_path / "l3.h5").energy, source.energy)


def test_a_shard_mixing_labels_with_and_without_forces_is_refused(tmp_path):
    source = Structures.from_atoms(small_molecules(), ids=np.arange(len(NAMES)) + 40)
    rng = np.random.default_rng(2)
    source.energy = rng.normal(size=len(NAMES))
    source.forces = rng.normal(size=(source.n_atoms_total, 3))
    write_store(tmp_path / "source.h5", source)
    write_store(tmp_path / "pool.h5", source.without_labels())
    settings = oracle_settings(kind="replay", source=str(tmp_path / "source.h5"))
    oracle = CountingOracle(get_oracle(settings), drop_forces_of=43)
    with pytest.raises(InputError, match=r"id 43 has no forces .*mixes labels with and without forces") as err:
        label_store(tmp_path / "pool.h5", tmp_path / "l.h5", tmp_path / "f.h5", settings, oracle=oracle,
                    cache=tmp_path / "c.sqlite")
    assert "\n" not in str(err.value)
    assert not (tmp_path / "l.h5").exists() and not (tmp_path / "f.h5").exists()


def test_a_source_with_forces_is_still_served_with_forces(tmp_path):
    source = Structures.from_atoms(small_molecules(), ids=np.arange(len(NAMES)))
    rng = np.random.default_rng(3)
    source.energy = rng.normal(size=len(NAMES))
    source.forces = rng.normal(size=(source.n_atoms_total, 3))
    write_store(tmp_path / "source.h5", source)
    write_store(tmp_path / "pool.h5", source.without_labels())
    settings = oracle_settings(kind="replay", source=str(tmp_path / "source.h5"))
    cache = tmp_path / "c.sqlite"
    label_store(tmp_path / "pool.h5", tmp_path / "l1.h5", None, settings, cache=cache)
    again = CountingOracle(get_oracle(settings))
    label_store(tmp_path / "pool.h5", tmp_path / "l2.h5", None, settings, oracle=again, cache=cache)
    assert again.calls == []
    for out in ("l1.h5", "l2.h5"):
        labeled = read_store(tmp_path / out)
        np.testing.assert_array_equal(labeled.energy, source.energy)
        np.testing.assert_array_equal(labeled.forces, source.forces)
