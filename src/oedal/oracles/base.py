"""The oracle interface: one structure in, energy (eV) and forces (eV/Å) out, or an exception.
Forces are None for an energy-only label (replay of a data set without forces, e.g. QM9).

Every oracle is one module with its settings class (``kind`` a ``Literal``) and its :class:`Oracle`
class, registered in :mod:`oedal.oracles.registry`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar

import numpy as np
from ase import Atoms
from pydantic import Field

from oedal.settings import Settings

ID_KEY = "id"
"""``atoms.info[ID_KEY]``: the structure's stable id, set by :func:`label_store` before each call."""



def structure_offsets(structures) -> np.ndarray:
    """``(n + 1,)`` start of each structure's atoms (whether ``offsets`` is a property or a method)."""
    offsets = structures.offsets
    return np.asarray(offsets() if callable(offsets) else offsets, dtype=np.int64)


class OracleSettingsBase(Settings):
    """What every oracle shares: how a labeling job runs it. None of these changes a label."""

    RUNTIME: ClassVar[frozenset[str]] = frozenset({"threads", "max_attempts"})

    kind: str
    threads: int = Field(1, ge=1, description="threads per labeling process")
    max_attempts: int = Field(1, ge=1, description="tries per structure before it is recorded as failed")


RUNTIME_FIELDS = OracleSettingsBase.RUNTIME
"""Settings of every oracle that do not change a label (threads, attempts): left out of the level of
theory that keys the label cache, and out of the labeling rule's params."""


class ElectronicSettings(OracleSettingsBase):
    """Quantum-chemical oracles: total charge, spin multiplicity and the SCF iteration limit."""

    max_iterations: int = Field(250, ge=1, description="SCF iterations")
    charge: int = Field(0, description="total charge (e)")
    multiplicity: int = Field(1, ge=1, description="spin multiplicity 2S+1")


class OracleFailure(RuntimeError):
    """The oracle could not label this structure (SCF not converged, unknown element, ...)."""


def check_label(energy, forces, n_atoms: int) -> tuple[float, np.ndarray | None]:
    """``(energy eV, forces (n_atoms, 3) eV/Å)`` as float64, or :class:`OracleFailure` when a label is not
    one: forces of another shape, a non-finite energy or force. Forces None is an energy-only label
    (returned as ``(energy, None)``). Every label passes it, fresh from an oracle or read back from the
    label cache."""
    energy = float(energy)
    if forces is not None:
        forces = np.asarray(forces, dtype=np.float64)
        if forces.shape != (n_atoms, 3):
            raise OracleFailure(f"forces have shape {forces.shape}, expected ({n_atoms}, 3)")
    if not np.isfinite(energy):
        raise OracleFailure(f"non-finite energy {energy}")
    if forces is not None and not np.all(np.isfinite(forces)):
        raise OracleFailure("non-finite forces")
    return energy, forces


def check_spin(numbers: np.ndarray, charge: int, multiplicity: int) -> None:
    """Raise :class:`OracleFailure` when ``sum(Z) − charge`` electrons cannot have this multiplicity
    (2S + 1 − 1 unpaired electrons: an odd count needs an even multiplicity and vice versa)."""
    n_electrons = int(np.sum(numbers)) - int(charge)
    unpaired = int(multiplicity) - 1
    if n_electrons < unpaired or (n_electrons - unpaired) % 2:
        parity = "odd" if n_electrons % 2 else "even"
        raise OracleFailure(
            f"{n_electrons} electrons (charge {charge}) cannot have multiplicity {multiplicity}: an {parity} "
            f"electron count needs an {'even' if parity == 'odd' else 'odd'} multiplicity; set oracle.charge "
            "or oracle.multiplicity"
        )


class Oracle(ABC):
    """Labels one structure at a time. Subclasses raise on failure; never return NaN silently.

    A registered oracle sets ``kind`` and ``Settings`` and is built as ``cls(settings)``."""

    name: str = "oracle"
    kind: ClassVar[str]
    Settings: ClassVar[type[OracleSettingsBase]]
    environment: ClassVar[str] = "core"  # its conda environment, envs/{environment}.yaml (workflow --sdm conda)

    def prepare(self, ids: np.ndarray) -> None:
        """Called once with all ids of a shard before labeling (replay preloads their labels)."""

    @abstractmethod
    def label(self, atoms: Atoms) -> tuple[float, np.ndarray | None]:
        """Return ``(energy eV, forces (n_atoms, 3) eV/Å)`` for ``atoms``; forces None: energy only."""

    def reset(self) -> None:
        """Forget cached state (e.g. an SCF guess) before a retry."""


class ASEOracle(Oracle):
    """Any ASE calculator, reused across structures."""

    def __init__(self, calculator, name: str = "ase") -> None:
        self.calculator = calculator
        self.name = name

    def label(self, atoms: Atoms) -> tuple[float, np.ndarray]:
        atoms = atoms.copy()
        atoms.calc = self.calculator
        energy = float(atoms.get_potential_energy())  # eV
        forces = np.array(atoms.get_forces(), dtype=np.float64)  # (n_atoms, 3) eV/Å
        return energy, forces

    def reset(self) -> None:
        self.calculator.reset()
