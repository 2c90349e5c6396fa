"""The oracles by kind: a new oracle is one module (its settings class and Oracle class) and one
line in :data:`ORACLES`; the settings union :data:`OracleSettings` follows from it."""

from __future__ import annotations

from typing import Annotated, Union

from pydantic import Field

from oedal.errors import SettingsError
from oedal.oracles.base import Oracle
from oedal.oracles.calculator import CalculatorOracle
from oedal.oracles.chgnet import CHGNetOracle
from oedal.oracles.emt import EMTOracle
from oedal.oracles.gpaw import GPAWOracle
from oedal.oracles.pyscf import PySCFOracle
from oedal.oracles.pyscf_pbc import PySCFPBCOracle
from oedal.oracles.replay import ReplayOracle
from oedal.oracles.xtb import XTBOracle

ORACLES: dict[str, type[Oracle]] = {cls.kind: cls for cls in (ReplayOracle, XTBOracle, PySCFOracle, PySCFPBCOracle,
                                                               GPAWOracle, EMTOracle, CHGNetOracle, CalculatorOracle)}
"""The registry: oracle kind → Oracle class (built as ``cls(settings)``)."""

OracleSettings = Annotated[Union[tuple(cls.Settings for cls in ORACLES.values())],  # type: ignore[misc]
                           Field(discriminator="kind")]
"""Settings of any registered oracle, chosen by ``kind`` (unknown keys rejected per kind)."""


def get_oracle(settings) -> Oracle:
    """Build the oracle that ``settings.kind`` names."""
    if settings.kind not in ORACLES:
        raise SettingsError(f"oracle.kind: unknown oracle {settings.kind!r} (known: {', '.join(ORACLES)})")
    return ORACLES[settings.kind](settings)


def oracle_settings(**values):
    """Validated settings of the oracle ``kind`` names (default replay), e.g. ``oracle_settings(kind="xtb")``."""
    from oedal.settings import load_settings

    return load_settings(OracleSettings, {"kind": "replay", **values})
