"""The oracle interface: one structure in, energy (eV) and forces (eV/Å) out, or an exception."""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod

import numpy as np
from ase import Atoms

from oedal.errors import SettingsError
from oedal.settings import OracleSettings

ID_KEY = "id"
"""``atoms.info[ID_KEY]``: the structure's stable id, set by :func:`label_store` before each call."""

REASON = "reason"
"""Dataset of failed.h5: one UTF-8 string per failed structure (why it failed)."""

ATTEMPTS = "attempts"
"""Dataset of failed.h5: how many times the oracle was tried."""


def structure_offsets(structures) -> np.ndarray:
    """``(n + 1,)`` start of each structure's atoms (whether ``offsets`` is a property or a method)."""
    offsets = structures.offsets
    return np.asarray(offsets() if callable(offsets) else offsets, dtype=np.int64)


class OracleFailure(RuntimeError):
    """The oracle could not label this structure (SCF not converged, unknown element, ...)."""


class Oracle(ABC):
    """Labels one structure at a time. Subclasses raise on failure; never return NaN silently."""

    name: str = "oracle"

    def prepare(self, ids: np.ndarray) -> None:
        """Called once with all ids of a shard before labeling (replay preloads their labels)."""

    @abstractmethod
    def label(self, atoms: Atoms) -> tuple[float, np.ndarray]:
        """Return ``(energy eV, forces (n_atoms, 3) eV/Å)`` for ``atoms``."""

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


def load_factory(spec: str):
    """Import ``"module:function"`` (e.g. ``"ase.calculators.emt:EMT"``)."""
    module_name, _, attr = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise SettingsError(f"oracle.calculator: cannot import module {module_name!r}: {err}") from None
    try:
        obj = module
        for part in attr.split("."):
            obj = getattr(obj, part)
    except AttributeError:
        raise SettingsError(f"oracle.calculator: {module_name!r} has no attribute {attr!r}") from None
    return obj


def get_oracle(settings: OracleSettings) -> Oracle:
    """Build the oracle that ``settings.kind`` names."""
    if settings.kind == "replay":
        from oedal.oracles.replay import ReplayOracle

        return ReplayOracle(settings)
    if settings.kind == "emt":
        from oedal.oracles.emt import EMTOracle

        return EMTOracle()
    if settings.kind == "xtb":
        from oedal.oracles.xtb import XTBOracle

        return XTBOracle(settings)
    if settings.kind == "pyscf":
        from oedal.oracles.pyscf import PySCFOracle

        return PySCFOracle(settings)
    if settings.kind == "ase":
        factory = load_factory(settings.calculator or "")
        return ASEOracle(factory(**settings.calculator_kwargs), name=settings.calculator or "ase")
    raise SettingsError(f"oracle.kind: unknown oracle {settings.kind!r}")
