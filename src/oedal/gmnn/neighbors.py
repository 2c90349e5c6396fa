"""Neighbour lists, computed once per structure in NumPy, outside autograd.

A pair (i, j) of one structure means "j is a neighbour of i within r_c"; with the periodic
shift ``shift`` (Å) the displacement is r_ij = R_j − R_i + shift (docs/interfaces.md). Lists
are *full* (both (i, j) and (j, i)). The model recomputes the displacements from positions and
shifts in torch, so forces flow through them.

* Non-periodic structures: all pairs within r_c from every structure's n×n distances (faster
  than a cell list for molecules): a numba loop (kernels.pairs.molecule_pairs; QM9's 130,831
  molecules in ≈ 0.1 s against ≈ 1.7 s, and it releases the GIL for the scoring threads), or on the
  torch kernel backend vectorised in NumPy over every structure with the same number of atoms.
* Periodic (any pbc direction true): vesin, one structure at a time.

A structure with a non-finite position or cell has no pairs (no neighbour list can be built for it):
every step that reads a store refuses such input before, and an exploration walker whose MD blew up
is stopped by its sanity check, so nothing here raises for one broken structure among many.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from oedal.gmnn.kernels import backend


class NeighborList(NamedTuple):
    """Pairs of a set of structures, concatenated; atom indices are local to their structure."""

    pair_i: np.ndarray  # (n_pairs,) int64, centre atom, 0..n_atoms[s]-1
    pair_j: np.ndarray  # (n_pairs,) int64, neighbour atom
    shifts: np.ndarray  # (n_pairs, 3) float64 Å, periodic shift: r_ij = R_j − R_i + shift
    n_pairs: np.ndarray  # (n_structures,) int64 pairs per structure

    @property
    def offsets(self) -> np.ndarray:
        """(n_structures + 1,) start of each structure's pairs."""
        return np.concatenate([[0], np.cumsum(self.n_pairs)]).astype(np.int64)


def _molecule_pairs(pos: np.ndarray, cutoff: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All pairs within ``cutoff`` for a stack of same-size molecules ``pos (m, n, 3)``.

    Returns (structure-in-stack, i, j) index arrays, ordered by structure then i then j.
    """
    m, n, _ = pos.shape
    if n < 2:
        empty = np.zeros(0, np.int64)
        return empty, empty, empty
    # chunk so the (chunk, n, n) distance array stays below ~64 MB
    chunk = max(1, int(8e6 // (n * n)))
    out_s, out_i, out_j = [], [], []
    eye = np.eye(n, dtype=bool)
    for start in range(0, m, chunk):
        p = pos[start : start + chunk]
        diff = p[:, None, :, :] - p[:, :, None, :]  # (c, n, n, 3): R_j − R_i
        d2 = np.einsum("cijx,cijx->cij", diff, diff)
        mask = (d2 < cutoff * cutoff) & ~eye
        s, i, j = np.nonzero(mask)
        out_s.append(s + start)
        out_i.append(i)
        out_j.append(j)
    return (np.concatenate(out_s).astype(np.int64), np.concatenate(out_i).astype(np.int64),
            np.concatenate(out_j).astype(np.int64))


def _periodic_pairs(pos: np.ndarray, cell: np.ndarray, pbc: np.ndarray, cutoff: float):
    from vesin import NeighborList as VesinNL

    nl = VesinNL(cutoff=cutoff, full_list=True, sorted=True)
    i, j, s = nl.compute(points=pos, box=cell, periodic=[bool(p) for p in pbc], quantities="ijS")
    shifts = s.astype(np.float64) @ cell  # (n_pairs, 3) Å
    return i.astype(np.int64), j.astype(np.int64), shifts


def neighbor_list(positions: np.ndarray, n_atoms: np.ndarray, cell: np.ndarray, pbc: np.ndarray,
                  cutoff: float) -> NeighborList:
    """Neighbour lists of ragged structures (``positions`` concatenated, Å) within ``cutoff`` (Å)."""
    n_atoms = np.asarray(n_atoms, dtype=np.int64)
    n_struct = len(n_atoms)
    offsets = np.concatenate([[0], np.cumsum(n_atoms)])
    pbc = np.asarray(pbc, dtype=bool).reshape(n_struct, 3)
    periodic = pbc.any(axis=1)
    parts = []  # (structure of every pair, i, j, shifts or None for molecules), each sorted by structure
    mol = np.flatnonzero(~periodic)
    kernels = backend().pairs
    if kernels is not None and len(mol):
        parts.append((*kernels.molecule_pairs(np.ascontiguousarray(positions, np.float64), offsets, mol, float(cutoff)),
                      None))
    else:  # molecules grouped by size, vectorised
        for n in np.unique(n_atoms[mol]):
            idx = mol[n_atoms[mol] == n]
            atom_idx = offsets[idx][:, None] + np.arange(n)[None, :]
            s, i, j = _molecule_pairs(positions[atom_idx], cutoff)  # positions (m, n, 3)
            parts.append((idx[s], i, j, None))
    for sidx in np.flatnonzero(periodic):
        a, b = offsets[sidx], offsets[sidx + 1]
        if not (np.isfinite(positions[a:b]).all() and np.isfinite(cell[sidx]).all()):
            continue  # no pairs (module docstring)
        i, j, sh = _periodic_pairs(positions[a:b], np.asarray(cell[sidx]), pbc[sidx], cutoff)
        parts.append((np.full(len(i), sidx, np.int64), i, j, sh))
    counts = np.zeros(n_struct, np.int64)
    for sid, *_ in parts:
        counts += np.bincount(sid, minlength=n_struct)
    if len(parts) == 1 and parts[0][3] is None:  # molecules only, already ordered by structure
        _, i, j, _ = parts[0]
        return NeighborList(i, j, np.zeros((len(i), 3)), counts)
    start = np.concatenate([[0], np.cumsum(counts)])
    n_pairs = int(start[-1])
    pair_i, pair_j = np.empty(n_pairs, np.int64), np.empty(n_pairs, np.int64)
    shifts = np.zeros((n_pairs, 3))  # untouched (lazily zero) pages for molecules
    for sid, i, j, sh in parts:  # scatter each part to its structures' slots: no global sort
        if len(sid) == 0:
            continue
        first = np.flatnonzero(np.r_[True, sid[1:] != sid[:-1]])  # where each structure's run starts
        rank = np.arange(len(sid)) - np.repeat(first, np.diff(np.r_[first, len(sid)]))
        dest = start[sid] + rank
        pair_i[dest] = i
        pair_j[dest] = j
        if sh is not None:
            shifts[dest] = sh
    return NeighborList(pair_i, pair_j, shifts, counts)
