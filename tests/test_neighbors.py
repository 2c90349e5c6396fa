"""Neighbour lists against ASE's, for molecules of several sizes and periodic cells in one call."""

from __future__ import annotations

import numpy as np
from ase.neighborlist import neighbor_list as ase_neighbor_list

from oedal.gmnn.neighbors import neighbor_list


def test_neighbor_list_equals_ase_for_mixed_molecules_and_cells(ethanol_structures, small_periodic_cells):
    from oedal.data.structures import Structures

    frames = [*ethanol_structures.subset(np.arange(6)).to_atoms(), *small_periodic_cells.to_atoms()]
    rng = np.random.default_rng(0)
    order = rng.permutation(len(frames))  # interleave sizes and periodicity
    frames = [frames[k] for k in order]
    frames[1] = frames[1][:3]  # a smaller molecule or cell among them
    s = Structures.from_atoms(frames)
    cutoff = 3.0
    nl = neighbor_list(s.positions, s.n_atoms, s.cell, s.pbc, cutoff)
    offsets = nl.offsets
    assert offsets[-1] == len(nl.pair_i)
    for k, at in enumerate(frames):
        i_ref, j_ref, shift_ref = ase_neighbor_list("ijS", at, cutoff)
        shift_ref = shift_ref @ np.asarray(at.cell)
        sl = slice(offsets[k], offsets[k + 1])
        i, j, sh = nl.pair_i[sl], nl.pair_j[sl], nl.shifts[sl]
        assert np.all(np.diff(i) >= 0), "pairs grouped by centre atom"
        key = lambda a, b, c: sorted(zip(a.tolist(), b.tolist(), np.round(c, 6).tolist()))  # noqa: E731
        assert key(i, j, sh) == key(i_ref, j_ref, shift_ref), f"structure {k}"


def test_numba_molecule_pairs_equal_numpy_and_ase():
    """Molecules only (the ordered fast path): the numba loop, NumPy by size and ASE give the same
    pairs, for sizes 1 to 12 interleaved, a lone atom and a pair beyond the cut-off among them."""
    from ase import Atoms

    from oedal.data.structures import Structures
    from oedal.gmnn.kernels import using

    rng = np.random.default_rng(3)
    frames = [Atoms("C" * n, positions=rng.uniform(0, 4, (n, 3))) for n in rng.integers(1, 13, 40)]
    frames += [Atoms("H", positions=[[0, 0, 0]]), Atoms("H2", positions=[[0, 0, 0], [0, 0, 3.5]])]
    s = Structures.from_atoms(frames)
    cutoff = 3.0
    with using("numba"):
        fast = neighbor_list(s.positions, s.n_atoms, s.cell, s.pbc, cutoff)
    with using("torch"):  # NumPy, vectorised over the molecules of one size
        slow = neighbor_list(s.positions, s.n_atoms, s.cell, s.pbc, cutoff)
    for a, b in zip(fast, slow):
        np.testing.assert_array_equal(a, b)
    assert fast.n_pairs[-2:].tolist() == [0, 0]
    for k, at in enumerate(frames):
        i_ref, j_ref = ase_neighbor_list("ij", at, cutoff)
        sl = slice(fast.offsets[k], fast.offsets[k + 1])
        assert sorted(zip(fast.pair_i[sl].tolist(), fast.pair_j[sl].tolist())) == sorted(zip(i_ref.tolist(), j_ref.tolist()))
