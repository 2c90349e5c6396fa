"""Predictions and error metrics of a GM-NN on a set of structures (eV, eV/Å; also kcal/mol)."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch
from ase import units

from oedal.data.structures import atom_index, cell_volumes, offsets_from_counts
from oedal.errors import InputError
from oedal.gmnn.model import GMNN

KCAL_PER_MOL = units.kcal / units.mol  # eV
THRESHOLD_KCAL = 1.0  # kcal/mol (energy per structure) and kcal/mol/Å (max force component error per structure)


class Prediction(NamedTuple):
    energy: np.ndarray  # (n_structures,) float64 eV
    forces: np.ndarray  # (n_atoms_total, 3) float64 eV/Å
    stress: np.ndarray | None = None  # (n_structures, 3, 3) float64 eV/Å³, NaN where not a 3-D cell


GPA = units.GPa  # eV/Å³


# Inference runs fastest in batches of ~1,000-2,500 atoms (CPU, 1-2 threads: the per-atom
# intermediates stay in cache; 250 ethanol structures are ≈1.25× faster per structure than 1,000)
INFER_ATOMS_PER_BATCH = 2304


def predict(model: GMNN, structures, batch_size: int = 1024, forces: bool = True, stress: bool = False) -> Prediction:
    """Energies (and forces, and stresses σ = W/V of the 3-D cells) of ``structures`` in their order, in batches
    of at most ``batch_size`` structures (fewer where that keeps a batch near INFER_ATOMS_PER_BATCH atoms; same
    results)."""
    mean_atoms = float(np.mean(structures.n_atoms)) if len(structures.n_atoms) else 1.0
    batch_size = max(1, min(batch_size, int(INFER_ATOMS_PER_BATCH // max(mean_atoms, 1.0))))
    loader = model.loader(structures, batch_size)
    n_total = int(np.sum(structures.n_atoms))
    energy = np.zeros(loader.n_structures)
    force = np.zeros((n_total, 3))
    sigma = np.full((loader.n_structures, 3, 3), np.nan) if stress else None
    volume = cell_volumes(structures.cell, structures.pbc) if stress else None  # (n,) Å³
    model.eval()
    for start, batch in zip(range(0, loader.n_structures, batch_size), loader):
        stop = start + batch.n_structures
        if stress:
            ev = model.evaluate(batch, stress=True)
            e = ev.energy
            force[loader.atom_offsets[start] : loader.atom_offsets[stop]] = ev.forces.cpu().double().numpy()
            sigma[start:stop] = ev.virial.cpu().numpy() / volume[start:stop, None, None]
        elif forces:
            e, f = model.energy_and_forces(batch)
            force[loader.atom_offsets[start] : loader.atom_offsets[stop]] = f.detach().cpu().double().numpy()
        else:
            with torch.inference_mode():
                e = model.energy(batch)
        energy[start:stop] = e.detach().cpu().numpy()
    return Prediction(energy, force, sigma)


def _stats(err: np.ndarray, prefix: str, unit: str, kcal: bool = True) -> dict:
    """``{prefix}_{mae,rmse,maxe}_{unit}`` of the errors ``err`` (in ``unit``), and in kcal/mol for an eV unit
    when ``kcal``."""
    a = np.abs(err)
    out = {}
    scales = ((1.0, unit),) + (((KCAL_PER_MOL, unit.replace("eV", "kcal/mol")),) if kcal else ())
    for scale, suffix in scales:
        out[f"{prefix}_mae_{suffix}"] = float(a.mean() / scale)
        out[f"{prefix}_rmse_{suffix}"] = float(np.sqrt((a**2).mean()) / scale)
        out[f"{prefix}_maxe_{suffix}"] = float(a.max() / scale)
    return out


def error_metrics(model: GMNN, structures, batch_size: int = 1024) -> dict:
    """MAE/RMSE/MAXE of energies and forces (eV and kcal/mol) and counts of structures above 1 kcal/mol(/Å);
    energies only when ``structures`` has no forces (QM9, DESIGN §11). Where the structures carry classes,
    ``per_class`` holds the same figures for every class (:func:`class_metrics`)."""
    if getattr(structures, "energy", None) is None:
        raise InputError("evaluation needs labeled structures (an energy for every structure)")
    with_forces = getattr(structures, "forces", None) is not None
    pred = predict(model, structures, batch_size, forces=with_forces, stress=_has_stress(structures))
    return errors_of(pred, structures)


def _has_stress(structures) -> bool:
    """Some structure carries a stress label."""
    stress = getattr(structures, "stress", None)
    return stress is not None and bool(np.isfinite(stress).all(axis=(1, 2)).any())


def errors_of(pred: Prediction, structures) -> dict:
    """The figures of :func:`error_metrics` from any predictions of ``structures`` (a GM-NN's, or a universal
    potential's for its baseline row: oedal.oracles.baseline); ``pred.stress`` is read where the structures have
    stress labels."""
    with_forces = getattr(structures, "forces", None) is not None
    with_stress = _has_stress(structures) and pred.stress is not None
    de = pred.energy - np.asarray(structures.energy, np.float64)  # (n,) eV
    n_atoms = np.asarray(structures.n_atoms, np.int64)
    df = max_f = None
    if with_forces:
        df = pred.forces - np.asarray(structures.forces, np.float64)  # (n_atoms_total, 3) eV/Å
        max_f = np.zeros(len(n_atoms))
        np.maximum.at(max_f, np.repeat(np.arange(len(n_atoms)), n_atoms), np.abs(df).max(axis=1))
    out = _figures(de, df, max_f, n_atoms)
    cells = np.asarray(structures.pbc).reshape(-1, 3).all(axis=1)  # (n,) 3-D cells
    ds = None if not with_stress else (pred.stress - structures.stress) / GPA  # (n, 3, 3) GPa, NaN: no label
    if cells.any():
        out.update(cell_figures(de, n_atoms, ds))
    out["definitions"] = DEFINITIONS
    classes = getattr(structures, "classes", None)
    if classes is not None and len(classes) and (classes != "").any():
        out["per_class"] = class_metrics(np.asarray(classes), de, df, max_f, n_atoms, cells, ds)
    return out


DEFINITIONS = {
    "energy": "total energy per structure",
    "forces": "per Cartesian force component",
    "n_energy_error_above_1_kcal/mol": "structures whose |energy error| > 1 kcal/mol",
    "n_max_force_component_error_above_1_kcal/mol/A":
        "structures whose largest |force component error| > 1 kcal/mol/Å",
    "per_class": "the same figures for the structures of each class (a heterogeneous set, DESIGN §11)",
    "energy_per_atom": "|energy error| / atoms of the structure (meV/atom), where the set has 3-D cells",
    "stress": "per component of σ (all nine, GPa) over the structures with a stress label",
}


def cell_figures(de: np.ndarray, n_atoms: np.ndarray, ds: np.ndarray | None) -> dict:
    """Figures of a set with 3-D cells (DESIGN §12): energy errors per atom (meV/atom) from ``de`` (n,) eV, and
    stress errors from ``ds`` (n, 3, 3) GPa (NaN rows: no stress label) when given."""
    out = _stats(de / n_atoms * 1e3, "energy_per_atom", "meV/atom", kcal=False)  # (n,) meV/atom
    if ds is not None:
        rows = np.isfinite(ds).all(axis=(1, 2))
        out["n_stress"] = int(rows.sum())
        out.update(_stats(ds[rows], "stress", "GPa", kcal=False))  # (k, 3, 3) GPa
    return out


def _figures(de: np.ndarray, df: np.ndarray | None, max_f: np.ndarray | None, n_atoms: np.ndarray) -> dict:
    """The error figures of one set: energy errors ``de`` (n,) eV, force errors ``df`` (n_atoms_total, 3) eV/Å
    or None, the largest force-component error ``max_f`` (n,) eV/Å of each structure."""
    thr = THRESHOLD_KCAL * KCAL_PER_MOL
    out = {"n_structures": int(len(n_atoms)), "n_atoms": int(n_atoms.sum())}
    out.update(_stats(de, "energy", "eV"))
    if df is not None:
        out.update(_stats(df, "forces", "eV/A"))
    out["n_energy_error_above_1_kcal/mol"] = int((np.abs(de) > thr).sum())
    if max_f is not None:
        out["n_max_force_component_error_above_1_kcal/mol/A"] = int((max_f > thr).sum())
    return out


def class_metrics(classes: np.ndarray, de: np.ndarray, df: np.ndarray | None, max_f: np.ndarray | None,
                  n_atoms: np.ndarray, cells: np.ndarray | None = None, ds: np.ndarray | None = None
                  ) -> dict[str, dict]:
    """{class: the figures of its structures} for every class present ("" = without a class, left out); for a
    class of 3-D cells (``cells`` (n,) bool) also its energy per atom and, with stress errors ``ds`` (n, 3, 3)
    GPa, its stress figures (:func:`cell_figures`)."""
    offsets = offsets_from_counts(n_atoms)
    out = {}
    for name in sorted(set(classes.tolist()) - {""}):
        rows = np.flatnonzero(classes == name)
        atoms = atom_index(offsets, rows)
        out[name] = _figures(de[rows], None if df is None else df[atoms], None if max_f is None else max_f[rows],
                             n_atoms[rows])
        if cells is not None and cells[rows].all():
            labeled = ds is not None and bool(np.isfinite(ds[rows]).all(axis=(1, 2)).any())
            out[name].update(cell_figures(de[rows], n_atoms[rows], ds[rows] if labeled else None))
    return out
