"""Any ASE calculator as an oracle: ``calculator = "module:factory"``, a function returning one.

The factory's module is imported when the oracle is built, so a campaign config that names one runs
that code: a config is trusted input (docs/oracles.md). The module must be importable by the labeling
job (installed, or on PYTHONPATH).
"""

from __future__ import annotations

import importlib
from typing import Literal

from pydantic import Field, model_validator

from oedal.errors import SettingsError
from oedal.oracles.base import ASEOracle, OracleSettingsBase


class CalculatorSettings(OracleSettingsBase):
    kind: Literal["ase"] = "ase"
    calculator: str = Field(description="'module:factory' returning an ASE calculator")
    calculator_kwargs: dict = Field(default_factory=dict, description="keyword arguments of the factory")

    @model_validator(mode="after")
    def _check(self) -> "CalculatorSettings":
        if ":" not in self.calculator:
            raise ValueError("oracle.calculator must be 'module:factory' for kind 'ase'")
        return self


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


class CalculatorOracle(ASEOracle):
    """The calculator that ``settings.calculator`` builds, reused across structures."""

    kind, Settings = "ase", CalculatorSettings

    def __init__(self, settings: CalculatorSettings) -> None:
        factory = load_factory(settings.calculator)
        super().__init__(factory(**settings.calculator_kwargs), name=settings.calculator)
