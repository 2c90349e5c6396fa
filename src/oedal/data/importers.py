"""Readers of external data sets into :class:`Structures`, converting units once (to Å, eV, eV/Å).

Formats: ``gmnn-npz`` (R/E/F/Z, kcal/mol), ``rmd17-npz`` (coords/energies/forces/nuclear_charges,
kcal/mol), ``ase`` (anything ase.io reads), ``qm9`` (CSV files of the qm9pack package, U0 in
Hartree, no forces), ``wbe`` (FitSNAP W–Be JSON tarball, eV), ``store`` (an oedal HDF5 store).
"""

from __future__ import annotations

import csv
import importlib.util
import json
import logging
import tarfile
import zipfile
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
from ase import units
from ase.data import atomic_numbers

from oedal.data.structures import Structures
from oedal.data.validate import validate_structures
from oedal.errors import InputError
from oedal.progress import progress_bar

log = logging.getLogger(__name__)

KCAL_MOL = units.kcal / units.mol  # eV per kcal/mol
HARTREE = units.Hartree  # eV per Hartree
FORMATS = ("auto", "gmnn-npz", "rmd17-npz", "ase", "qm9", "wbe", "store")
QM9_FILES = ("qm9_part1.csv", "qm9_part2.csv", "qm9_part3.csv")
QM9_COLUMNS = ("N_atoms", "Elements", "XYZ_Ang", "InternalEnergy_0K_au")
QM9_N = 130_831


def _molecules(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Cell (n,3,3) zeros and pbc (n,3) False for isolated molecules."""
    return np.zeros((n, 3, 3)), np.zeros((n, 3), dtype=bool)


# ---------------------------------------------------------------- format detection


def detect_format(src: str | Path) -> str:
    """Guess the format of ``src`` from its name and, for npz, its keys."""
    path = Path(src)
    name = path.name.lower()
    if str(src) == "qm9" and not path.exists():
        return "qm9"
    if path.is_dir() and all((path / f).exists() for f in QM9_FILES):
        return "qm9"
    if name.endswith((".tar.gz", ".tgz", ".tar")):
        return "wbe"
    if name.endswith((".h5", ".hdf5")):
        return "store"
    if name.endswith(".npz"):
        if not path.exists():
            raise FileNotFoundError(f"{path}: no such file")
        with np.load(path) as data:
            names = set(data.files)
        if {"coords", "nuclear_charges"} <= names:
            return "rmd17-npz"
        if {"R", "Z"} <= names or {"R", "z"} <= names:
            return "gmnn-npz"
        raise InputError(f"{path}: npz keys {sorted(names)} match neither R/E/F/Z nor coords/energies/forces/nuclear_charges")
    return "ase"


# ---------------------------------------------------------------- npz


def _require(data: np.lib.npyio.NpzFile, key: str, path: Path) -> np.ndarray:
    if key not in data.files:
        raise InputError(f"{path}: structure 0: missing array {key!r} (keys: {sorted(data.files)})")
    return np.asarray(data[key])


def _padded_to_ragged(
    path: Path, R: np.ndarray, Z: np.ndarray, F: np.ndarray | None, N: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray]:
    """(n, max_atoms, …) padded arrays → concatenated per-atom rows; ``N`` = atoms per structure."""
    n, width = R.shape[0], R.shape[1]
    counts = np.full(n, width, dtype=np.int64) if N is None else np.asarray(N, dtype=np.int64).reshape(-1)
    if counts.shape != (n,):
        raise InputError(f"{path}: structure 0: shape mismatch, N has shape {np.shape(N)}, expected ({n},)")
    if (counts > width).any() or (counts < 1).any():
        k = int(np.argmax((counts > width) | (counts < 1)))
        raise InputError(f"{path}: structure {k}: shape mismatch, N = {counts[k]} but R holds {width} atoms")
    mask = np.arange(width)[None, :] < counts[:, None]  # (n, width)
    return R[mask], Z[mask], None if F is None else F[mask], counts


def _check_same_shape(path: Path, name: str, arr: np.ndarray, shape: tuple[int, ...]) -> None:
    if arr.shape != shape:
        bad = next((d for d, (a, b) in enumerate(zip(arr.shape, shape)) if a != b), 0)
        k = min(arr.shape[0], shape[0]) - 1 if bad == 0 and arr.ndim else 0
        raise InputError(f"{path}: structure {max(k, 0)}: shape mismatch, {name} has shape {arr.shape}, expected {shape}")


def read_gmnn_npz(path: Path, limit: int | None = None) -> Structures:
    """GM-NN npz: R (n,N,3) Å, E (n,) or (n,1) kcal/mol, F (n,N,3) kcal/mol/Å, Z (n,N) or z (N,), N (n,) optional."""
    with np.load(path) as data:
        sl = slice(None, limit)
        R = _require(data, "R", path)[sl].astype(np.float64)
        zkey = "Z" if "Z" in data.files else "z"
        Z = _require(data, zkey, path)
        Z = np.broadcast_to(Z, R.shape[:2]) if Z.ndim == 1 else Z[sl]
        E = data["E"][sl].astype(np.float64) if "E" in data.files else None
        F = data["F"][sl].astype(np.float64) if "F" in data.files else None
        N = data["N"][sl] if "N" in data.files else None
    if R.ndim != 3 or R.shape[2] != 3:
        raise InputError(f"{path}: structure 0: shape mismatch, R has shape {R.shape}, expected (n, n_atoms, 3)")
    _check_same_shape(path, zkey, Z, R.shape[:2])
    if F is not None:
        _check_same_shape(path, "F", F, R.shape)
    if E is not None:
        E = E[:, 0] if E.ndim == 2 and E.shape[1] == 1 else E
        _check_same_shape(path, "E", E, (len(R),))
    pos, num, frc, counts = _padded_to_ragged(path, R, Z, F, N)
    cell, pbc = _molecules(len(R))
    return Structures(
        positions=pos, numbers=num, n_atoms=counts, cell=cell, pbc=pbc, ids=np.arange(len(R)),
        energy=None if E is None else E * KCAL_MOL,  # kcal/mol → eV
        forces=None if frc is None else frc * KCAL_MOL,  # kcal/mol/Å → eV/Å
    )


def read_rmd17_npz(path: Path, limit: int | None = None) -> Structures:
    """rMD17 npz: coords (n,N,3) Å, energies (n,) kcal/mol, forces (n,N,3) kcal/mol/Å, nuclear_charges (N,)."""
    with np.load(path) as data:
        sl = slice(None, limit)
        R = _require(data, "coords", path)[sl].astype(np.float64)
        z = _require(data, "nuclear_charges", path)
        E = data["energies"][sl].astype(np.float64) if "energies" in data.files else None
        F = data["forces"][sl].astype(np.float64) if "forces" in data.files else None
    if R.ndim != 3 or R.shape[2] != 3:
        raise InputError(f"{path}: structure 0: shape mismatch, coords has shape {R.shape}, expected (n, n_atoms, 3)")
    _check_same_shape(path, "nuclear_charges", z.reshape(-1), (R.shape[1],))
    if F is not None:
        _check_same_shape(path, "forces", F, R.shape)
    if E is not None:
        E = E.reshape(len(E), -1)[:, 0] if E.ndim == 2 and E.shape[1] == 1 else E
        _check_same_shape(path, "energies", E, (len(R),))
    n, width = R.shape[:2]
    cell, pbc = _molecules(n)
    return Structures(
        positions=R.reshape(-1, 3), numbers=np.tile(z.reshape(-1), n), n_atoms=np.full(n, width),
        cell=cell, pbc=pbc, ids=np.arange(n),
        energy=None if E is None else E * KCAL_MOL,
        forces=None if F is None else F.reshape(-1, 3) * KCAL_MOL,
    )


# ---------------------------------------------------------------- ASE


def read_ase(path: Path, limit: int | None = None) -> Structures:
    """Any file ase.io can read (extxyz, ase db, ...); labels from the stored calculator results."""
    import ase.io

    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file")
    index = ":" if limit is None else f":{limit}"
    try:
        frames = ase.io.read(path, index=index)
    except Exception as err:  # ase raises many types for unreadable files
        raise InputError(f"{path}: structure 0: ase.io cannot read it ({type(err).__name__}: {err})") from None
    frames = frames if isinstance(frames, list) else [frames]
    s = Structures.from_atoms(frames)  # ids from atoms.info["id"] when every frame has one, else 0..n−1
    for name, arr, per_atom in (("energy", s.energy, False), ("forces", s.forces, True)):
        if arr is not None:
            missing = np.isnan(arr).all(axis=1) if per_atom else np.isnan(arr)
            if missing.any():
                row = int(np.argmax(missing))
                k = int(np.searchsorted(s.offsets, row, side="right") - 1) if per_atom else row
                raise InputError(f"{path}: structure {k}: missing labels, no {name} while other structures have it")
    return s


# ---------------------------------------------------------------- QM9 (qm9pack)


def qm9_data_dir() -> Path:
    """Folder of the qm9pack CSVs, found without importing qm9pack (its __init__ needs pkg_resources)."""
    spec = importlib.util.find_spec("qm9pack")
    if spec is None or not spec.submodule_search_locations:
        raise InputError("qm9: the package qm9pack is not installed (pip install 'oedal[qm9]' or qm9pack==1.0.3)")
    folder = Path(list(spec.submodule_search_locations)[0]) / "data"
    if not all((folder / f).exists() for f in QM9_FILES):
        raise InputError(f"qm9: {folder} does not hold {', '.join(QM9_FILES)}")
    return folder


def _qm9_rows(folder: Path, limit: int | None) -> tuple[list[str], list[str], list[str], list[str], str]:
    """Raw text of the four QM9 columns, in file order, at most ``limit`` rows."""
    n_at, elem, xyz, u0 = [], [], [], []
    for name in QM9_FILES:
        path = folder / name
        with open(path, newline="") as fh:
            reader = csv.reader(fh)
            header = next(reader)
            try:
                cols = [header.index(c) for c in QM9_COLUMNS]
            except ValueError:
                raise InputError(f"{path}: structure {len(n_at)}: missing one of the columns {QM9_COLUMNS}") from None
            for row in reader:
                if limit is not None and len(n_at) >= limit:
                    break
                n_at.append(row[cols[0]])
                elem.append(row[cols[1]])
                xyz.append(row[cols[2]])
                u0.append(row[cols[3]])
        if limit is not None and len(n_at) >= limit:
            break
    return n_at, elem, xyz, u0, str(folder)


def read_qm9(src: str | Path | None = None, limit: int | None = None) -> Structures:
    """QM9 from the qm9pack CSVs (or a folder holding qm9_part{1,2,3}.csv): U0 Hartree → eV, no forces; the
    class of a molecule is its number of heavy atoms (:func:`qm9_class`).

    Parsing is vectorised: all coordinate and element strings are joined and split once.
    """
    folder = Path(src) if src is not None and Path(src).is_dir() else qm9_data_dir()
    n_at, elem, xyz, u0, where = _qm9_rows(folder, limit)
    n = len(n_at)
    counts = np.array(n_at, dtype=np.int64)
    table = str.maketrans("", "", "[]' \"")
    coords_text = ",".join(xyz).translate(table)
    positions = np.array(coords_text.split(","), dtype=np.float64)  # (3·Σ n_atoms,) Å
    symbols = np.array(",".join(elem).translate(table).split(","))
    uniq, inverse = np.unique(symbols, return_inverse=True)
    try:
        numbers = np.array([atomic_numbers[u] for u in uniq], dtype=np.int64)[inverse]
    except KeyError as err:
        raise InputError(f"{where}: unknown element symbol {err}") from None
    total = int(counts.sum())
    for name, size, want in (("XYZ_Ang", positions.size, 3 * total), ("Elements", numbers.size, total)):
        if size != want:
            k = _first_bad_qm9(xyz if name == "XYZ_Ang" else elem, counts, 3 if name == "XYZ_Ang" else 1)
            raise InputError(f"{where}: structure {k}: shape mismatch, {name} does not hold N_atoms entries")
    cell, pbc = _molecules(n)
    structure = np.repeat(np.arange(n), counts)
    heavy = np.bincount(structure, weights=numbers > 1, minlength=n).astype(np.int64)  # heavy atoms per molecule
    return Structures(
        positions=positions.reshape(-1, 3), numbers=numbers, n_atoms=counts, cell=cell, pbc=pbc,
        ids=np.arange(n), energy=np.array(u0, dtype=np.float64) * HARTREE,  # Hartree → eV
        classes=np.array([qm9_class(int(k)) for k in heavy]),
    )


def qm9_class(heavy_atoms: int) -> str:
    """QM9's size class: the number of heavy (non-hydrogen) atoms, 1–9; fewer than 7 are one class (they are
    0.3 % of QM9; the paper's Fig. 7 is about which sizes a strategy picks)."""
    return "HA≤6" if heavy_atoms <= 6 else f"HA{heavy_atoms}"


def _first_bad_qm9(texts: list[str], counts: np.ndarray, per_atom: int) -> int:
    """Index of the first row whose list length differs from N_atoms (error path only)."""
    for k, (t, c) in enumerate(zip(texts, counts)):
        if t.count(",") + 1 != per_atom * c:
            return k
    return 0


# ---------------------------------------------------------------- W–Be (FitSNAP JSON tarball)


KILOBAR = 1000 * units.bar  # eV/Å³


def _wbe_record(text: str, path: Path, member: str, k: int) -> dict:
    """``Dataset.Data[0]`` of one FitSNAP JSON file (its first line is a '#' comment)."""
    body = text.split("\n", 1)[1] if text.lstrip().startswith("#") else text
    try:
        return json.loads(body)["Dataset"]["Data"][0]
    except (json.JSONDecodeError, KeyError, IndexError, TypeError) as err:
        raise InputError(f"{path}: structure {k} ({member}): not a FitSNAP JSON configuration ({err})") from None


WBE_CLASSES = {  # the FitSNAP group folders of the W–Be set, by the kind of structure (Wood et al. 2019, Table I)
    "eos": ("EOS", "EOS_BCC", "EOS_Data", "EOS_FCC", "EOS_HCP"),
    "elastic": ("Elast_BCC_Shear", "Elast_BCC_Vol", "Elast_FCC_Shear", "Elast_FCC_Vol", "Elast_HCP_Shear",
                "Elast_HCP_Vol", "ElasticDeform_Shear", "ElasticDeform_Vol"),
    "md": ("DFTMD_1000K", "DFTMD_300K", "DFT_MD_1000K", "DFT_MD_300K", "md_bulk"),
    "liquid": ("Liquids", "Disordered_Struc"),
    "surface": ("001FreeSurf", "010FreeSurf", "100FreeSurf", "surface", "gamma_surface", "gamma_surface_vacancy",
                "StackFaults"),
    "adsorption": ("WSurface_BeAdhesion",),
    "defect": ("Defect_BCrowd", "Defect_BOct", "Defect_BSplit", "Defect_BTetra", "Defect_Crowd", "Defect_Oct",
               "Defect_Tet", "Defect_Vacancy", "Divacancy", "vacancy", "BCC_ForceLib_W110", "BCC_ForceLib_W111",
               "BCC_ForceLib_WOct", "BCC_ForceLib_WTet"),
    "dislocation": ("dislocation_quadrupole",),
}
_WBE_CLASS_OF = {group: name for name, groups in WBE_CLASSES.items() for group in groups}


def wbe_class(member: str) -> str:
    """The class of a W–Be JSON file from its group folder (:data:`WBE_CLASSES`; another folder: its own name)."""
    group = member.rstrip("/").split("/")[-2] if "/" in member else ""
    return _WBE_CLASS_OF.get(group, group)


def read_wbe(path: Path, limit: int | None = None, groups: Sequence[str] | None = None) -> Structures:
    """FitSNAP JSON files read straight from a tarball, sorted by member name (ids follow that order).

    Lattice rows are the cell vectors (Å), Energy is the total energy (eV), Forces eV/Å, Stress VASP's (kbar,
    positive when compressed: the files say ``StressStyle: bar``, but the EOS series' dE/dV equals −P only in
    kbar, tests/test_stress.py), stored as ASE's σ = −Stress·kbar in eV/Å³; pbc = True. The class of
    a structure is the kind of its group folder (:func:`wbe_class`); ``groups``: read only these group folders
    (e.g. ``["EOS_Data"]``; ids then count within them).
    """
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file")
    records: dict[str, dict] = {}
    with tarfile.open(path) as tar:
        members = [m for m in tar.getmembers() if m.isfile() and m.name.endswith(".json")
                   and (groups is None or Path(m.name).parent.name in groups)]
        wanted = {m.name for m in sorted(members, key=lambda m: m.name)[:limit]}
        for m in progress_bar(members, total=len(members), desc="W-Be", unit="structure"):
            if m.name in wanted:
                records[m.name] = tar.extractfile(m).read().decode()  # type: ignore[union-attr,assignment]
    names = sorted(records)
    if not names:
        raise InputError(f"{path}: structure 0: no JSON configurations in the tarball")
    pos, num, frc, counts, cells, energy, stress = [], [], [], [], [], [], []
    for k, name in enumerate(names):
        d = _wbe_record(records[name], path, name, k)  # type: ignore[arg-type]
        try:
            n_at = int(d["NumAtoms"])
            pos.append(np.asarray(d["Positions"], dtype=np.float64).reshape(n_at, 3))
            frc.append(np.asarray(d["Forces"], dtype=np.float64).reshape(n_at, 3))
            cells.append(np.asarray(d["Lattice"], dtype=np.float64).reshape(3, 3))
            types = d["AtomTypes"]
            if len(types) != n_at:
                raise ValueError(f"{len(types)} AtomTypes for NumAtoms {n_at}")
            num.append(np.array([atomic_numbers[t] for t in types], dtype=np.int64))
            energy.append(float(d["Energy"]))
            stress.append(-np.asarray(d["Stress"], dtype=np.float64).reshape(3, 3) * KILOBAR if "Stress" in d
                          else np.full((3, 3), np.nan))
        except (KeyError, ValueError, TypeError) as err:
            raise InputError(f"{path}: structure {k} ({name}): shape mismatch or missing field ({err})") from None
        counts.append(n_at)
    n = len(names)
    return Structures(
        positions=np.concatenate(pos), numbers=np.concatenate(num), n_atoms=np.array(counts),
        cell=np.array(cells), pbc=np.ones((n, 3), dtype=bool), ids=np.arange(n),
        energy=np.array(energy), forces=np.concatenate(frc), classes=np.array([wbe_class(m) for m in names]),
        stress=np.array(stress),
    )


# ---------------------------------------------------------------- entry points


def read_any(src: str | Path, fmt: str = "auto", limit: int | None = None) -> tuple[Structures, str]:
    """Read ``src`` without checks; returns the structures and the format used. A file the format's
    reader cannot parse is an :class:`InputError` in one line that names the formats oedal reads."""
    if fmt not in FORMATS:
        raise InputError(f"{src}: unknown format {fmt!r} (choose from {', '.join(FORMATS)})")
    if limit is not None and limit < 1:
        raise InputError(f"{src}: --limit must be ≥ 1, got {limit}")
    try:
        fmt = detect_format(src) if fmt == "auto" else fmt
        return _read_format(Path(src), src, fmt, limit), fmt
    except (InputError, FileNotFoundError):
        raise
    except (OSError, ValueError, KeyError, EOFError, tarfile.TarError, zipfile.BadZipFile) as err:
        detail = "not a tar archive" if isinstance(err, tarfile.TarError) else " ".join(f"{type(err).__name__}: {err}".split())
        raise InputError(f"{src}: cannot be read as {fmt} ({detail}); oedal reads {', '.join(FORMATS[1:])} "
                         "(--format; auto guesses from the file name)") from None


def _read_format(path: Path, src: str | Path, fmt: str, limit: int | None) -> Structures:
    if fmt == "qm9":
        return read_qm9(src if path.is_dir() else None, limit)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file")
    if fmt == "store":
        from oedal.data.store import read_store

        return read_store(path, slice(0, limit))
    reader = {"gmnn-npz": read_gmnn_npz, "rmd17-npz": read_rmd17_npz, "ase": read_ase, "wbe": read_wbe}[fmt]
    return reader(path, limit)


def import_file(
    src: str | Path,
    fmt: str = "auto",
    *,
    limit: int | None = None,
    min_distance: float = 0.5,
    known_numbers: Iterable[int] | None = None,
    require_labels: bool = False,
    require_forces: bool = False,
) -> Structures:
    """Read ``src`` (format ``fmt``, see :data:`FORMATS`) into Structures in Å / eV / eV/Å and validate it.

    ``limit`` keeps the first N structures; the checks are those of
    :func:`oedal.data.validate.validate_structures` (errors name ``src`` and the structure index).
    """
    structures, used = read_any(src, fmt, limit)
    log.info("read %d structures (%d atoms) from %s as %s", len(structures), structures.n_atoms_total, src, used)
    return validate_structures(
        structures, str(src), require_labels=require_labels, min_distance=min_distance,
        known_numbers=known_numbers, require_forces=require_forces,
    )


def export_file(structures: Structures, dest: str | Path, fmt: str | None = None) -> Path:
    """Write structures with ase.io (default format from the suffix, e.g. extxyz), atomically.

    Ids go to ``atoms.info['id']``; energies and forces, when present, as calculator results.
    """
    import ase.io
    from ase.io.formats import filetype

    from oedal.files import atomic_path

    dest = Path(dest)
    if fmt is None:
        fmt = "extxyz" if dest.suffix.lower() in (".xyz", ".extxyz") else filetype(dest, read=False)
    with atomic_path(dest, suffix=f".tmp{dest.suffix}") as tmp:  # ase.db picks its backend by suffix
        ase.io.write(tmp, structures.to_atoms(), format=fmt)
    return dest
