"""Typed settings, one model per step: the single source of truth for configuration.

Every model rejects unknown keys (``extra="forbid"``) and checks cross-field rules, with
messages that name the key. The workflow's JSON schema (workflow/schemas/config.schema.json)
is generated from :class:`CampaignSettings` (``oedal schema``) and a test keeps them equal.
Units: Å, eV, eV/Å.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

CONTRACTIONS = ("c0", "c11", "c22", "c33", "c222", "c112", "c332", "c321")
"""Gaussian-moment contractions (DESIGN §4): Ψ0; Ψ1·Ψ1; Ψ2:Ψ2; Ψ3⋮Ψ3; Ψ2Ψ2Ψ2; Ψ1Ψ1Ψ2; Ψ3Ψ3Ψ2; Ψ3Ψ2Ψ1."""


class Settings(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class DescriptorSettings(Settings):
    r_cut: float = Field(5.0, gt=0, description="cutoff radius r_c (Å)")
    r_min: float = Field(0.5, ge=0, description="first Gaussian centre (Å)")
    n_basis: int = Field(7, ge=1, description="number of Gaussian basis functions on [r_min, r_c]")
    n_radial: int = Field(5, ge=1, description="number of radial functions per species pair")
    contractions: list[Literal[CONTRACTIONS]] = Field(  # type: ignore[valid-type]
        default_factory=lambda: list(CONTRACTIONS), min_length=1
    )

    @model_validator(mode="after")
    def _check(self) -> "DescriptorSettings":
        if self.r_min >= self.r_cut:
            raise ValueError(f"descriptor.r_min ({self.r_min}) must be below descriptor.r_cut ({self.r_cut})")
        if len(set(self.contractions)) != len(self.contractions):
            raise ValueError("descriptor.contractions has duplicates")
        return self


class ModelSettings(Settings):
    descriptor: DescriptorSettings = Field(default_factory=DescriptorSettings)
    hidden: list[int] = Field(default_factory=lambda: [256, 128], min_length=1)
    activation: Literal["silu", "tanh"] = "silu"
    dtype: Literal["float32", "float64"] = Field(
        "float32", description="per-atom network dtype; totals and shifts are always float64"
    )


class TrainingSettings(Settings):
    epochs: int = Field(1000, ge=1)
    batch_size: int = Field(32, ge=1)
    learning_rate: float = Field(1e-3, gt=0)
    weight_energy: float = Field(1.0, ge=0, description="w_E of eq. 4")
    weight_forces: float = Field(100.0, ge=0, description="w_F of eq. 4 (Å²)")
    patience: int = Field(100, ge=1, description="epochs without validation improvement before stopping")
    seed: int = 0
    device: str = Field("auto", description="auto | cpu | cuda | cuda:N")
    threads: int | None = Field(None, ge=1, description="torch CPU threads (default: torch's)")
    max_minutes: float | None = Field(None, gt=0, description="wall-clock limit; best weights kept")
    compile: bool = Field(False, description="torch.compile the model")

    @model_validator(mode="after")
    def _check(self) -> "TrainingSettings":
        if self.weight_energy == 0 and self.weight_forces == 0:
            raise ValueError("training.weight_energy and training.weight_forces are both 0")
        return self


class ScoreSettings(Settings):
    strategy: Literal["qs1", "qs2", "qs3", "qbc"] = "qs1"
    beta: float = Field(1.0, ge=0, description="QS3 = QS1 + beta·QS2 (eq. 22)")
    qs2_reduction: Literal["mean", "max"] = Field("mean", description="eq. 21 mean, or per-atom maximum")
    threshold: Literal["median", "mean"] = Field("median", description="σ_th over training scores (sec. 3.3)")
    jitter: float = Field(1e-8, ge=0, description="relative diagonal jitter for a singular Fisher matrix")
    chunk_size: int = Field(2048, ge=1, description="pool structures scored per chunk")
    device: str = "auto"


class SelectSettings(Settings):
    method: Literal["top", "greedy", "random", "qbc"] = "greedy"
    n: int | None = Field(None, ge=1, description="fixed number to select")
    fraction: float | None = Field(0.1, gt=0, description="m = fraction · N_train (paper: 0.1)")
    seed: int = 0

    @model_validator(mode="after")
    def _check(self) -> "SelectSettings":
        if self.n is not None and self.fraction is not None and "n" in self.model_fields_set and "fraction" in self.model_fields_set:
            raise ValueError("select: give either n or fraction, not both")
        return self


S = TypeVar("S", bound=Settings)


def load_settings(cls: type[S], source: str | Path | dict | None, **overrides) -> S:
    """Build settings from a JSON string, a JSON file, or a dict, then apply non-None overrides.

    Raises ``ValueError`` naming the offending key.
    """
    if source is None:
        data: dict = {}
    elif isinstance(source, dict):
        data = dict(source)
    else:
        text = str(source)
        path = Path(text)
        if not text.lstrip().startswith("{") and path.exists():
            text = path.read_text()
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise ValueError(f"settings are not valid JSON: {err}") from None
    data.update({k: v for k, v in overrides.items() if v is not None})
    try:
        return cls.model_validate(data)
    except ValidationError as err:
        raise ValueError(format_validation_error(err, cls.__name__)) from None


def format_validation_error(err: ValidationError, where: str) -> str:
    lines = [f"invalid {where}:"]
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"]) or "(root)"
        lines.append(f"  {key}: {e['msg']}")
    return "\n".join(lines)
