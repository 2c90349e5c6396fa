"""`oedal import`, `oedal export`, `oedal info`: data in and out of the HDF5 structure store."""

from __future__ import annotations

import argparse
import json
import logging

import numpy as np
from ase.data import atomic_numbers, chemical_symbols

from oedal.cli import add_min_distance
from oedal.data.datasets import DATASETS, load_dataset
from oedal.data.importers import FORMATS, export_file, import_file
from oedal.data.store import StoreReader, read_store, write_store
from oedal.data.validate import check_store
from oedal.errors import InputError
from oedal.files import check_outputs

log = logging.getLogger(__name__)


def _elements(text: str | None) -> list[int] | None:
    """'H,C,O' or '1,6,8' → atomic numbers."""
    if not text:
        return None
    out = []
    for tok in text.replace(" ", "").split(","):
        if tok.isdigit():
            out.append(int(tok))
        elif tok in atomic_numbers:
            out.append(atomic_numbers[tok])
        else:
            raise InputError(f"--elements: unknown element {tok!r}")
    return out


def run_import(args: argparse.Namespace) -> int:
    check_outputs(args.out)
    checks = dict(limit=args.limit, min_distance=args.min_distance, known_numbers=_elements(args.elements),
                  require_labels=args.require_labels)
    if args.src in DATASETS and args.format == "auto":
        structures = load_dataset(args.src, data_dir=args.data_dir, **checks)
    else:
        structures = import_file(args.src, args.format, **checks)
    if args.every > 1:  # a thinned trajectory: every k-th frame spans it with less correlated frames
        structures = structures.subset(np.arange(0, len(structures), args.every))
    write_store(args.out, structures, attrs={"source": str(args.src)})
    log.info("wrote %d structures to %s", len(structures), args.out)
    return 0


def run_export(args: argparse.Namespace) -> int:
    check_outputs(args.out)
    check_store(args.store, min_distance=args.min_distance)
    structures = read_store(args.store)
    export_file(structures, args.out, args.format)
    log.info("exported %d structures to %s", len(structures), args.out)
    return 0


def store_info(path: str, chunk_size: int = 65536) -> dict:
    """Counts, elements, label presence and energy/force statistics (eV, eV/Å), streamed in chunks."""
    with StoreReader(path) as reader:
        counts = np.zeros(119, dtype=np.int64)
        e_parts, e_per_atom, f_sum, f_sq, f_max, f_n = [], [], 0.0, 0.0, 0.0, 0
        for chunk in reader.iter_chunks(chunk_size):
            counts += np.bincount(chunk.numbers, minlength=119)[:119]
            if chunk.energy is not None:
                e_parts.append(chunk.energy)
                e_per_atom.append(chunk.energy / chunk.n_atoms)
            if chunk.forces is not None:
                f_sum += float(chunk.forces.sum())
                f_sq += float((chunk.forces**2).sum())
                f_max = max(f_max, float(np.abs(chunk.forces).max(initial=0.0)))
                f_n += chunk.forces.size
        info = {
            "path": str(path), "n_structures": len(reader), "n_atoms_total": int(reader.n_atoms.sum()),
            "n_atoms_min": int(reader.n_atoms.min()) if len(reader) else 0,
            "n_atoms_max": int(reader.n_atoms.max()) if len(reader) else 0,
            "elements": {chemical_symbols[z]: int(c) for z, c in enumerate(counts) if c},
            "has_energy": reader.has_labels, "has_forces": reader.has_forces,
            "attrs": {k: str(v) for k, v in reader.attrs.items()},
        }
    if e_parts:
        e, epa = np.concatenate(e_parts), np.concatenate(e_per_atom)
        info["energy_eV"] = {"mean": float(e.mean()), "std": float(e.std()), "min": float(e.min()), "max": float(e.max())}
        info["energy_per_atom_eV"] = {"mean": float(epa.mean()), "std": float(epa.std())}
    if f_n:
        mean = f_sum / f_n
        info["force_component_eV_per_A"] = {"mean": mean, "std": float(np.sqrt(max(f_sq / f_n - mean**2, 0.0))),
                                            "max_abs": f_max}
    return info


def run_info(args: argparse.Namespace) -> int:
    info = store_info(args.store)
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    for key, value in info.items():
        print(f"{key}: {value}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("import", help="import a data set into a structure store (HDF5)",
                       description="SRC is a file, a named data set (" + ", ".join(DATASETS) + ") or 'qm9'.")
    p.add_argument("src", help="file or named data set")
    p.add_argument("--out", required=True, help="output store (.h5)")
    p.add_argument("--format", default="auto", choices=FORMATS)
    p.add_argument("--limit", type=int, default=None, help="keep the first N structures")
    p.add_argument("--every", type=int, default=1, help="keep every k-th structure (after --limit)")
    p.add_argument("--min-distance", type=float, default=0.5, help="smallest allowed interatomic distance (Å); 0 skips")
    p.add_argument("--elements", default=None, help="allowed elements, e.g. H,C,O (default: any)")
    p.add_argument("--require-labels", action="store_true", help="fail when energies are missing")
    p.add_argument("--data-dir", default=None, help="folder holding named data sets (default $OEDAL_DATA_DIR)")
    p.set_defaults(func=run_import)

    p = sub.add_parser("export", help="export a structure store with ase.io (extxyz, db, ...)")
    p.add_argument("store")
    p.add_argument("--out", required=True, help="output file; format from the suffix unless --format")
    p.add_argument("--format", default=None, help="ase.io format name (default: from the suffix)")
    add_min_distance(p)
    p.set_defaults(func=run_export)

    p = sub.add_parser("info", help="summarise a structure store")
    p.add_argument("store")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=run_info)
