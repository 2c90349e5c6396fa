"""A potential's errors on a labeled set, as a baseline row beside the trained models' (DESIGN §12): a universal
potential (CHGNet) every trained GM-NN should beat on the user's own test set."""

from __future__ import annotations

import logging

import numpy as np

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


def baseline_metrics(oracle: Oracle, structures) -> dict:
    """:func:`oedal.gmnn.evaluation.error_metrics` of the oracle's predictions, plus its name."""
    return {"potential": getattr(oracle, "name", type(oracle).__name__), **errors_of(oracle_predictions(oracle, structures),
                                                                                        structures)}
