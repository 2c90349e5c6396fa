"""A potential's errors on a labeled set, as a baseline row beside the trained models' (DESIGN §12): a universal
potential (CHGNet) every trained GM-NN should beat on the user's own test set.

A universal potential's energies sit on its training data's reference (CHGNet: the Materials Project's VASP PBE),
which differs from the user's oracle by a constant per element (pseudopotentials, codes). That offset is no error
of the potential's physics, so by default its energies are first shifted by per-element constants μ_Z fitted by
least squares on the set itself, E'_i = E_i + Σ_Z n_iZ μ_Z (the energies a user would get after the same one-line
fit): the energy figures are then a lower bound on its error there. Forces and stress have no such offset."""

from __future__ import annotations

import logging

import numpy as np

from oedal.data.structures import element_counts
from oedal.gmnn.evaluation import Prediction, errors_of
from oedal.oracles.base import Oracle, stress_of
from oedal.progress import progress_bar

log = logging.getLogger(__name__)


def oracle_predictions(oracle: Oracle, structures) -> Prediction:
    """The oracle's energy (eV), forces (eV/Å) and stress (eV/Å³, NaN where it gives none) of every structure."""
    n = len(structures)
    energy, stress = np.zeros(n), np.full((n, 3, 3), np.nan)
    forces = np.zeros((int(np.sum(structures.n_atoms)), 3))
    offsets = structures.offsets
    for k, atoms in enumerate(progress_bar(structures.to_atoms(), total=n, desc="baseline", unit="structure")):
        atoms.calc = None
        result = oracle.label(atoms)
        energy[k] = result[0]
        if result[1] is not None:
            forces[offsets[k] : offsets[k + 1]] = result[1]
        if stress_of(result) is not None:
            stress[k] = stress_of(result)
    return Prediction(energy, forces, stress)


def element_offsets(numbers: np.ndarray, n_atoms: np.ndarray, residual: np.ndarray) -> dict[int, float]:
    """Per-element constants μ_Z (eV per atom) minimising Σ_i (residual_i − Σ_Z n_iZ μ_Z)² (least squares; the
    minimum-norm solution where the compositions do not fix every μ_Z, e.g. one composition for all)."""
    elements = np.unique(numbers)
    counts = element_counts(np.searchsorted(elements, numbers), n_atoms, len(elements))  # (n_structures, n_Z) n_iZ
    mu = np.linalg.lstsq(counts, residual, rcond=None)[0]
    return {int(z): float(m) for z, m in zip(elements, mu)}


def baseline_metrics(oracle: Oracle, structures, align: bool = True) -> dict:
    """:func:`oedal.gmnn.evaluation.errors_of` of the oracle's predictions, plus its name; ``align``: its energies
    shifted first by the per-element constants (:func:`element_offsets`, recorded as ``element_offsets_eV``)."""
    prediction = oracle_predictions(oracle, structures)
    out: dict = {"potential": getattr(oracle, "name", type(oracle).__name__), "energy_aligned": align}
    if align:
        n_atoms = np.asarray(structures.n_atoms, np.int64)
        mu = element_offsets(np.asarray(structures.numbers), n_atoms,
                             np.asarray(structures.energy, np.float64) - prediction.energy)
        elements = np.array(sorted(mu))
        shift = element_counts(np.searchsorted(elements, structures.numbers), n_atoms, len(elements)) @ np.array(
            [mu[z] for z in elements])  # (n_structures,) eV: Σ_Z n_iZ μ_Z
        prediction = prediction._replace(energy=prediction.energy + shift)
        out["element_offsets_eV"] = {str(z): m for z, m in mu.items()}
    return {**out, **errors_of(prediction, structures)}
