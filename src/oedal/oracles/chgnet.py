"""CHGNet (Deng et al., Nat. Mach. Intell. 5, 1031, 2023), a universal potential whose pretrained weights ship
inside its wheel, so it runs offline (DESIGN §12): a cheap oracle for tests and experiments, and through
``sampling.potential: {kind: chgnet}`` the driver of an initial MD. Energy (eV), forces (eV/Å) and, for a
3-D cell, the stress (CHGNet's GPa → eV/Å³, ASE's sign: checked against finite differences of its energy in
tests/test_periodic_oracle.py). The weights' version (``model``) keys the label cache.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from oedal.oracles.base import ASEOracle, OracleSettingsBase


class CHGNetSettings(OracleSettingsBase):
    kind: Literal["chgnet"] = "chgnet"
    model: str = Field("0.3.0", description="the pretrained weights in the chgnet wheel (CHGNet.load(model_name))")


class CHGNetOracle(ASEOracle):
    kind, Settings, environment = "chgnet", CHGNetSettings, "materials"

    def __init__(self, settings: CHGNetSettings | None = None) -> None:
        import torch

        settings = settings or CHGNetSettings()
        try:
            from chgnet.model import CHGNet
            from chgnet.model.dynamics import CHGNetCalculator
        except ImportError as err:
            raise ImportError(f"oracle kind 'chgnet' needs the chgnet package: pip install 'oedal[materials]' ({err})"
                              ) from None
        torch.set_num_threads(settings.threads)
        model = CHGNet.load(model_name=settings.model, verbose=False)
        super().__init__(CHGNetCalculator(model=model, use_device="cpu"), name=f"chgnet {settings.model}")
