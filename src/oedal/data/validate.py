"""Checks of imported structures; every error names the source file and the structure index."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
from ase.data import chemical_symbols

from oedal.data.structures import Structures
from oedal.errors import InputError

PAIR_BLOCK = 4_000_000  # distance-matrix entries per vectorised block (≈ 32 MB)
DENSE_MAX_ATOMS = 64  # molecules up to this size use dense distance matrices; larger ones vesin
DENSE_MAX_PERIODIC = 1024  # periodic cells up to this size use dense minimum-image distances


def _where(source: str, s: Structures, k: int) -> str:
    sid = f" (id {int(s.ids[k])})" if k < len(s.ids) else ""
    return f"{source}: structure {k}{sid}"


def _structure_of_row(s: Structures, row: int) -> int:
    """Structure index that per-atom row ``row`` belongs to."""
    return int(np.searchsorted(s.offsets, row, side="right") - 1)


def check_shapes(s: Structures, source: str) -> None:
    """Consistent array shapes (positions vs numbers vs n_atoms vs forces, per-structure arrays)."""
    n = len(s)
    total = int(s.n_atoms.sum())
    if (s.n_atoms < 1).any():
        k = int(np.argmax(s.n_atoms < 1))
        raise InputError(f"{_where(source, s, k)}: has {int(s.n_atoms[k])} atoms")
    for name, arr in (("numbers", s.numbers), ("positions", s.positions), ("forces", s.forces)):
        if arr is not None and len(arr) != total:
            k = _structure_of_row(s, min(len(arr), total))
            raise InputError(
                f"{_where(source, s, min(k, n - 1))}: shape mismatch, {name} has {len(arr)} atom rows "
                f"but n_atoms sums to {total}"
            )
    expected = {"cell": (s.cell, (n, 3, 3)), "pbc": (s.pbc, (n, 3)), "ids": (s.ids, (n,))}
    if s.energy is not None:
        expected["energy"] = (s.energy, (n,))
    for name, (arr, shape) in expected.items():
        if arr.shape != shape:
            k = min(len(arr), n - 1) if arr.ndim else 0
            raise InputError(f"{_where(source, s, k)}: shape mismatch, {name} has shape {arr.shape}, expected {shape}")


def check_finite(s: Structures, source: str) -> None:
    """No NaN or inf in positions, cell, energy or forces."""
    per_atom = {"positions": s.positions, "forces": s.forces}
    for name, arr in per_atom.items():
        if arr is not None and not np.isfinite(arr).all():
            row = int(np.argmax(~np.isfinite(arr).all(axis=1)))
            k = _structure_of_row(s, row)
            atom = row - int(s.offsets[k])
            raise InputError(f"{_where(source, s, k)}: {name} of atom {atom} are not finite (NaN or inf)")
    per_structure = {"cell": s.cell.reshape(len(s), -1), "energy": s.energy}
    for name, arr in per_structure.items():
        if arr is None:
            continue
        bad = ~np.isfinite(arr) if arr.ndim == 1 else ~np.isfinite(arr).all(axis=1)
        if bad.any():
            k = int(np.argmax(bad))
            raise InputError(f"{_where(source, s, k)}: {name} is not finite (NaN or inf)")


def check_elements(s: Structures, source: str, known_numbers: Iterable[int] | None) -> None:
    """Atomic numbers in 1..118 and, when given, in ``known_numbers`` (the model's species)."""
    allowed = np.arange(1, 119) if known_numbers is None else np.asarray(sorted(set(known_numbers)), dtype=np.int64)
    bad = ~np.isin(s.numbers, allowed)
    if bad.any():
        row = int(np.argmax(bad))
        k = _structure_of_row(s, row)
        z = int(s.numbers[row])
        name = chemical_symbols[z] if 0 < z < len(chemical_symbols) else "?"
        known = ", ".join(chemical_symbols[int(x)] for x in allowed) if known_numbers is not None else "1..118"
        raise InputError(
            f"{_where(source, s, k)}: unknown element {name} (Z={z}) at atom {row - int(s.offsets[k])}; known: {known}"
        )


def check_labels(s: Structures, source: str, require_forces: bool) -> None:
    """Energies (and forces when ``require_forces``) present for every structure."""
    if s.energy is None:
        raise InputError(f"{_where(source, s, 0)}: missing labels, no energy given but labels are required")
    if require_forces and s.forces is None:
        raise InputError(f"{_where(source, s, 0)}: missing labels, no forces given but forces are required")


def check_cells(s: Structures, source: str) -> None:
    """Periodic directions need a non-degenerate lattice vector."""
    lengths = np.linalg.norm(s.cell, axis=2)  # (n, 3) Å
    bad = (s.pbc & (lengths < 1e-8)).any(axis=1)
    if bad.any():
        k = int(np.argmax(bad))
        raise InputError(f"{_where(source, s, k)}: periodic but the cell has a zero lattice vector")
    periodic = s.pbc.any(axis=1)
    if periodic.any():
        vol = np.abs(np.linalg.det(s.cell[periodic]))
        if (s.pbc[periodic].all(axis=1) & (vol < 1e-8)).any():
            k = int(np.flatnonzero(periodic)[np.argmax(vol < 1e-8)])
            raise InputError(f"{_where(source, s, k)}: periodic cell has zero volume")


def _close_dense(
    s: Structures, members: np.ndarray, k_atoms: int, bound: float, periodic: bool
) -> tuple[int, int, int, float] | None:
    """Closest pair below ``bound`` among same-size structures ``members``: (structure, i, j, d) or None.

    Periodic members must be fully periodic with every cell height ≥ 2·bound: then only the minimum
    image (fractional difference rounded to [−½, ½]) can be closer than ``bound``, and an atom's own
    images are farther than ``bound``.
    """
    ii, jj = np.triu_indices(k_atoms, 1)  # each pair once
    if len(ii) == 0:
        return None
    per_block = max(1, PAIR_BLOCK // len(ii))
    off = s.offsets
    for b in range(0, len(members), per_block):
        idx = members[b : b + per_block]
        r = s.positions[off[idx][:, None] + np.arange(k_atoms)[None, :]]  # (m, k, 3) Å
        d = r[:, jj] - r[:, ii]  # (m, pairs, 3) Å, r_j − r_i
        if periodic:
            cell = s.cell[idx]  # (m, 3, 3) Å
            frac = d @ np.linalg.inv(cell)  # fractional differences
            d = (frac - np.round(frac)) @ cell  # minimum image
        d2 = (d * d).sum(-1)  # (m, pairs) Å²
        low = d2.min(axis=1) < bound * bound
        if low.any():
            m = int(np.argmax(low))
            p = int(np.argmin(d2[m]))
            return int(idx[m]), int(ii[p]), int(jj[p]), float(np.sqrt(d2[m, p]))
    return None


def cell_heights(cell: np.ndarray) -> np.ndarray:
    """Distances between opposite faces of each cell: (n, 3) Å (rows of ``cell`` are lattice vectors)."""
    heights = np.zeros(cell.shape[:2])
    ok = np.abs(np.linalg.det(cell)) > 1e-8
    if ok.any():
        heights[ok] = 1.0 / np.linalg.norm(np.linalg.inv(cell[ok]), axis=1)
    return heights


def _close_neighbour_list(s: Structures, k: int, bound: float) -> tuple[int, int, int, float] | None:
    """Closest pair below ``bound`` in structure ``k`` with periodic images (vesin)."""
    from vesin import NeighborList

    a, b = s.offsets[k], s.offsets[k + 1]
    pbc = s.pbc[k]
    box = s.cell[k] if pbc.any() else np.zeros((3, 3))
    nl = NeighborList(cutoff=bound, full_list=False)
    i, j, d = nl.compute(points=s.positions[a:b], box=box, periodic=pbc.tolist(), quantities="ijd")
    if len(d) == 0:
        return None
    m = int(np.argmin(d))
    return k, int(min(i[m], j[m])), int(max(i[m], j[m])), float(d[m])


def check_distances(s: Structures, source: str, min_distance: float) -> None:
    """No two atoms (periodic images included) closer than ``min_distance`` Å.

    Molecules and ordinary periodic cells are checked vectorised (grouped by size); mixed boundary
    conditions, cells thinner than 2·min_distance and very large structures use vesin.
    """
    if min_distance <= 0 or len(s) == 0:
        return
    full = s.pbc.all(axis=1)
    molecule = ~s.pbc.any(axis=1) & (s.n_atoms <= DENSE_MAX_ATOMS)
    bulk = full & (cell_heights(s.cell).min(axis=1) >= 2 * min_distance) & (s.n_atoms <= DENSE_MAX_PERIODIC)
    found: list[tuple[int, int, int, float]] = []
    for mask, periodic in ((molecule, False), (bulk, True)):
        for k_atoms in np.unique(s.n_atoms[mask]):
            members = np.flatnonzero(mask & (s.n_atoms == k_atoms))
            hit = _close_dense(s, members, int(k_atoms), min_distance, periodic)
            if hit:
                found.append(hit)
    for k in np.flatnonzero(~(molecule | bulk)):
        hit = _close_neighbour_list(s, int(k), min_distance)
        if hit:
            found.append(hit)
            break
    if found:
        k, i, j, d = min(found)
        raise InputError(
            f"{_where(source, s, k)}: atoms {i} and {j} are {d:.3f} Å apart, closer than the minimum "
            f"distance {min_distance} Å (periodic images included)"
        )


def validate_structures(
    structures: Structures,
    source: str,
    *,
    require_labels: bool = False,
    min_distance: float = 0.5,
    known_numbers: Iterable[int] | None = None,
    require_forces: bool = False,
) -> Structures:
    """Raise :class:`InputError` naming ``source`` and the structure index on the first problem.

    Checks, in order: shapes, finite values (NaN/inf), elements (``known_numbers``: the atomic numbers
    a model knows), labels (``require_labels``: energies; ``require_forces``: forces too), periodic
    cells, and interatomic distances below ``min_distance`` Å (periodic images included; ≤ 0 skips).
    Returns ``structures`` unchanged.
    """
    check_shapes(structures, source)
    check_finite(structures, source)
    check_elements(structures, source, known_numbers)
    if require_labels or require_forces:
        check_labels(structures, source, require_forces)
    check_cells(structures, source)
    check_distances(structures, source, min_distance)
    return structures
