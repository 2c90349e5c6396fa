"""ASE's EMT as an oracle: fast, for tests only (not a molecular method)."""

from __future__ import annotations

from typing import Literal

from oedal.oracles.base import ASEOracle, OracleSettingsBase


class EMTSettings(OracleSettingsBase):
    kind: Literal["emt"] = "emt"


class EMTOracle(ASEOracle):
    kind, Settings = "emt", EMTSettings

    def __init__(self, settings: EMTSettings | None = None) -> None:
        from ase.calculators.emt import EMT

        super().__init__(EMT(), name="emt")
