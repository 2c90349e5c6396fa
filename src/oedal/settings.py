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
    projections: bool = Field(True, description="store the projected sensitivities u_energy / u_forces that greedy "
                              "selection reads (QS2: 3·N_atoms·d float32 per structure, ≈3.6 GB for all of QM9); "
                              "the workflow sets it from the strategy: on for -greedy only")
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


class OracleSettings(Settings):
    """The oracle that labels selected structures (energies eV, forces eV/Å); DESIGN §7.

    ``replay`` looks labels up by id in ``source`` (a labeled store or a named data set);
    ``xtb`` is GFN2-xTB through tblite; ``pyscf`` is Kohn–Sham DFT (default RKS PBE-D3(BJ)/6-31G*,
    the level of the GM-NN ethanol data); ``emt`` is ASE's EMT (tests only); ``ase`` calls
    ``calculator`` = "module:factory", a function returning any ASE calculator.
    """

    kind: Literal["replay", "xtb", "emt", "pyscf", "ase"] = "replay"
    source: str | None = Field(
        None, description="replay: labeled store (.h5) or named data set; the campaign fills in its data set when unset"
    )
    data_dir: str | None = Field(None, description="replay: directory of named data sets (else OEDAL_DATA_DIR)")
    # xtb (tblite)
    method: Literal["GFN2-xTB", "GFN1-xTB", "IPEA1-xTB"] = "GFN2-xTB"
    accuracy: float = Field(1.0, gt=0)
    electronic_temperature: float = Field(300.0, gt=0, description="K")
    max_iterations: int = Field(250, ge=1, description="SCF iterations (xtb and pyscf)")
    charge: int = 0
    multiplicity: int = Field(1, ge=1, description="2S+1")
    # pyscf
    xc: str = "pbe"
    basis: str = "6-31g*"
    dispersion: Literal["d3bj", "d3zero", "d4"] | None = "d3bj"
    conv_tol: float = Field(1e-10, gt=0, description="SCF energy convergence (Hartree)")
    density_fit: bool = False
    grid_level: int = Field(3, ge=0, le=9)
    cart: bool = Field(False, description="Cartesian d functions (the GM-NN data used spherical)")
    # ase
    calculator: str | None = Field(None, description="ase: 'module:factory' returning an ASE calculator")
    calculator_kwargs: dict = Field(default_factory=dict, description="ase: keyword arguments of the factory")
    # every kind
    threads: int = Field(1, ge=1, description="threads per labeling process")
    max_attempts: int = Field(1, ge=1, description="tries per structure before it is recorded as failed")
    checkpoint_seconds: float = Field(2.0, gt=0, description="checkpoint progress at least this often")
    checkpoint_every: int | None = Field(None, ge=1, description="... and every this many structures, if set")

    @model_validator(mode="after")
    def _check(self) -> "OracleSettings":
        if self.kind == "ase" and (not self.calculator or ":" not in self.calculator):
            raise ValueError("oracle.calculator must be 'module:factory' for kind 'ase'")
        return self


class SamplingSettings(Settings):
    """Langevin MD that generates a candidate pool (and optionally its labels); default: ethanol,
    GFN2-xTB, 1000 K, 0.5 fs, a frame every 10 steps (the GM-NN ethanol protocol)."""

    molecule: str = Field("ethanol", description="'ethanol' or any ASE-readable file")
    temperature: float = Field(1000.0, gt=0, description="K")
    n_frames: int = Field(5000, ge=1)
    interval: int = Field(10, ge=1, description="MD steps between frames")
    timestep: float = Field(0.5, gt=0, description="fs")
    friction: float = Field(0.01, ge=0, description="Langevin friction (1/fs)")
    equilibration_steps: int = Field(1000, ge=0, description="steps before the first frame")
    seed: int = 0
    potential: OracleSettings = Field(
        default_factory=lambda: OracleSettings(kind="xtb"), description="the MD potential (any oracle but replay)"
    )

    @model_validator(mode="after")
    def _check(self) -> "SamplingSettings":
        if self.potential.kind == "replay":
            raise ValueError("sampling.potential.kind cannot be 'replay'")
        return self


# ---------------------------------------------------------------------------------------------
# The campaign: one config file of the workflow (config/*.yaml), DESIGN §7.
# workflow/schemas/config.schema.json is generated from CampaignSettings (`oedal schema`).
# ---------------------------------------------------------------------------------------------

STRATEGY_PATTERN = r"^(?:(?:qs1|qs2|qs3)-(?:greedy|top)|random|qbc)$"
"""Strategy names: an OED score with a selection method (``qs1-greedy``, ``qs2-top`` ...), ``random`` or ``qbc``."""

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"


class DatasetSettings(Settings):
    """Where the campaign's structures come from (written once to ``{results_dir}/{name}/data/source.h5``)."""

    source: str = Field(
        "sample",
        description="'sample' (Langevin MD with the `sampling` settings, labels included), "
        "a named data set (ethanol_1000K, ethanol_500K, qm9, wbe) or an ASE-readable/npz file",
    )
    data_dir: str | None = Field(None, description="directory of named data sets (else OEDAL_DATA_DIR)")
    format: str = Field("auto", description="file format for a file source (auto: by extension)")


class SplitSettings(Settings):
    """Iteration 0: initial training set, validation set, pool and test set, disjoint (DESIGN §1)."""

    n_train: int = Field(100, ge=1, description="initial (random) training structures")
    n_valid: int = Field(200, ge=1, description="validation structures (early stopping)")
    n_test: int = Field(1000, ge=1, description="held-out test structures (labels from the source)")
    n_pool: int | None = Field(None, ge=1, description="unlabeled candidates (default: every structure left)")
    valid_redraw: bool | None = Field(
        None,
        description="redraw the validation set from the pool every iteration (the paper's protocol); "
        "the new validation structures are labeled by the oracle and counted. "
        "Default: true for the replay oracle, false otherwise (keep the validation set fixed)",
    )


class StopSettings(Settings):
    """When the loop ends. ``iterations`` and ``max_train`` fix the unrolled chain; ``target`` and
    ``informative`` stop early: later iterations then select nothing and keep the previous model."""

    iterations: int = Field(3, ge=0, description="selection rounds (models are trained for iterations 0..iterations)")
    max_train: int | None = Field(None, ge=1, description="training-set budget: no iteration selects beyond it")
    target_metric: str = Field("forces_mae_kcal/mol/A", description="metrics.json key compared with target (test set)")
    target: float | None = Field(None, gt=0, description="stop once target_metric ≤ target (test set)")
    informative: bool = Field(True, description="stop when no candidate is informative any more (I ≤ 1, sec. 4)")


class LabelingSettings(Settings):
    """Scatter/gather of the oracle calls."""

    shards: int = Field(2, ge=1, description="labeling jobs per iteration (an empty shard is fine)")
    retries: int = Field(1, ge=0, description="Snakemake retries of a failed labeling job")


class ResourceSettings(Settings):
    """What the rules ask the scheduler for; partitions and accounts live in profiles/."""

    use_gpu: bool = Field(
        False,
        description="training, scoring and evaluation request one GPU (resources gpu=1) and run with --device cuda "
        "(a job that finds none says so in its log and runs on the CPU); false: they run on the CPU. "
        "The workflow sets the device from this key alone (training.device and score.device are rejected)",
    )
    train_threads: int = Field(2, ge=1)
    train_mem_mb: int = Field(4000, ge=100)
    train_runtime: int = Field(60, ge=1, description="minutes")
    score_threads: int = Field(2, ge=1)
    score_mem_mb: int = Field(4000, ge=100)
    score_runtime: int = Field(30, ge=1, description="minutes")
    label_mem_mb: int = Field(2000, ge=100)
    label_runtime: int = Field(60, ge=1, description="minutes")


class CampaignSettings(Settings):
    """One campaign: a data set, its split, the model, training, OED, oracle and stopping settings,
    and the strategies × seeds to compare. Results go to ``{results_dir}/{name}/``."""

    name: str = Field("default", pattern=NAME_PATTERN, description="campaign name (a directory under results_dir)")
    results_dir: str = Field("results", description="where results go (relative to the working directory)")
    strategies: list[str] = Field(
        default_factory=lambda: ["qs1-greedy", "random"],
        min_length=1,
        description="qs1|qs2|qs3 with -greedy or -top, random, qbc",
    )
    seeds: list[int] = Field(default_factory=lambda: [0], min_length=1)
    committee: int = Field(4, ge=2, description="qbc: models per iteration (model.pt, model_k1.pt, ...)")
    warm_start: bool = Field(False, description="start each iteration's training from the previous model")
    dataset: DatasetSettings = Field(default_factory=DatasetSettings)
    sampling: SamplingSettings = Field(default_factory=SamplingSettings)
    split: SplitSettings = Field(default_factory=SplitSettings)
    model: ModelSettings = Field(default_factory=ModelSettings)
    training: TrainingSettings = Field(default_factory=TrainingSettings)
    score: ScoreSettings = Field(default_factory=ScoreSettings)
    select: SelectSettings = Field(default_factory=SelectSettings)
    oracle: OracleSettings = Field(default_factory=OracleSettings)
    labeling: LabelingSettings = Field(default_factory=LabelingSettings)
    stop: StopSettings = Field(default_factory=StopSettings)
    resources: ResourceSettings = Field(default_factory=ResourceSettings)

    @model_validator(mode="after")
    def _check(self) -> "CampaignSettings":
        import re

        for i, name in enumerate(self.strategies):
            if not re.match(STRATEGY_PATTERN, name):
                raise ValueError(
                    f"strategies[{i}]: unknown strategy {name!r} "
                    "(use qs1|qs2|qs3 with -greedy or -top, random, or qbc)"
                )
        if len(set(self.strategies)) != len(self.strategies):
            raise ValueError("strategies has duplicates")
        if len(set(self.seeds)) != len(self.seeds):
            raise ValueError("seeds has duplicates")
        if "strategy" in self.score.model_fields_set:
            raise ValueError("score.strategy is set per entry of `strategies`; remove it")
        if "method" in self.select.model_fields_set:
            raise ValueError("select.method is set per entry of `strategies`; remove it")
        if "seed" in self.training.model_fields_set or "seed" in self.select.model_fields_set:
            raise ValueError("training.seed / select.seed are derived from `seeds` per iteration; remove them")
        if self.stop.max_train is not None and self.stop.max_train < self.split.n_train:
            raise ValueError(f"stop.max_train ({self.stop.max_train}) is below split.n_train ({self.split.n_train})")
        return self

    @property
    def redraw_valid(self) -> bool:
        """The effective ``split.valid_redraw`` (default: only for the replay oracle)."""
        if self.split.valid_redraw is None:
            return self.oracle.kind == "replay"
        return self.split.valid_redraw
