"""Names of the datasets and attributes of every HDF5 layout oedal writes (one place for every key).

Layouts in docs/file-formats.md: the structure store (train/valid/pool/selected/labeled.h5, DESIGN §3),
the failure records (failed.h5 = a structure store plus two datasets) and the scores file (scores.h5).
Per-atom arrays are concatenated over structures, per-structure arrays have one row per structure;
offsets = cumsum of ``n_atoms``. The label cache is an SQLite file: its tables are in
:mod:`oedal.oracles.cache`.
"""

from __future__ import annotations

# -- Structure store ------------------------------------------------------------------------------
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
STRESS = "stress"  # (n, 3, 3) float64 eV/Å³, σ = (1/V) ∂E/∂ε (ASE's sign), optional; a NaN row = no stress label
CLASS = "class"  # (n,) UTF-8 bytes: the structure's class in a heterogeneous set ("" = none), optional
HASH = "hash"  # (n,) S64 ASCII: content hash (oedal.data.identity); optional, computed on read when absent

PER_ATOM = (POSITIONS, NUMBERS, FORCES)

# File attributes.
ATTR_FORMAT = "format"
ATTR_FORMAT_VERSION = "format_version"
ATTR_UNITS = "units"
ATTR_SOURCE = "source"
ATTR_N_STRUCTURES = "n_structures"
ATTR_N_ATOMS_TOTAL = "n_atoms_total"
ATTR_HASH_SCHEME = "hash_scheme"  # how HASH was computed (oedal.data.identity.HASH_SCHEME)

FORMAT_NAME = "oedal-structures"
FORMAT_VERSION = 1
UNITS = "positions: Angstrom; cell: Angstrom; energy: eV; forces: eV/Angstrom; stress: eV/Angstrom^3"

# -- Failure records (failed.h5: a structure store without labels, plus) --------------------------
REASON = "reason"  # (n,) UTF-8 string: why the oracle failed
ATTEMPTS = "attempts"  # (n,) int64: how many times the oracle was tried

# -- Scores file (scores.h5): n pool structures, d = width of the last hidden layer ---------------
# ID and N_ATOMS as in the store (pool ids and atoms per pool structure), and
SCORE = "score"  # (n,) float64: the strategy's score (eq. 14 / 21 / 22, or the QbC spread eq. 24)
INFORMATIVENESS = "informativeness"  # (n,) float64: I = score / σ_th (section 3.3)
TRAIN_ID = "train_id"  # (n_train,) int64: ids of the training structures
TRAIN_HASH = "train_hash"  # (n_train,) S64: content hashes of the training structures (exclusion by content)
TRAIN_SCORE = "train_score"  # (n_train,) float64: their scores (σ_th = median or mean)
SCORE_QS1 = "score_qs1"  # (n,) float64: the energy part (qs1, qs3)
SCORE_QS2 = "score_qs2"  # (n,) float64: the force part (qs2, qs3)
U_ENERGY = "u_energy"  # (n, d) float32: projected energy sensitivities u = C⁻¹g
U_FORCES = "u_forces"  # (Σ 3 N_at, d) float32: projected force sensitivities, ragged
U_FORCES_COUNTS = "u_forces_counts"  # (n,) int64: rows of u_forces per structure (3 N_at)
G_TRAIN = "g_train"  # (n_train, d) float64: raw QS1 sensitivities of the training set (optional)
G_POOL = "g_pool"  # (n, d) float64: raw QS1 sensitivities of the pool (optional)
ENERGY_STD = "energy_std"  # (n,) float64 eV: qbc committee std of the total energy
FORCE_STD = "force_std"  # (n,) float64 eV/Å: qbc RMS over the force components of the committee std
