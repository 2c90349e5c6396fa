"""Neighbour lists against ASE's, for molecules of several sizes and periodic cells in one call."""

from __future__ import annotations

import numpy as np
from ase.neighborlist import neighbor_list as ase_neighbor_list

from oedal.neighbors import neighbor_list


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
