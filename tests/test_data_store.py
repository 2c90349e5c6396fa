"""The HDF5 structure store and the Structures container."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest

from oedal.data import StoreReader, Structures, read_store, write_store
from oedal.data import keys
from oedal.data import store as store_mod
from oedal.data.structures import atom_index
from oedal.errors import InputError


def random_structures(n: int, seed: int = 0, labels: bool = True, periodic: bool = False) -> Structures:
    """Varying-size random structures (1..12 atoms), ids that are not 0..n−1."""
    rng = np.random.default_rng(seed)
    n_atoms = rng.integers(1, 13, size=n)
    total = int(n_atoms.sum())
    cell = np.tile(np.eye(3) * 10.0, (n, 1, 1)) if periodic else np.zeros((n, 3, 3))
    return Structures(
        positions=rng.normal(size=(total, 3)) * 3,
        numbers=rng.integers(1, 9, size=total),
        n_atoms=n_atoms,
        cell=cell,
        pbc=np.full((n, 3), periodic),
        ids=rng.permutation(10 * n)[:n],
        energy=rng.normal(size=n) if labels else None,
        forces=rng.normal(size=(total, 3)) if labels else None,
    )


def assert_same(a: Structures, b: Structures) -> None:
    for name in ("positions", "numbers", "n_atoms", "cell", "pbc", "ids", "energy", "forces"):
        x, y = getattr(a, name), getattr(b, name)
        if x is None or y is None:
            assert x is None and y is None, name
        else:
            assert x.dtype == y.dtype and np.array_equal(x, y), name


def test_round_trip_is_bit_exact(tmp_path: Path) -> None:
    s = random_structures(500, periodic=True)
    path = write_store(tmp_path / "s.h5", s, attrs={"source": "unit test", "extra": {"a": 1}})
    back = read_store(path)
    assert_same(s, back)
    assert back.positions.dtype == np.float64 and back.numbers.dtype == np.int64 and back.pbc.dtype == bool
    with StoreReader(path) as r:
        assert len(r) == 500 and r.has_labels and r.has_forces
        assert r.attrs[keys.ATTR_SOURCE] == "unit test"
        assert r.attrs[keys.ATTR_FORMAT_VERSION] == keys.FORMAT_VERSION
        assert "eV" in r.attrs[keys.ATTR_UNITS]
        np.testing.assert_array_equal(r.ids, s.ids)
    with h5py.File(path) as h5:  # chunked and compressed
        assert h5[keys.POSITIONS].chunks is not None and h5[keys.POSITIONS].compression == "gzip"


def test_store_without_labels_has_no_label_datasets(tmp_path: Path) -> None:
    s = random_structures(50).without_labels()
    write_store(tmp_path / "pool.h5", s)
    with h5py.File(tmp_path / "pool.h5") as h5:
        assert keys.ENERGY not in h5 and keys.FORCES not in h5
    back = read_store(tmp_path / "pool.h5", [3, 1])
    assert back.energy is None and back.forces is None and not back.has_labels


def test_chunks_equal_full_read(tmp_path: Path) -> None:
    s = random_structures(1000, seed=1)
    write_store(tmp_path / "s.h5", s)
    with StoreReader(tmp_path / "s.h5") as r:
        chunks = list(r.iter_chunks(137))
    assert [len(c) for c in chunks] == [137] * 7 + [1000 - 7 * 137]
    assert_same(Structures.concatenate(chunks), s)


@pytest.mark.parametrize("sl", [slice(0, 1), slice(10, 20), slice(995, 1000), slice(5, 5), slice(3, 40, 7), slice(-3, None)])
def test_slices_have_correct_offsets(tmp_path: Path, sl: slice) -> None:
    s = random_structures(1000, seed=2)
    write_store(tmp_path / "s.h5", s)
    assert_same(read_store(tmp_path / "s.h5", sl), s.subset(sl))


def test_random_indices_any_order_with_repeats(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    s = random_structures(3000, seed=3)
    write_store(tmp_path / "s.h5", s)
    rng = np.random.default_rng(0)
    idx = np.concatenate([rng.choice(3000, 400, replace=False), [7, 7, 2999, 0, -1]])
    monkeypatch.setattr(store_mod, "MAX_GAP_ATOMS", 50)  # force many separate ranges
    monkeypatch.setattr(store_mod, "MAX_RANGE_ATOMS", 300)
    with StoreReader(tmp_path / "s.h5") as r:
        assert_same(r.read(idx), s.subset(idx))
        assert_same(r.read([]), s.subset([]))
        with pytest.raises(IndexError):
            r.read([3000])


def test_read_range_touches_only_its_atom_rows(tmp_path: Path) -> None:
    s = random_structures(200, seed=4)
    write_store(tmp_path / "s.h5", s)
    reads: list[tuple] = []
    with StoreReader(tmp_path / "s.h5") as r:
        original = h5py.Dataset.__getitem__

        def spy(self, key):  # record which rows each per-atom read asks for
            if self.name.strip("/") in keys.PER_ATOM:
                reads.append((self.name, key))
            return original(self, key)

        h5py.Dataset.__getitem__ = spy
        try:
            r.read(slice(50, 60))
        finally:
            h5py.Dataset.__getitem__ = original
    a, b = int(s.offsets[50]), int(s.offsets[60])
    assert reads and all(key == slice(a, b) for _, key in reads)


def test_coalesce_ranges() -> None:
    offsets = np.arange(0, 101) * 10  # 100 structures of 10 atoms
    got = store_mod.coalesce(offsets, np.array([0, 1, 2, 50, 99]))
    assert got == [(0, 100)]  # all within the gap bound
    store_ranges = []
    old = store_mod.MAX_GAP_ATOMS
    try:
        store_mod.MAX_GAP_ATOMS = 15
        store_ranges = store_mod.coalesce(offsets, np.array([0, 1, 2, 50, 99]))
    finally:
        store_mod.MAX_GAP_ATOMS = old
    assert store_ranges == [(0, 3), (50, 51), (99, 100)]


def test_atomic_write_keeps_old_file_on_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "s.h5"
    old = random_structures(20, seed=5)
    write_store(path, old)

    def boom(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(store_mod, "_write_datasets", boom)
    with pytest.raises(RuntimeError):
        write_store(path, random_structures(30, seed=6))
    with pytest.raises(RuntimeError):
        write_store(tmp_path / "new.h5", random_structures(30, seed=6))
    assert not (tmp_path / "new.h5").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.h5"]  # no temporary left behind
    assert_same(read_store(path), old)


def test_overwrite_false_refuses(tmp_path: Path) -> None:
    write_store(tmp_path / "s.h5", random_structures(3))
    with pytest.raises(FileExistsError):
        write_store(tmp_path / "s.h5", random_structures(3), overwrite=False)


def test_not_a_store_is_an_input_error(tmp_path: Path) -> None:
    with h5py.File(tmp_path / "x.h5", "w") as h5:
        h5["a"] = [1]
    with pytest.raises(InputError, match="x.h5"):
        read_store(tmp_path / "x.h5")
    (tmp_path / "t.h5").write_text("text")
    with pytest.raises(InputError, match="t.h5"):
        read_store(tmp_path / "t.h5")
    with pytest.raises(FileNotFoundError):
        read_store(tmp_path / "missing.h5")


def test_empty_store(tmp_path: Path) -> None:
    write_store(tmp_path / "e.h5", Structures.empty())
    back = read_store(tmp_path / "e.h5")
    assert len(back) == 0 and back.positions.shape == (0, 3)


def test_structures_helpers() -> None:
    s = random_structures(10, seed=7, periodic=True)
    assert s.offsets[0] == 0 and s.offsets[-1] == s.n_atoms_total and len(s.offsets) == 11
    np.testing.assert_array_equal(atom_index(s.offsets, np.array([2])), np.arange(s.offsets[2], s.offsets[3]))
    sub = s.subset([4, 1])
    np.testing.assert_array_equal(sub.positions[: s.n_atoms[4]], s.positions[s.offsets[4] : s.offsets[5]])
    assert_same(Structures.concatenate([s.subset(range(4)), s.subset(range(4, 10))]), s)
    atoms = s.to_atoms()
    assert len(atoms) == 10 and atoms[3].info["id"] == s.ids[3] and atoms[3].pbc.all()
    assert atoms[3].get_potential_energy() == s.energy[3]
    back = Structures.from_atoms(atoms)
    assert_same(back, s)
    bare = s.without_labels()
    assert not bare.has_labels and bare.forces is None and s.has_labels


# ---- content hashes (DESIGN §10) -----------------------------------------------------------------


def test_content_hash_is_stored_and_names_the_content_not_the_id(tmp_path):
    from oedal.data.identity import content_hashes

    s = random_structures(20, seed=3, periodic=True)
    write_store(tmp_path / "a.h5", s)
    with h5py.File(tmp_path / "a.h5") as f:
        assert f[keys.HASH].dtype == np.dtype("S64") and f.attrs[keys.ATTR_HASH_SCHEME]
    with StoreReader(tmp_path / "a.h5") as reader:
        np.testing.assert_array_equal(reader.hashes, content_hashes(s))
    other_ids = s.subset(np.arange(20))
    other_ids.ids = other_ids.ids + 1000
    np.testing.assert_array_equal(content_hashes(other_ids), content_hashes(s))  # the id is not content
    for change in ("positions", "numbers", "cell", "pbc"):
        t = s.subset(np.arange(20))
        array = getattr(t, change)
        array[0] = ~array[0] if change == "pbc" else array[0] + 1
        assert content_hashes(t)[0] != content_hashes(s)[0], change
        np.testing.assert_array_equal(content_hashes(t)[1:], content_hashes(s)[1:])


def test_content_hash_survives_float32_and_signed_zero(tmp_path):
    from oedal.data.identity import content_hashes

    s = random_structures(50, seed=4, periodic=True)
    s.positions[:5] = 0.0
    f32 = s.subset(np.arange(50))
    f32.positions = s.positions.astype(np.float32).astype(np.float64)  # written in float32, read back
    f32.cell = s.cell.astype(np.float32).astype(np.float64)
    f32.positions[:5] = -0.0
    np.testing.assert_array_equal(content_hashes(f32), content_hashes(s))
    moved = s.subset(np.arange(50))
    moved.positions[s.offsets[:-1]] += 1e-4  # a physically different geometry (Å)
    assert not np.any(content_hashes(moved) == content_hashes(s))


def test_a_store_of_the_previous_layout_is_hashed_on_read(tmp_path):
    """Stores written before hashes were stored (no `hash` dataset, no `hash_scheme`) still read."""
    from oedal.data.identity import content_hashes

    s = random_structures(30, seed=5)
    write_store(tmp_path / "old.h5", s)
    with h5py.File(tmp_path / "old.h5", "a") as f:
        del f[keys.HASH]
        del f.attrs[keys.ATTR_HASH_SCHEME]
    with StoreReader(tmp_path / "old.h5") as reader:
        np.testing.assert_array_equal(reader.hashes, content_hashes(s))
        assert_same(reader.read(), s)
