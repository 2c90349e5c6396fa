"""ASE calculator for a saved GM-NN (energy, free_energy, forces; molecules and periodic cells)."""

from __future__ import annotations

import numpy as np
import torch
from ase.calculators.calculator import Calculator, all_changes

from oedal.data.structures import Structures
from oedal.data.validate import validate_structures
from oedal.device import resolve_device
from oedal.gmnn.batching import make_batch
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
    """``GMNNCalculator(model_path_or_model, device="cpu")``.

    Every call checks its atoms first (:func:`oedal.data.validate.validate_structures`): no atoms, a
    NaN or inf position or cell, an element the model does not know or a degenerate periodic cell
    raise InputError instead of returning NaN energies. Interatomic distances are not checked: MD
    may explore close contacts, and an exploration walker judges those itself. A model file that
    names code is refused unread (:func:`oedal.gmnn.model.load_data_file`)."""

    implemented_properties = ["energy", "free_energy", "forces"]

    def __init__(self, model_path, device: str = "cpu", **kwargs):
        super().__init__(**kwargs)
        self.device = resolve_device(device)
        self.model = model_path if isinstance(model_path, GMNN) else load_model(model_path, device=self.device)
        self.model.eval()

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        m = self.model
        structures = validate_structures(atoms_as_structures(self.atoms), "GMNNCalculator: atoms",
                                         known_numbers=m.species, min_distance=0.0)
        batch = make_batch(structures, m.cutoff, m.species, device=self.device, dtype=torch.float64)
        energy, forces = m.energy_and_forces(batch)
        e = float(energy.detach().cpu()[0])
        self.results = {"energy": e, "free_energy": e, "forces": forces.detach().cpu().double().numpy()}
