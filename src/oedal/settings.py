"""Typed settings, one model per step: the single source of truth for configuration.

Every model rejects unknown keys (``extra="forbid"``) and checks cross-field rules, with
messages that name the key. This base module holds the settings that every layer uses (model,
training, selection) and the helpers to load them; settings with variants live beside their
registry as pydantic unions discriminated by ``kind``: the OED scores in
:mod:`oedal.oed.scorers`, the oracles in :mod:`oedal.oracles`. The campaign (one workflow config)
is :class:`oedal.campaign.settings.CampaignSettings`; the workflow's JSON schema
(workflow/schemas/config.schema.json) is generated from it (``oedal schema``) and a test keeps
them equal. Units: Å, eV, eV/Å.
"""

from __future__ import annotations

import json
import typing
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, model_validator

CONTRACTIONS = ("c0", "c11", "c22", "c33", "c222", "c112", "c332", "c321")
"""Gaussian-moment contractions (DESIGN §4): Ψ0; Ψ1·Ψ1; Ψ2:Ψ2; Ψ3⋮Ψ3; Ψ2Ψ2Ψ2; Ψ1Ψ1Ψ2; Ψ3Ψ3Ψ2; Ψ3Ψ2Ψ1."""


class Settings(BaseModel):
    """Every settings model: unknown keys, and NaN or ±inf for any float, are errors naming the key.

    ``RUNTIME``: the fields that change no output of the step that reads them (a device, threads, a chunk
    size): a workflow rule's params leave them out, so changing one reruns nothing that exists."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)
    RUNTIME: ClassVar[frozenset[str]] = frozenset()
    ADDED: ClassVar[tuple[str, ...]] = ()
    """Options added after campaigns existed: see :meth:`unset_options`."""

    def unset_options(self) -> set[str]:
        """The ``ADDED`` options while at their defaults: left out of the rule params (and the checkpoint
        fingerprint), so that a campaign made before they existed reruns nothing."""
        return {k for k in self.ADDED if getattr(self, k) == type(self).model_fields[k].default}


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
    species: list[str] = Field(
        default_factory=list, description="elements the model knows besides those of its training set, as symbols "
        "(a heterogeneous set whose rare elements a first training set may lack: QM9 [H, C, N, O, F])")
    dtype: Literal["float32", "float64"] = Field(
        "float32", description="per-atom network dtype; totals and shifts are always float64"
    )


class TrainingSettings(Settings):
    """Training on the eq.-4 loss (DESIGN §5): AMSGrad, a learning-rate schedule over an epoch budget,
    early stopping on the validation loss. Budgets are epochs, never minutes: ``max_minutes`` is a
    safety limit that a campaign reports when it binds (then runs are no longer comparable)."""

    ADDED: ClassVar[tuple[str, ...]] = ("energy_loss", "weight_stress", "warm_shrink", "warm_perturb")

    RUNTIME: ClassVar[frozenset[str]] = frozenset({"device", "threads"})

    epochs: int = Field(1000, ge=1, description="epoch budget of a training from scratch")
    batch_size: int = Field(32, ge=1)
    learning_rate: float = Field(1e-2, gt=0, description="peak learning rate (the paper: 1e-3, constant)")
    schedule: Literal["cosine", "constant", "plateau"] = Field(
        "cosine", description="cosine: from learning_rate down to final_learning_rate over the epochs (the default: "
        "1.6× lower test force MAE than the paper's constant 1e-3 at 200 epochs on 1,000 ethanol structures, "
        "benchmarks/bench_training.py); constant: the paper's; plateau: multiplied by plateau_factor after "
        "plateau_patience epochs without validation improvement, down to final_learning_rate")
    final_learning_rate: float = Field(1e-5, gt=0, description="cosine: the last epoch's rate; plateau: the floor")
    plateau_patience: int = Field(10, ge=1, description="plateau: epochs without improvement before a decay")
    plateau_factor: float = Field(0.5, gt=0, lt=1, description="plateau: the decay factor")
    warm_epochs: int | None = Field(
        None, ge=1, description="epoch budget when warm-started from the previous model (default: epochs // 4)")
    warm_learning_rate: float | None = Field(
        None, gt=0, description="peak learning rate when warm-started (default: learning_rate / 10)")
    warm_shrink: float | None = Field(
        None, gt=0, le=1, description="warm start: shrink and perturb (Ash & Adams, NeurIPS 2020) every weight of "
        "the MLP and output layer before training, θ ← λ θ + s θ₀ (λ this, s warm_perturb, θ₀ a fresh "
        "initialisation); the descriptor, σ_Z and μ_Z are kept (null: off)")
    warm_perturb: float = Field(0.1, ge=0, description="warm start: s, the share of a fresh initialisation added "
                                "to the shrunk weights (with warm_shrink)")
    weight_energy: float = Field(1.0, ge=0, description="w_E of eq. 4")
    weight_forces: float = Field(100.0, ge=0, description="w_F of eq. 4 (Å²)")
    energy_loss: Literal["total", "per_atom"] = Field(
        "total", description="total: eq. 4's w_E ΔE² (the paper; molecules of similar size); per_atom: w_E (ΔE/N)², "
        "for sets whose sizes differ by orders of magnitude (W–Be: 1–257 atoms), where eq. 4 is dominated by the "
        "largest cells (benchmarks/wbe_learnability.py)")
    weight_stress: float = Field(
        0.0, ge=0, description="w_S: the stress term w_S/9 Σ_ab (V Δσ_ab / N)², the virial error per atom (eV), for "
        "cells with stress labels (0: stress not trained; 0.1 GPa in a cell of 20 Å³/atom is 12 meV)")
    patience: int = Field(100, ge=1, description="epochs without validation improvement before stopping")
    seed: int = 0
    device: str = Field("auto", description="auto | cpu | cuda | cuda:N")
    threads: int | None = Field(None, ge=1, description="torch CPU threads (default: torch's)")
    max_minutes: float | None = Field(None, gt=0, description="wall-clock safety limit; best weights kept; "
                                      "reported loudly (metrics.json training_stopped = time, the summary's warning)")
    compile: bool = Field(False, description="torch.compile the model")

    @model_validator(mode="after")
    def _check(self) -> "TrainingSettings":
        if self.weight_energy == 0 and self.weight_forces == 0:
            raise ValueError("training.weight_energy and training.weight_forces are both 0")
        if self.final_learning_rate > self.learning_rate:
            raise ValueError(f"training.final_learning_rate ({self.final_learning_rate}) is above "
                             f"training.learning_rate ({self.learning_rate})")
        return self

    @property
    def per_atom_energy(self) -> bool:
        return self.energy_loss == "per_atom"

    @property
    def loss_weights(self) -> tuple[float, float, bool, float]:
        """(w_E, w_F, per-atom energy term, w_S): the arguments of the loss after the model and batch."""
        return self.weight_energy, self.weight_forces, self.per_atom_energy, self.weight_stress

    def budget(self, warm: bool) -> tuple[int, float]:
        """(epochs, peak learning rate) of a training from scratch, or warm-started from a model."""
        if not warm:
            return self.epochs, self.learning_rate
        epochs = self.warm_epochs if self.warm_epochs is not None else max(1, self.epochs // 4)
        peak = self.warm_learning_rate if self.warm_learning_rate is not None else self.learning_rate / 10
        return epochs, max(peak, self.final_learning_rate)


class SelectSettings(Settings):
    """How a batch is picked from a scored pool (oedal.oed.batch; the maths in oedal.oed.selection)."""

    method: Literal["top", "greedy", "random", "qbc"] = Field(
        "greedy", description="top: the m highest scores (the paper); greedy: batch OED with Woodbury updates; "
        "random: the baseline; qbc: the m largest committee spreads")
    n: int | None = Field(None, ge=1, description="fixed number to select")
    fraction: float | None = Field(0.1, gt=0, description="m = fraction · N_train (paper: 0.1)")
    min_informativeness: float | None = Field(
        None, gt=0, description="greedy: stop the batch early (fewer than m) once the best remaining score, given "
        "the picks so far, is below this × σ_th (1: the paper's threshold of an informative structure)")
    seed: int = 0

    @model_validator(mode="after")
    def _check(self) -> "SelectSettings":
        if self.n is not None and self.fraction is not None and "n" in self.model_fields_set and "fraction" in self.model_fields_set:
            raise ValueError("select: give either n or fraction, not both")
        if self.n is None and self.fraction is None:
            raise ValueError("select: give n or fraction")
        return self


def load_settings(cls: Any, source: str | Path | dict | None, **overrides) -> Any:
    """Build settings of type ``cls`` (a model, or a union discriminated by ``kind``) from a JSON
    string, a JSON file, or a dict, then apply non-None overrides.

    Raises ``ValueError`` naming the offending key.
    """
    data = settings_data(source)
    data.update({k: v for k, v in overrides.items() if v is not None})
    try:
        return TypeAdapter(cls).validate_python(data)
    except ValidationError as err:
        raise ValueError(format_validation_error(err, settings_name(cls))) from None


def settings_data(source: str | Path | dict | None) -> dict:
    """The raw settings of a JSON string, a JSON file or a dict (a copy); ``{}`` for None."""
    if source is None:
        return {}
    if isinstance(source, dict):
        return dict(source)
    text = str(source)
    path = Path(text)
    if not text.lstrip().startswith("{") and path.exists():
        text = path.read_text()
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise ValueError(f"settings are not valid JSON: {err}") from None
    if not isinstance(data, dict):
        raise ValueError(f"settings must be a JSON object, got {type(data).__name__}")
    return data


def settings_name(cls: Any) -> str:
    """A readable name of a settings type (a model class, or the members of a union)."""
    if isinstance(cls, type):
        return cls.__name__
    members = [m for m in typing.get_args(typing.get_args(cls)[0] if typing.get_origin(cls) is typing.Annotated else cls)
               if isinstance(m, type)]
    return " | ".join(m.__name__ for m in members) or str(cls)


def choices(model: type[Settings], field: str) -> list[str]:
    """The values a ``Literal`` field of ``model`` admits (for CLI ``choices=``): one source of truth."""
    annotation = model.model_fields[field].annotation
    args = typing.get_args(annotation)
    values = [v for a in args for v in (typing.get_args(a) if typing.get_origin(a) is Literal else [a])]
    if typing.get_origin(annotation) is Literal:
        values = list(args)
    return [v for v in values if isinstance(v, str)]


def describe(model: type[Settings], field: str) -> str:
    """The ``description`` of a field (for CLI ``help=``)."""
    return model.model_fields[field].description or ""


def format_validation_error(err: ValidationError, where: str) -> str:
    """One line per problem, each naming the dotted key (a union's discriminator too: ``oracle.kind``)."""
    lines = [f"invalid {where}:"]
    for e in err.errors():
        loc = [str(p) for p in e["loc"]]
        if e["type"] in ("union_tag_invalid", "union_tag_not_found"):
            loc.append(str(e.get("ctx", {}).get("discriminator", "kind")).strip("'"))
        lines.append(f"  {'.'.join(loc) or '(root)'}: {e['msg']}")
    return "\n".join(lines)
