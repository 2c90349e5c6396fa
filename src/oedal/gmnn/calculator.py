"""ASE calculator for a saved GM-NN (energy, free_energy, forces; molecules and periodic cells)."""

from __future__ import annotations

import numpy as np
import torch
from ase.calculators.calculator import Calculator, all_changes
from ase.stress import full_3x3_to_voigt_6_stress

from oedal.data.structures import Structures
from oedal.data.validate import validate_structures
from oedal.device import resolve_device
from oedal.errors import InputError
from oedal.gmnn.model import GMNN, load_model


def atoms_as_structures(atoms) -> Structures:
    """One ase.Atoms as Structures (no labels; id from ``atoms.info["id"]``, else 0)."""
    return Structures(
        positions=np.asarray(atoms.get_positions(), np.float64),
        numbers=np.asarray(atoms.get_atomic_numbers(), np.int64),
        n_atoms=np.array([len(atoms)], np.int64),
        cell=np.asarray(atoms.get_cell()[:], np.float64)[None],
        pbc=np.asarray(atoms.get_pbc(), bool)[None],
        ids=np.array([int(atoms.info.get("id", 0))], np.int64),
    )


class GMNNCalculator(Calculator):
    """``GMNNCalculator(model_path_or_model, device="cpu", threads=None)``: energy, free_energy,
    forces, and for periodic cells the stress (eV/Å³, Voigt order xx yy zz yz xz xy: σ = (1/V) ∂E/∂ε
    from the model's virial, :meth:`GMNN.evaluate`), so cells can be relaxed and run NPT.

    ``threads``: torch's CPU threads for this process (one is fastest for a small molecule; torch's
    default of every core costs 20–30× per step on a loaded machine); the count stays as set.

    Every call checks its atoms first (:func:`oedal.data.validate.validate_structures`): no atoms, a
    NaN or inf position or cell, an element the model does not know or a degenerate periodic cell
    raise InputError instead of returning NaN energies. Interatomic distances are not checked: MD
    may explore close contacts, and an exploration walker judges those itself. A model file that
    names code is refused unread (:func:`oedal.gmnn.model.load_data_file`)."""

    implemented_properties = ["energy", "free_energy", "forces", "stress"]

    def __init__(self, model_path, device: str = "cpu", threads: int | None = None, **kwargs):
        super().__init__(**kwargs)
        if threads is not None:
            torch.set_num_threads(int(threads))
        self.device = resolve_device(device)
        self.model = model_path if isinstance(model_path, GMNN) else load_model(model_path, device=self.device)
        self.model.eval()

    def batch(self, atoms):
        """The checked atoms as a one-structure Batch (float64 positions)."""
        m = self.model
        structures = validate_structures(atoms_as_structures(atoms), "GMNNCalculator: atoms",
                                         known_numbers=m.species, min_distance=0.0)
        return m.batch(structures, dtype=torch.float64)

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        self.results = self.results_of(self.model.evaluate(self.batch(self.atoms), stress="stress" in properties))

    def results_of(self, ev) -> dict:
        """ASE results of one structure's :class:`oedal.gmnn.model.Evaluation`."""
        e = float(ev.energy.cpu()[0])
        results = {"energy": e, "free_energy": e, "forces": ev.forces.cpu().double().numpy()}
        if ev.virial is not None:
            if not self.atoms.pbc.all():
                raise InputError("GMNNCalculator: stress needs a cell periodic in all three directions")
            results["stress"] = full_3x3_to_voigt_6_stress(ev.virial[0].cpu().numpy() / self.atoms.get_volume())
        return results
