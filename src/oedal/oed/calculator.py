"""An ASE calculator that judges its own predictions: GMNNCalculator plus the model's uncertainty.

Every call returns, besides energy, forces (and stress for cells), under these keys of
``calc.results`` (oedal.oed.uncertainty; the model file carries the fitted uncertainty):

* ``oed_score``: the QS1 score of the structure, s/(1+s) with s = gᵀ(Ã + λI)⁻¹g (eq. 14, fitted prior λ);
* ``informativeness``: I = oed_score / σ_th (σ_th: median over the model's training structures);
  I > 1 means less known than a typical training structure (section 3.3);
* ``force_error``: the expected RMS error of the structure's force components, eV/Å (the calibrated map);
* ``atom_force_error`` (with ``atoms=True``): (n_atoms,) the expected RMS error of each atom's force
  components, eV/Å, from QS2 per atom (costs the d × 3N force sensitivities per call).

The energy score comes with the forward pass (g = Σ_i σ_i h_i, GMNN.evaluate): a few per cent over
the plain calculator's step (benchmarks/bench_explore.py).
"""

from __future__ import annotations

import numpy as np
from ase.calculators.calculator import all_changes

from oedal.errors import InputError
from oedal.gmnn.calculator import GMNNCalculator
from oedal.oed.uncertainty import UncertaintyHead, evaluate_with_uncertainty, model_head

RESULT_KEYS = ("oed_score", "informativeness", "force_error", "atom_force_error")


class UncertaintyCalculator(GMNNCalculator):
    """``UncertaintyCalculator(model, device="cpu", threads=None, atoms=False, head=None)``: see the module
    docstring; ``head`` overrides the uncertainty stored in the model file."""

    implemented_properties = GMNNCalculator.implemented_properties + list(RESULT_KEYS)

    def __init__(self, model_path, *, atoms: bool = False, head: UncertaintyHead | None = None, **kwargs):
        super().__init__(model_path, **kwargs)
        head = head or model_head(self.model)
        if atoms and head.atom_chol is None:
            raise InputError("the model file carries no per-atom force uncertainty (oedal train --atom-uncertainty)")
        self.head, self.per_atom = head, atoms

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super(GMNNCalculator, self).calculate(atoms, properties, system_changes)
        batch = self.batch(self.atoms)
        ev, u = evaluate_with_uncertainty(self.model, self.head, batch, stress="stress" in properties)
        results = self.results_of(ev)
        results.update(oed_score=float(u["score"][0]), informativeness=float(u["informativeness"][0]),
                       force_error=float(u["force_error"][0]))
        if self.per_atom:
            from oedal.oed.sensitivities import force_sensitivities_batch

            g_f = force_sensitivities_batch(self.model, batch, out=np.zeros((len(self.atoms), 3, self.model.d)))
            results["atom_force_error"] = self.head.atoms(g_f.forces.numpy().reshape(-1, self.model.d))
        self.results = results
