"""The walkers' sanity checks (DESIGN §9): one class per check, in the order they run, each with its own limit
keys of the campaign's ``explore`` section (apax's md/dynamics_checks.py is the model).

A check judges one frame of one walker and says why it is unphysical, or nothing. The first check that fails
stops the walker. A check marked ``geometry`` judges the geometry alone: a frame that fails it is broken and
never goes to the oracle (non-finite positions, a short contact, an atom flown apart); a frame stopped by any
other check (a force spike, an energy jump, heat) is where the model failed, the most informative frame of
the walker, and is labeled.

A new check is one class here: its ``keys`` (name → pydantic Field: default, bounds, description) become keys
of the ``explore`` section of every campaign config (oedal.campaign.settings.ExploreSettings), and it runs on
every frame the walkers judge. The bands (accurate / candidate / stopped, :func:`decide`) judge the model's
uncertainty, never a check.
"""

from __future__ import annotations

import math
from typing import ClassVar, Literal, Mapping, NamedTuple

import numpy as np
from ase.data import chemical_symbols, covalent_radii
from ase.geometry import get_distances
from pydantic import Field
from pydantic.fields import FieldInfo

Decision = Literal["accurate", "candidate", "stopped"]


class Frame(NamedTuple):
    """What a check reads of one walker's frame (units Å, eV, eV/Å, K)."""

    positions: np.ndarray  # (n, 3)
    numbers: np.ndarray  # (n,)
    cell: np.ndarray | list  # (3, 3)
    pbc: np.ndarray | list  # (3,)
    forces: np.ndarray | None = None  # (n, 3); None: the geometry alone is judged
    energy: float = 0.0
    previous_energy: float | None = None  # at the walker's last accepted check
    temperature: float = 0.0  # kinetic
    thermostat: float = 0.0  # the walker's thermostat temperature


def distances(frame: Frame) -> np.ndarray:
    """(n, n) Å: every pair's distance, the nearest periodic image where the frame is periodic."""
    if any(frame.pbc):
        return get_distances(frame.positions, cell=frame.cell, pbc=frame.pbc)[1]
    return np.linalg.norm(frame.positions[:, None] - frame.positions[None, :], axis=-1)


class Check:
    """A sanity check: :meth:`reason` (why the frame is unphysical, or None) from ``limits`` (the explore
    settings' values of its ``keys``, and ``cutoff``: the model's r_c)."""

    keys: ClassVar[dict[str, FieldInfo]] = {}
    geometry: ClassVar[bool] = False

    @staticmethod
    def reason(frame: Frame, limits: Mapping[str, float]) -> str | None:
        raise NotImplementedError


class Finite(Check):
    """No NaN or ±inf in the energy, the forces or the positions."""

    @staticmethod
    def reason(frame: Frame, limits: Mapping[str, float]) -> str | None:
        values = (np.isfinite(frame.energy), frame.forces is None or np.all(np.isfinite(frame.forces)),
                  np.all(np.isfinite(frame.positions)))
        return None if all(values) else "non-finite energy, forces or positions"


class FinitePositions(Check):
    """No NaN or ±inf in the positions (what the geometry alone can say of :class:`Finite`)."""

    geometry = True

    @staticmethod
    def reason(frame: Frame, limits: Mapping[str, float]) -> str | None:
        return None if np.all(np.isfinite(frame.positions)) else "non-finite positions"


class ShortContact(Check):
    """Two atoms closer than ``min_distance`` Å, or than ``min_bond_factor`` × the sum of their covalent radii
    (ase.data.covalent_radii; at 0.7: C–H 0.75 Å, O–H 0.68 Å, C–C 1.06 Å, H–H 0.43 Å), periodic images
    included: a walker there has left chemistry (the model's hole), and an oracle call on it teaches nothing
    a campaign wants."""

    geometry = True
    keys = {
        "min_distance": Field(0.5, gt=0, description="sanity: closest pair (Å)"),
        "min_bond_factor": Field(0.7, ge=0, description="sanity: closest pair relative to the sum of the two "
                                 "covalent radii (0.7: C–H 0.75 Å, O–H 0.68 Å); such frames are not labeled"),
    }

    @staticmethod
    def reason(frame: Frame, limits: Mapping[str, float]) -> str | None:
        n = len(frame.positions)
        if n < 2:
            return None
        i, j = np.triu_indices(n, 1)
        d = distances(frame)[i, j]
        k = int(np.argmin(d))
        if d[k] < limits["min_distance"]:
            return f"atoms {d[k]:.2f} Å apart (< {limits['min_distance']} Å)"
        z = np.asarray(frame.numbers)
        bond = covalent_radii[z[i]] + covalent_radii[z[j]]
        factor = limits.get("min_bond_factor", 0.0)
        k = int(np.argmin(d / bond))
        if d[k] < factor * bond[k]:
            return (f"{chemical_symbols[z[i[k]]]}–{chemical_symbols[z[j[k]]]} {d[k]:.2f} Å apart "
                    f"(< {factor} × {bond[k]:.2f} Å, the covalent radii)")
        return None


class LoneAtom(Check):
    """An atom with no other atom (or periodic image of one) within the model's cutoff (``limits["cutoff"]``;
    no check without it): the model sees it alone in vacuum, so the walker (a time step too long, a
    temperature too high, a repulsive hole of the model) has left the system it explores."""

    geometry = True

    @staticmethod
    def reason(frame: Frame, limits: Mapping[str, float]) -> str | None:
        cutoff = limits.get("cutoff")
        if cutoff is None or len(frame.positions) < 2:
            return None
        d = distances(frame)
        np.fill_diagonal(d, np.inf)
        nearest = d.min(axis=1)
        k = int(np.argmax(nearest))
        if nearest[k] > cutoff:
            return f"flew apart: atom {k} has no neighbour within the cutoff {cutoff} Å (nearest {nearest[k]:.3g} Å)"
        return None


class ForceSpike(Check):
    """A force component above ``max_force``."""

    keys = {"max_force": Field(30.0, gt=0, description="sanity: largest force component (eV/Å)")}

    @staticmethod
    def reason(frame: Frame, limits: Mapping[str, float]) -> str | None:
        largest = float(np.abs(frame.forces).max())
        return f"a force of {largest:.1f} eV/Å (> {limits['max_force']})" if largest > limits["max_force"] else None


class EnergyJump(Check):
    """An energy change per atom above ``max_energy_jump`` since the walker's last accepted check."""

    keys = {"max_energy_jump": Field(1.0, gt=0, description="sanity: energy change between checks (eV/atom)")}

    @staticmethod
    def reason(frame: Frame, limits: Mapping[str, float]) -> str | None:
        if frame.previous_energy is None:
            return None
        jump = abs(frame.energy - frame.previous_energy) / len(frame.positions)
        return f"an energy jump of {jump:.2f} eV/atom between checks" if jump > limits["max_energy_jump"] else None


class Heat(Check):
    """A kinetic temperature above ``max_temperature_factor`` × the walker's thermostat temperature."""

    keys = {"max_temperature_factor": Field(3.0, gt=1, description="sanity: kinetic temperature above this × T")}

    @staticmethod
    def reason(frame: Frame, limits: Mapping[str, float]) -> str | None:
        ceiling = limits["max_temperature_factor"] * frame.thermostat
        return f"a temperature of {frame.temperature:.0f} K (> {ceiling:.0f} K)" if frame.temperature > ceiling else None


CHECKS: tuple[type[Check], ...] = (Finite, ShortContact, LoneAtom, ForceSpike, EnergyJump, Heat)
"""Every check of a judged frame, in the order they run (the first that fails is the walker's reason)."""
GEOMETRY_CHECKS: tuple[type[Check], ...] = (FinitePositions, ShortContact, LoneAtom)
"""What a geometry alone is checked by (a frame to label, a rattled start)."""


def limit_fields() -> dict[str, FieldInfo]:
    """Every check's config keys (explore.<key>), in the order of the checks."""
    return {key: field for check in CHECKS for key, field in check.keys.items()}


def geometry_limits() -> dict[str, FieldInfo]:
    """The config keys of the geometry checks (what a rattled start is held to)."""
    return {key: field for check in GEOMETRY_CHECKS for key, field in check.keys.items()}


def sanity_reason(frame: Frame, limits: Mapping[str, float]) -> str | None:
    """Why ``frame`` is unphysical (the first check of :data:`CHECKS` that fails), or None."""
    return next((r for check in CHECKS if (r := check.reason(frame, limits)) is not None), None)


def broken_geometry(frame: Frame, limits: Mapping[str, float]) -> str | None:
    """Why ``frame``'s geometry itself is broken (:data:`GEOMETRY_CHECKS`), or None."""
    return next((r for check in GEOMETRY_CHECKS if (r := check.reason(frame, limits)) is not None), None)


def labelable(positions: np.ndarray, numbers: np.ndarray, limits: Mapping[str, float], cell=None, pbc=None) -> bool:
    """A frame is worth an oracle call unless its geometry itself is broken (:func:`broken_geometry`): too
    uncertain, too hot or a force spike of the model mark exactly the frames the model has to learn."""
    frame = Frame(np.asarray(positions), np.asarray(numbers), np.zeros((3, 3)) if cell is None else cell,
                  [False] * 3 if pbc is None else pbc)
    return broken_geometry(frame, limits) is None


def decide(informativeness: float, low: float, high: float, sanity: str | None = None) -> Decision:
    """The band of one checked frame: accurate below ``low``, a candidate up to ``high``, stopped above it or
    when a sanity check failed (``sanity``: its reason)."""
    if sanity is not None or not math.isfinite(informativeness) or informativeness > high:
        return "stopped"
    return "candidate" if informativeness >= low else "accurate"
