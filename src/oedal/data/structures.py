"""The in-memory, ragged collection of atomic structures (Å, eV, eV/Å, eV/Å³)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


def offsets_from_counts(n_atoms: np.ndarray) -> np.ndarray:
    """Start of every structure in the concatenated per-atom arrays: (n+1,) int64, last = total."""
    out = np.zeros(len(n_atoms) + 1, dtype=np.int64)
    np.cumsum(n_atoms, out=out[1:])
    return out


def atom_index(offsets: np.ndarray, indices: np.ndarray) -> np.ndarray:
    """Per-atom row indices of the structures ``indices`` (in that order): (sum n_atoms[indices],) int64."""
    indices = np.asarray(indices, dtype=np.int64)
    starts = offsets[indices]
    counts = offsets[indices + 1] - starts
    total = int(counts.sum())
    if total == 0:
        return np.zeros(0, dtype=np.int64)
    # position within each structure = global position − start of its block in the output
    block_start = np.repeat(np.cumsum(counts) - counts, counts)
    return np.repeat(starts, counts) + (np.arange(total, dtype=np.int64) - block_start)


def element_counts(index: np.ndarray, n_atoms: np.ndarray, n_kinds: int) -> np.ndarray:
    """(n_structures, n_kinds) float64: how many atoms of each kind every structure has, from each atom's kind
    ``index`` (n_atoms_total,) in 0..n_kinds−1 and the atoms per structure ``n_atoms``."""
    n_atoms = np.asarray(n_atoms, np.int64)
    structure = np.repeat(np.arange(len(n_atoms)), n_atoms)
    flat = np.bincount(structure * n_kinds + np.asarray(index, np.int64), minlength=len(n_atoms) * n_kinds)
    return flat.reshape(len(n_atoms), n_kinds).astype(np.float64)


def cell_volumes(cell: np.ndarray, pbc: np.ndarray) -> np.ndarray:
    """(n,) float64 Å³: |det| of each cell (rows = lattice vectors), NaN where not periodic in all three directions
    (no volume, no stress)."""
    cell = np.asarray(cell, dtype=np.float64).reshape(-1, 3, 3)
    return np.where(np.asarray(pbc, dtype=bool).reshape(-1, 3).all(axis=1), np.abs(np.linalg.det(cell)), np.nan)


def _opt(a: np.ndarray | None, dtype: type) -> np.ndarray | None:
    return None if a is None else np.ascontiguousarray(a, dtype=dtype)


def _rows3(a: np.ndarray) -> np.ndarray:
    """Per-atom vectors as (k, 3) float64: a flat or empty array is laid out in rows of 3; any other shape
    is kept as it is, for :func:`oedal.data.validate.check_shapes` to refuse (a silent reshape of an
    (n, 4) array would turn it into other atoms)."""
    a = np.ascontiguousarray(a, dtype=np.float64)
    return a.reshape(-1, 3) if a.ndim == 1 or a.size == 0 else a


def _tensors(a: np.ndarray) -> np.ndarray:
    """Per-structure 3×3 tensors as (n, 3, 3) float64; other shapes are kept for check_shapes to refuse."""
    a = np.ascontiguousarray(a, dtype=np.float64)
    return a.reshape(-1, 3, 3) if a.size == 0 or (a.ndim == 2 and a.shape[1] == 9) else a


def _full_stress(sigma) -> np.ndarray:
    """ASE's stress (Voigt 6: xx yy zz yz xz xy, or 3×3) as a 3×3 array, eV/Å³."""
    from ase.stress import voigt_6_to_full_3x3_stress

    sigma = np.asarray(sigma, dtype=np.float64)
    return voigt_6_to_full_3x3_stress(sigma) if sigma.shape == (6,) else sigma.reshape(3, 3)


def _stress_label(atoms, results: dict) -> np.ndarray | None:
    """A frame's stress (3, 3) eV/Å³: the calculator's ``stress``, else extxyz's ``stress`` or ``virial`` in
    ``atoms.info`` (the GAP/MACE convention: virial W = −V σ in eV, 9 or 6 values), else None."""
    if results.get("stress") is not None:
        return _full_stress(results["stress"])
    if atoms.info.get("stress") is not None:
        return _full_stress(atoms.info["stress"])
    if atoms.info.get("virial") is not None and atoms.pbc.all():
        return -_full_stress(atoms.info["virial"]) / atoms.get_volume()
    return None


@dataclass
class Structures:
    """Ragged structures; arrays are cast to the contract's dtypes on construction.

    positions (n_atoms_total, 3) float64 Å; numbers (n_atoms_total,) int64; n_atoms (n,) int64;
    cell (n, 3, 3) float64 Å (rows = lattice vectors); pbc (n, 3) bool; ids (n,) int64 (index in
    the source data set); energy (n,) float64 eV or None; forces (n_atoms_total, 3) float64 eV/Å or None;
    classes (n,) str or None: the group a structure belongs to in a heterogeneous set (the W–Be group, a QM9
    size class, extxyz ``config_type``; "" = none), for errors and picks per class (DESIGN §11);
    stress (n, 3, 3) float64 eV/Å³ or None: σ = (1/V) ∂E/∂ε, ASE's sign (a compressed cell has σ < 0), a NaN row
    where a structure has no stress label (a molecule in a mixed set; DESIGN §12).
    Shapes are not checked here: :func:`oedal.data.validate.validate_structures` does that.
    """

    positions: np.ndarray
    numbers: np.ndarray
    n_atoms: np.ndarray
    cell: np.ndarray
    pbc: np.ndarray
    ids: np.ndarray
    energy: np.ndarray | None = None
    forces: np.ndarray | None = None
    classes: np.ndarray | None = None
    stress: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.positions = _rows3(self.positions)
        self.numbers = np.ascontiguousarray(self.numbers, dtype=np.int64).reshape(-1)
        self.n_atoms = np.ascontiguousarray(self.n_atoms, dtype=np.int64).reshape(-1)
        self.cell = np.ascontiguousarray(self.cell, dtype=np.float64)
        self.pbc = np.ascontiguousarray(self.pbc, dtype=bool)
        self.ids = np.ascontiguousarray(self.ids, dtype=np.int64).reshape(-1)
        self.energy = _opt(self.energy, np.float64)
        self.forces = None if self.forces is None else _rows3(self.forces)
        self.classes = None if self.classes is None else np.asarray(self.classes, dtype=str).reshape(-1)
        self.stress = None if self.stress is None else _tensors(self.stress)

    def __len__(self) -> int:
        return len(self.n_atoms)

    @property
    def offsets(self) -> np.ndarray:
        """(n+1,) int64 start of each structure in the per-atom arrays."""
        return offsets_from_counts(self.n_atoms)

    @property
    def has_labels(self) -> bool:
        """True when energies are present (forces may still be absent, e.g. QM9)."""
        return self.energy is not None

    @property
    def has_forces(self) -> bool:
        return self.forces is not None

    @property
    def has_stress(self) -> bool:
        """True when a stress dataset is present (rows may still be NaN: structures without a stress label)."""
        return self.stress is not None

    @property
    def n_atoms_total(self) -> int:
        return len(self.numbers)

    def subset(self, indices: np.ndarray | Sequence[int] | slice) -> "Structures":
        """Structures at ``indices`` (any order, repeats allowed) or a slice, as a new object."""
        if isinstance(indices, slice):
            indices = np.arange(len(self))[indices]
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        if len(idx) and (idx.min() < -len(self) or idx.max() >= len(self)):
            raise IndexError(f"structure index out of range for {len(self)} structures")
        idx = np.where(idx < 0, idx + len(self), idx)
        rows = atom_index(self.offsets, idx)
        return Structures(
            positions=self.positions[rows],
            numbers=self.numbers[rows],
            n_atoms=self.n_atoms[idx],
            cell=self.cell[idx],
            pbc=self.pbc[idx],
            ids=self.ids[idx],
            energy=None if self.energy is None else self.energy[idx],
            forces=None if self.forces is None else self.forces[rows],
            classes=None if self.classes is None else self.classes[idx],
            stress=None if self.stress is None else self.stress[idx],
        )

    @staticmethod
    def concatenate(parts: Sequence["Structures"]) -> "Structures":
        """Join structures; energies and forces are kept only when every part has them, classes and stress when
        any part has them (the structures of a part without get "" and a NaN row: no stress label)."""
        if not parts:
            return Structures.empty()
        with_e = all(p.energy is not None for p in parts)
        with_f = all(p.forces is not None for p in parts)
        with_c = any(p.classes is not None for p in parts)
        with_s = any(p.stress is not None for p in parts)
        return Structures(
            positions=np.concatenate([p.positions for p in parts]),
            numbers=np.concatenate([p.numbers for p in parts]),
            n_atoms=np.concatenate([p.n_atoms for p in parts]),
            cell=np.concatenate([p.cell for p in parts]),
            pbc=np.concatenate([p.pbc for p in parts]),
            ids=np.concatenate([p.ids for p in parts]),
            energy=np.concatenate([p.energy for p in parts]) if with_e else None,  # type: ignore[misc]
            forces=np.concatenate([p.forces for p in parts]) if with_f else None,  # type: ignore[misc]
            classes=np.concatenate([p.class_names() for p in parts]) if with_c else None,
            stress=np.concatenate([p.stress_rows() for p in parts]) if with_s else None,
        )

    def stress_rows(self) -> np.ndarray:
        """(n, 3, 3) eV/Å³: each structure's stress, NaN where it has none."""
        return self.stress if self.stress is not None else np.full((len(self), 3, 3), np.nan)

    def class_names(self) -> np.ndarray:
        """(n,) str: each structure's class, "" where it has none."""
        return self.classes if self.classes is not None else np.full(len(self), "", dtype=str)

    @staticmethod
    def empty() -> "Structures":
        return Structures(
            positions=np.zeros((0, 3)), numbers=np.zeros(0), n_atoms=np.zeros(0),
            cell=np.zeros((0, 3, 3)), pbc=np.zeros((0, 3), bool), ids=np.zeros(0),
        )

    def without_labels(self) -> "Structures":
        """A copy without energy, forces and stress (pool files never hold labels); the classes are kept."""
        return Structures(
            positions=self.positions.copy(), numbers=self.numbers.copy(), n_atoms=self.n_atoms.copy(),
            cell=self.cell.copy(), pbc=self.pbc.copy(), ids=self.ids.copy(),
            classes=None if self.classes is None else self.classes.copy(),
        )

    def to_atoms(self) -> list:
        """ase.Atoms per structure; labels as a SinglePointCalculator (stress in ASE's Voigt order), the id in
        ``atoms.info['id']``."""
        from ase import Atoms
        from ase.calculators.singlepoint import SinglePointCalculator
        from ase.stress import full_3x3_to_voigt_6_stress

        out = []
        off = self.offsets
        for k in range(len(self)):
            a, b = off[k], off[k + 1]
            atoms = Atoms(numbers=self.numbers[a:b], positions=self.positions[a:b],
                          cell=self.cell[k], pbc=self.pbc[k])
            atoms.info["id"] = int(self.ids[k])
            if self.classes is not None and self.classes[k]:
                atoms.info["config_type"] = str(self.classes[k])
            results = {}
            if self.energy is not None:
                results["energy"] = float(self.energy[k])
            if self.forces is not None:
                results["forces"] = self.forces[a:b].copy()
            if self.stress is not None and np.isfinite(self.stress[k]).all():
                results["stress"] = full_3x3_to_voigt_6_stress(self.stress[k])
            if results:
                atoms.calc = SinglePointCalculator(atoms, **results)
            out.append(atoms)
        return out

    @staticmethod
    def from_atoms(atoms_list: Sequence, ids: np.ndarray | Sequence[int] | None = None) -> "Structures":
        """Build from ase.Atoms; labels are read from an attached calculator's stored results.

        Energy (forces) is kept when every structure has it; a structure without it when others
        have it gets NaN, which :func:`validate_structures` reports by index. Stress (ASE's Voigt 6 or 3×3,
        eV/Å³; or extxyz's ``virial``, :func:`_stress_label`) likewise, but a NaN stress row is a valid "no stress
        label" (a molecule beside cells).
        ``ids`` default: ``atoms.info['id']`` when every structure has one, else 0..n−1. Classes from
        ``atoms.info['config_type']`` (extxyz's convention) when any structure has one.
        """
        n = len(atoms_list)
        energies: list[float | None] = []
        forces: list[np.ndarray | None] = []
        stresses: list[np.ndarray | None] = []
        for atoms in atoms_list:
            res = atoms.calc.results if atoms.calc is not None else {}
            e = res.get("energy", res.get("free_energy"))
            energies.append(None if e is None else float(e))
            f = res.get("forces")
            forces.append(None if f is None else np.asarray(f, dtype=np.float64))
            stresses.append(_stress_label(atoms, res))
        if ids is None:
            if n and all("id" in a.info for a in atoms_list):
                ids = [int(a.info["id"]) for a in atoms_list]
            else:
                ids = np.arange(n)
        n_atoms = np.array([len(a) for a in atoms_list], dtype=np.int64)
        classes = None
        if any("config_type" in a.info for a in atoms_list):
            classes = np.array([str(a.info.get("config_type", "")) for a in atoms_list], dtype=str)
        energy = None
        if any(e is not None for e in energies):
            energy = np.array([np.nan if e is None else e for e in energies], dtype=np.float64)
        force_arr = None
        if any(f is not None for f in forces):
            force_arr = np.concatenate(
                [np.full((len(a), 3), np.nan) if f is None else f for a, f in zip(atoms_list, forces)]
            ) if n else np.zeros((0, 3))
        stress = None
        if any(x is not None for x in stresses):
            stress = np.stack([np.full((3, 3), np.nan) if x is None else x for x in stresses])
        return Structures(
            positions=np.concatenate([a.positions for a in atoms_list]) if n else np.zeros((0, 3)),
            numbers=np.concatenate([a.numbers for a in atoms_list]) if n else np.zeros(0),
            n_atoms=n_atoms,
            cell=np.array([a.cell.array for a in atoms_list]).reshape(n, 3, 3),
            pbc=np.array([a.pbc for a in atoms_list]).reshape(n, 3),
            ids=np.asarray(ids),
            energy=energy,
            forces=force_arr,
            classes=classes,
            stress=stress,
        )
