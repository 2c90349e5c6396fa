"""The oracle interface: one structure in, energy (eV) and forces (eV/Å) out, or an exception.
Forces are None for an energy-only label (replay of a data set without forces, e.g. QM9). A label may carry
a stress (3, 3) eV/Å³, σ = (1/V) ∂E/∂ε (ASE's sign), in :class:`OracleResult`; None: no stress label.

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

    RUNTIME: ClassVar[frozenset[str]] = frozenset({"threads", "max_attempts", "timeout"})

    kind: str
    threads: int = Field(1, ge=1, description="threads per labeling process")
    max_attempts: int = Field(1, ge=1, description="tries per structure before it is recorded as failed")
    timeout: float | None = Field(None, gt=0, description="seconds per oracle call: a call past it is a failed "
                                  "attempt (recorded with its reason, retried up to max_attempts); None: no limit")


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


class OracleTimeout(OracleFailure):
    """An oracle call ran past ``timeout`` seconds."""


def call_with_timeout(function, seconds: float | None):
    """``function()``, or :class:`OracleTimeout` once it has run ``seconds`` (SIGALRM: the labeling job's main
    thread; a call in C returns to Python before the alarm is seen, e.g. at PySCF's next SCF cycle). Elsewhere,
    or with ``seconds`` None, no limit."""
    import signal
    import threading

    if seconds is None or threading.current_thread() is not threading.main_thread():
        return function()

    def expire(signum, frame):
        raise OracleTimeout(f"oracle call ran past its timeout of {seconds:g} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        return function()
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


class OracleResult(tuple):
    """What :meth:`Oracle.label` returns: it unpacks and compares as the pair ``(energy eV, forces (n_atoms, 3)
    eV/Å or None)`` every oracle and caller has used, and carries ``stress`` (3, 3) eV/Å³ or None (no stress
    label) beside it, so that a wrapper passing a result through keeps it. An oracle that never gives a stress
    may return a plain pair (:func:`stress_of` reads None from it)."""

    stress: np.ndarray | None

    def __new__(cls, energy: float, forces: np.ndarray | None, stress: np.ndarray | None = None) -> "OracleResult":
        result = super().__new__(cls, (energy, forces))
        result.stress = stress
        return result

    def __getnewargs__(self) -> tuple:  # pickle / copy: all three parts
        return (self[0], self[1], self.stress)


def stress_of(result: tuple) -> np.ndarray | None:
    """The stress an oracle's result carries ((3, 3) eV/Å³), or None (a plain pair, or no stress label)."""
    return getattr(result, "stress", None)


def stress_at(stress: np.ndarray | None, k: int) -> np.ndarray | None:
    """Structure ``k``'s stress label of a store's (n, 3, 3) eV/Å³, or None: no stress dataset, or a NaN row
    (no stress label). A row NaN only in part is returned, for :func:`check_label` to refuse."""
    if stress is None or np.isnan(stress[k]).all():
        return None
    return stress[k]


def check_label(energy, forces, n_atoms: int, stress=None) -> OracleResult:
    """``(energy eV, forces (n_atoms, 3) eV/Å)`` as float64 (with ``.stress`` (3, 3) eV/Å³ or None), or
    :class:`OracleFailure` when a label is not one: forces of another shape, a stress not (3, 3), a non-finite
    energy, force or stress. Forces None is an energy-only label (``(energy, None)``); stress None is no stress
    label. Every label passes it, fresh from an oracle or read back from the label cache."""
    energy = float(energy)
    if forces is not None:
        forces = np.asarray(forces, dtype=np.float64)
        if forces.shape != (n_atoms, 3):
            raise OracleFailure(f"forces have shape {forces.shape}, expected ({n_atoms}, 3)")
    if stress is not None:
        stress = np.asarray(stress, dtype=np.float64)
        if stress.shape != (3, 3):
            raise OracleFailure(f"stress has shape {stress.shape}, expected (3, 3)")
    if not np.isfinite(energy):
        raise OracleFailure(f"non-finite energy {energy}")
    if forces is not None and not np.all(np.isfinite(forces)):
        raise OracleFailure("non-finite forces")
    if stress is not None and not np.all(np.isfinite(stress)):
        raise OracleFailure("non-finite stress")
    return OracleResult(energy, forces, stress)


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
        """Return ``(energy eV, forces (n_atoms, 3) eV/Å)`` for ``atoms``; forces None: energy only. An
        :class:`OracleResult` adds a stress (3, 3) eV/Å³."""

    def reset(self) -> None:
        """Forget cached state (e.g. an SCF guess) before a retry."""


def gives_stress(calculator, atoms: Atoms) -> bool:
    """A stress is part of the label: ``atoms`` is periodic in all three directions and the calculator lists
    "stress" among its ``implemented_properties``."""
    return bool(np.all(atoms.pbc)) and "stress" in getattr(calculator, "implemented_properties", ())


class ASEOracle(Oracle):
    """Any ASE calculator, reused across structures; a stress too where :func:`gives_stress`."""

    def __init__(self, calculator, name: str = "ase") -> None:
        self.calculator = calculator
        self.name = name

    def label(self, atoms: Atoms) -> OracleResult:
        """Energy, forces and (where :func:`gives_stress`) stress from one attached calculator: a calculator that
        computes them together (EMT, tblite) is run once; one that computes stress on request, once more."""
        atoms = atoms.copy()
        atoms.calc = self.calculator
        energy = float(atoms.get_potential_energy())  # eV
        forces = np.array(atoms.get_forces(), dtype=np.float64)  # (n_atoms, 3) eV/Å
        stress = None
        if gives_stress(self.calculator, atoms):
            stress = np.array(atoms.get_stress(voigt=False), dtype=np.float64)  # (3, 3) eV/Å³
        return OracleResult(energy, forces, stress)

    def reset(self) -> None:
        self.calculator.reset()
