"""An ASE calculator that judges its own predictions: GMNNCalculator plus the model's uncertainty.

Every call returns, besides energy, forces (and stress for cells), under these keys of
``calc.results`` (oedal.oed.uncertainty; the model file carries the fitted uncertainty):

* ``oed_score``: the QS1 score of the structure, s/(1+s) with s = gᵀ(Ã + λI)⁻¹g (eq. 14, fitted prior λ);
* ``informativeness``: I = oed_score / σ_th (σ_th: median over the model's training structures);
  I > 1 means less known than a typical training structure (section 3.3);
* ``force_error``: the expected RMS error of the structure's force components, eV/Å (the calibrated map);
* ``atom_force_error`` (with ``atoms=True``): (n_atoms,) the expected RMS error of each atom's force
  components, eV/Å, from QS2 per atom (costs the d × 3N force sensitivities per call);
* with ``bias`` (oedal.oed.bias.UncertaintyBias): ``energy``, ``forces`` and ``stress`` are the model's plus the
  bias's (what an MD integrates), ``model_energy`` and ``model_forces`` the model's alone, ``bias_energy`` eV;
  without a bias ``model_energy`` and ``model_forces`` equal ``energy`` and ``forces``;
* ``stress_error`` (with ``stress_uncertainty=True``, on calls that compute the stress of a cell): the expected
  RMS error of its six stress components, GPa (oedal.oed.uncertainty; costs d VJPs through the descriptor
  per call).

The energy score comes with the forward pass (g = Σ_i σ_i h_i, GMNN.evaluate): a few per cent over
the plain calculator's step (benchmarks/bench_explore.py).
"""

from __future__ import annotations

import numpy as np
from ase.calculators.calculator import all_changes

from oedal.errors import InputError
from oedal.gmnn.calculator import GMNNCalculator
from oedal.oed.bias import UncertaintyBias
from oedal.oed.uncertainty import UncertaintyHead, evaluate_with_uncertainty, model_head

RESULT_KEYS = ("oed_score", "informativeness", "force_error", "atom_force_error", "stress_error", "model_energy",
               "model_forces", "bias_energy")


class UncertaintyCalculator(GMNNCalculator):
    """``UncertaintyCalculator(model, device="cpu", threads=None, atoms=False, stress_uncertainty=False,
    bias=None, head=None)``: see the module docstring; ``head`` overrides the uncertainty stored in the model
    file."""

    implemented_properties = GMNNCalculator.implemented_properties + list(RESULT_KEYS)

    def __init__(self, model_path, *, atoms: bool = False, stress_uncertainty: bool = False,
                 bias: UncertaintyBias | None = None, head: UncertaintyHead | None = None, **kwargs):
        super().__init__(model_path, **kwargs)
        head = head or model_head(self.model)
        if atoms and head.atom_chol is None:
            raise InputError("the model file carries no per-atom force uncertainty (oedal train --atom-uncertainty)")
        if stress_uncertainty and head.stress_error_map is None:
            raise InputError("the model file carries no stress uncertainty (its validation set had no cells with "
                             "stress labels): retrain it on stress-labeled cells, or leave stress_uncertainty off")
        self.head, self.per_atom, self.stress_uncertainty, self.bias = head, atoms, stress_uncertainty, bias

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super(GMNNCalculator, self).calculate(atoms, properties, system_changes)
        batch = self.batch(self.atoms)
        ev, u = evaluate_with_uncertainty(self.model, self.head, batch, stress="stress" in properties, bias=self.bias)
        results = self.results_of(ev)
        results.update(model_energy=results["energy"], model_forces=results["forces"])
        if ev.bias is not None:
            moved = self.results_of(ev._replace(energy=ev.energy + ev.bias.energy, forces=ev.forces + ev.bias.forces,
                                                virial=None if ev.virial is None else ev.virial + ev.bias.virial))
            results.update(moved, bias_energy=float(ev.bias.energy[0]))
        results.update(oed_score=float(u["score"][0]), informativeness=float(u["informativeness"][0]),
                       force_error=float(u["force_error"][0]))
        if self.per_atom:
            from oedal.oed.sensitivities import force_sensitivities_batch

            g_f = force_sensitivities_batch(self.model, batch, out=np.zeros((len(self.atoms), 3, self.model.d)))
            results["atom_force_error"] = self.head.atoms(g_f.forces.numpy().reshape(-1, self.model.d))
        if self.stress_uncertainty and "stress" in results:
            from oedal.oed.sensitivities import virial_sensitivities_batch, voigt_stress_sensitivities

            g_w = virial_sensitivities_batch(self.model, batch).double().cpu().numpy()  # (1, 3, 3, d)
            g_s = voigt_stress_sensitivities(g_w, np.array([self.atoms.get_volume()]))
            results["stress_error"] = float(self.head.stress(g_s)[0])
        self.results = results
