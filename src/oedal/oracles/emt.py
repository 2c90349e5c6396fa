"""ASE's EMT as an oracle: fast, for tests only (not a molecular method)."""

from __future__ import annotations

from ase.calculators.emt import EMT

from oedal.oracles.base import ASEOracle


class EMTOracle(ASEOracle):
    def __init__(self) -> None:
        super().__init__(EMT(), name="emt")
