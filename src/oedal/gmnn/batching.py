"""Batches of concatenated structures (no padding) with precomputed neighbour lists.

``BatchLoader`` computes the neighbour lists of a whole ``Structures`` once (oedal.gmnn.neighbors),
keeps every per-atom and per-pair array as one tensor on the target device, and builds each
batch by vectorised index arithmetic (ragged aranges) — no Python loop over structures per step.
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

import numpy as np
import torch

from oedal.data.structures import cell_volumes
from oedal.errors import InputError
from oedal.gmnn.neighbors import neighbor_list


class Batch(NamedTuple):
    """Structures concatenated along the atom axis (docs/interfaces.md)."""

    positions: torch.Tensor  # (n_atoms, 3) Å
    numbers: torch.Tensor  # (n_atoms,) int64 atomic numbers
    species: torch.Tensor  # (n_atoms,) int64 index into model.species
    structure: torch.Tensor  # (n_atoms,) int64, 0..n_structures-1
    pair_i: torch.Tensor  # (n_pairs,) int64 centre atom (batch index)
    pair_j: torch.Tensor  # (n_pairs,) int64 neighbour atom
    shifts: torch.Tensor  # (n_pairs, 3) Å: r_ij = R_j − R_i + shift
    n_structures: int
    energy: torch.Tensor | None  # (n_structures,) float64 eV
    forces: torch.Tensor | None  # (n_atoms, 3) eV/Å
    index: torch.Tensor  # (n_structures,) int64 positions in the source Structures
    stress: torch.Tensor | None = None  # (n_structures, 3, 3) float64 eV/Å³, NaN rows: no stress label
    volume: torch.Tensor | None = None  # (n_structures,) float64 Å³ (NaN where not periodic in 3D)

    def displacements(self) -> torch.Tensor:
        """r_ij = R_j − R_i + shift, (n_pairs, 3) Å."""
        return self.positions[self.pair_j] - self.positions[self.pair_i] + self.shifts

    @property
    def n_atoms(self) -> torch.Tensor:
        """(n_structures,) atoms per structure."""
        return torch.bincount(self.structure, minlength=self.n_structures)


def species_index(numbers: np.ndarray, species: Sequence[int], n_atoms: np.ndarray | None = None,
                  source: str = "structures") -> np.ndarray:
    """Map atomic numbers to indices into ``species``; unknown elements raise InputError."""
    lut = np.full(max(int(np.max(numbers, initial=0)), max(species, default=0)) + 1, -1, np.int64)
    lut[np.asarray(species, dtype=np.int64)] = np.arange(len(species))
    out = lut[np.asarray(numbers, dtype=np.int64)]
    bad = np.flatnonzero(out < 0)
    if len(bad):
        where = ""
        if n_atoms is not None:
            s = int(np.searchsorted(np.cumsum(n_atoms), bad[0], side="right"))
            where = f", structure index {s}"
        raise InputError(
            f"{source}: element Z={int(numbers[bad[0]])}{where} is unknown to the model (it knows Z={list(species)})"
        )
    return out


def ragged_arange(starts: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Concatenation of arange(starts[k], starts[k] + counts[k]) over k, vectorised."""
    counts = np.asarray(counts, dtype=np.int64)
    total = int(counts.sum())
    if total == 0:
        return np.zeros(0, np.int64)
    ends = np.cumsum(counts)
    base = np.repeat(np.asarray(starts, dtype=np.int64) - (ends - counts), counts)
    return base + np.arange(total, dtype=np.int64)


class BatchLoader:
    """Iterates over ``structures`` in batches of ``batch_size`` structures (docs/interfaces.md)."""

    def __init__(self, structures, cutoff: float, species: Sequence[int], batch_size: int,
                 shuffle: bool = False, seed: int = 0, device="cpu", dtype: torch.dtype = torch.float32,
                 source: str = "structures"):
        self.batch_size = int(batch_size)
        self.shuffle = shuffle
        self._rng = np.random.default_rng(seed)
        self.device = torch.device(device)
        self.dtype = dtype
        n_atoms = np.asarray(structures.n_atoms, dtype=np.int64)
        positions = np.asarray(structures.positions, dtype=np.float64)
        numbers = np.asarray(structures.numbers, dtype=np.int64)
        self.n_structures = len(n_atoms)
        self.n_atoms = n_atoms
        self.atom_offsets = np.concatenate([[0], np.cumsum(n_atoms)]).astype(np.int64)
        spec = species_index(numbers, species, n_atoms, source)
        cell = np.asarray(structures.cell, dtype=np.float64).reshape(-1, 3, 3)
        pbc = np.asarray(structures.pbc, dtype=bool).reshape(-1, 3)
        nl = neighbor_list(positions, n_atoms, cell, pbc, cutoff)
        self.n_pairs = nl.n_pairs
        self.pair_offsets = nl.offsets
        dev = self.device
        self._pos = torch.as_tensor(positions, dtype=dtype, device=dev)
        self._numbers = torch.as_tensor(numbers, device=dev)
        self._species = torch.as_tensor(spec, device=dev)
        self._pi = torch.as_tensor(nl.pair_i, device=dev)
        self._pj = torch.as_tensor(nl.pair_j, device=dev)
        self._shifts = torch.as_tensor(nl.shifts, dtype=dtype, device=dev)
        self._periodic = bool(pbc.any())
        energy = getattr(structures, "energy", None)
        forces = getattr(structures, "forces", None)
        self._energy = None if energy is None else torch.as_tensor(np.asarray(energy, np.float64), device=dev)
        self._forces = None if forces is None else torch.as_tensor(np.asarray(forces, np.float64), dtype=dtype,
                                                                    device=dev)
        stress = getattr(structures, "stress", None)
        self._stress = None if stress is None else torch.as_tensor(np.asarray(stress, np.float64), device=dev)
        self._volume = None if stress is None else torch.as_tensor(cell_volumes(cell, pbc), device=dev)  # (n,) Å³

    def __len__(self) -> int:
        return (self.n_structures + self.batch_size - 1) // self.batch_size

    def order(self) -> np.ndarray:
        return self._rng.permutation(self.n_structures) if self.shuffle else np.arange(self.n_structures)

    def __iter__(self):
        order = self.order()
        for start in range(0, self.n_structures, self.batch_size):
            yield self.batch(order[start : start + self.batch_size])

    def batch(self, index: np.ndarray) -> Batch:
        """The batch of the structures at ``index`` (positions in the source Structures)."""
        index = np.asarray(index, dtype=np.int64)
        na = self.n_atoms[index]
        npairs = self.n_pairs[index]
        atoms = ragged_arange(self.atom_offsets[index], na)
        pairs = ragged_arange(self.pair_offsets[index], npairs)
        new_offset = np.concatenate([[0], np.cumsum(na)[:-1]]).astype(np.int64)
        pair_base = np.repeat(new_offset, npairs)
        structure = np.repeat(np.arange(len(index), dtype=np.int64), na)
        dev = self.device
        atoms_t = torch.from_numpy(atoms).to(dev)
        pairs_t = torch.from_numpy(pairs).to(dev)
        base_t = torch.from_numpy(pair_base).to(dev)
        return Batch(
            positions=self._pos[atoms_t],
            numbers=self._numbers[atoms_t],
            species=self._species[atoms_t],
            structure=torch.from_numpy(structure).to(dev),
            pair_i=self._pi[pairs_t] + base_t,
            pair_j=self._pj[pairs_t] + base_t,
            shifts=self._shifts[pairs_t],
            n_structures=len(index),
            energy=None if self._energy is None else self._energy[torch.from_numpy(index).to(dev)],
            forces=None if self._forces is None else self._forces[atoms_t],
            index=torch.from_numpy(index).to(dev),
            stress=None if self._stress is None else self._stress[torch.from_numpy(index).to(dev)],
            volume=None if self._volume is None else self._volume[torch.from_numpy(index).to(dev)],
        )


def make_batch(structures, cutoff: float, species: Sequence[int], device="cpu",
               dtype: torch.dtype = torch.float32) -> Batch:
    """All of ``structures`` as one batch (neighbour lists computed now)."""
    loader = BatchLoader(structures, cutoff, species, batch_size=max(1, len(structures.n_atoms)),
                         device=device, dtype=dtype)
    return loader.batch(np.arange(loader.n_structures))
