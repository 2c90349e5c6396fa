"""Names of the datasets and attributes of the HDF5 structure store (one place for every key).

Layout (DESIGN §3, docs/file-formats.md "Structure store"): per-atom arrays are concatenated over
structures, per-structure arrays have one row per structure; offsets = cumsum of ``n_atoms``.
"""

from __future__ import annotations

# Per-atom datasets, concatenated over structures.
POSITIONS = "positions"  # (n_atoms_total, 3) float64 Å
NUMBERS = "numbers"  # (n_atoms_total,) atomic numbers (uint8 on disk, int64 in memory)
FORCES = "forces"  # (n_atoms_total, 3) float64 eV/Å, optional

# Per-structure datasets.
N_ATOMS = "n_atoms"  # (n,) int64
ENERGY = "energy"  # (n,) float64 eV (total energy), optional
CELL = "cell"  # (n, 3, 3) float64 Å, rows are lattice vectors (zeros when not periodic)
PBC = "pbc"  # (n, 3) bool
ID = "id"  # (n,) int64 stable id = index in the source data set

PER_ATOM = (POSITIONS, NUMBERS, FORCES)
PER_STRUCTURE = (N_ATOMS, ENERGY, CELL, PBC, ID)
LABELS = (ENERGY, FORCES)

# File attributes.
ATTR_FORMAT = "format"
ATTR_FORMAT_VERSION = "format_version"
ATTR_UNITS = "units"
ATTR_SOURCE = "source"
ATTR_N_STRUCTURES = "n_structures"
ATTR_N_ATOMS_TOTAL = "n_atoms_total"

FORMAT_NAME = "oedal-structures"
FORMAT_VERSION = 1
UNITS = "positions: Angstrom; cell: Angstrom; energy: eV; forces: eV/Angstrom"
