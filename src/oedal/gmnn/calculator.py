"""ASE calculator for a saved GM-NN (energy, free_energy, forces; molecules and periodic cells)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import torch
from ase.calculators.calculator import Calculator, all_changes

from oedal.gmnn.batching import make_batch
from oedal.device import resolve_device
from oedal.gmnn.model import GMNN, load_model


def atoms_as_structures(atoms) -> SimpleNamespace:
    """One ase.Atoms as the ragged arrays BatchLoader reads (no labels)."""
    return SimpleNamespace(
        positions=np.asarray(atoms.get_positions(), np.float64),
        numbers=np.asarray(atoms.get_atomic_numbers(), np.int64),
        n_atoms=np.array([len(atoms)], np.int64),
        cell=np.asarray(atoms.get_cell()[:], np.float64)[None],
        pbc=np.asarray(atoms.get_pbc(), bool)[None],
        energy=None,
        forces=None,
    )


class GMNNCalculator(Calculator):
    """``GMNNCalculator(model_path_or_model, device="cpu")``; unknown elements raise InputError."""

    implemented_properties = ["energy", "free_energy", "forces"]

    def __init__(self, model_path, device: str = "cpu", **kwargs):
        super().__init__(**kwargs)
        self.device = resolve_device(device)
        self.model = model_path if isinstance(model_path, GMNN) else load_model(model_path, device=self.device)
        self.model.eval()

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        m = self.model
        batch = make_batch(atoms_as_structures(self.atoms), m.cutoff, m.species, device=self.device, dtype=torch.float64)
        energy, forces = m.energy_and_forces(batch)
        e = float(energy.detach().cpu()[0])
        self.results = {"energy": e, "free_energy": e, "forces": forces.detach().cpu().double().numpy()}
