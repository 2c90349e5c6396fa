"""The campaign: one config file of the workflow (config/*.yaml), DESIGN §7.

One typed model per section; unknown keys are rejected and cross-field rules checked with messages
that name the key. workflow/schemas/config.schema.json is generated from :class:`CampaignSettings`
(``oedal schema``) and a test keeps them equal. The ``score`` section is derived from the registered
scores (oedal.oed.scorers) and the ``oracle`` section is the union of the registered oracles
(oedal.oracles.registry), so a new score or oracle needs no edit here.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal, NamedTuple

from pydantic import Field, create_model, model_validator

from oedal.campaign.explore.checks import geometry_limits, limit_fields
from oedal.campaign.tree import transfer_name
from oedal.oed.scorers import SCORERS
from oedal.oracles.registry import OracleSettings
from oedal.oracles.replay import ReplaySettings
from oedal.oracles.xtb import XTBSettings
from oedal.settings import ModelSettings, SelectSettings, Settings, TrainingSettings


class Strategy(NamedTuple):
    score: str | None  # score kind (oedal.oed.scorers), None for random
    method: str  # SelectSettings.method


STRATEGIES: dict[str, Strategy] = {
    **{name: Strategy(kind, method) for kind, cls in SCORERS.items() for name, method in cls.strategies.items()},
    "random": Strategy(None, "random"),
}
"""Strategy names (``qs1-greedy``, ``qs2-top``, ..., ``qbc``, ``random``): a score with a selection method."""

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"

MAX_TEMPERATURE = 20_000.0  # K: hotter, every bond breaks within a few steps; no MD explores chemistry there
MAX_TIMESTEP = 10.0  # fs: longer, atoms move further per step than any integrator of molecules or solids holds
Temperature = Annotated[float, Field(gt=0, le=MAX_TEMPERATURE, description="K")]
Timestep = Annotated[float, Field(gt=0, le=MAX_TIMESTEP, description="fs")]

_PER_STRATEGY = {"kind", "projections", "device"}  # set per run by the workflow, not in a config


def _score_fields() -> tuple[dict[str, Any], dict[str, set[str]]]:
    """Every field of every registered score's settings (but those set per run), and the kinds using each."""
    fields: dict[str, Any] = {}
    kinds: dict[str, set[str]] = {}
    for kind, scorer in SCORERS.items():
        for name, info in scorer.Settings.model_fields.items():
            if name not in _PER_STRATEGY:
                fields.setdefault(name, (info.annotation, info))
                kinds.setdefault(name, set()).add(kind)
    return fields, kinds


_SCORE_FIELDS, SCORE_KEY_KINDS = _score_fields()
CampaignScoreSettings = create_model(
    "CampaignScoreSettings", __base__=Settings, __doc__="The OED score settings of a campaign: every key of every "
    "registered score (oedal.oed.scorers); each strategy's score takes the keys it knows.", **_SCORE_FIELDS)


class SamplingSettings(Settings):
    """Langevin MD that generates a candidate pool (and optionally its labels); default: ethanol,
    GFN2-xTB, 1000 K, 0.5 fs, a frame every 10 steps (the GM-NN ethanol protocol)."""

    molecule: str = Field("ethanol", description="'ethanol' or any ASE-readable file")
    temperature: Temperature = Field(1000.0, description="K")
    n_frames: int = Field(5000, ge=1)
    interval: int = Field(10, ge=1, description="MD steps between frames")
    timestep: Timestep = Field(0.5, description="fs")
    friction: float = Field(0.01, ge=0, description="Langevin friction (1/fs)")
    equilibration_steps: int = Field(1000, ge=0, description="steps before the first frame")
    seed: int = 0
    potential: OracleSettings = Field(  # type: ignore[valid-type]
        default_factory=XTBSettings, description="the MD potential (any oracle but replay)"
    )

    @model_validator(mode="after")
    def _check(self) -> "SamplingSettings":
        if self.potential.kind == "replay":
            raise ValueError("sampling.potential.kind cannot be 'replay'")
        return self


class _Exploration(Settings):
    """On-the-fly exploration (oedal.campaign.explore): Langevin MD walkers with the current model, every
    ``check_every`` steps judged by its calibrated uncertainty: accurate below ``low``, a candidate for
    labeling between, stopped above ``high`` (or when a sanity check fails). The limits of the sanity
    checks are keys of this section too, each declared by its check (oedal.campaign.explore.checks)."""

    INITIAL_ONLY: ClassVar[frozenset[str]] = frozenset({"initial", "initial_temperature", "initial_interval", "rattle",
                                                        "strain"})
    """Read by the initial structures alone (rule initial_structures), never by a walker."""
    GATHER: ClassVar[frozenset[str]] = frozenset({"shards", "converged"})
    """How many walker jobs there are and when exploration has converged: the gather's, not a walker's."""
    BASELINE: ClassVar[frozenset[str]] = frozenset({"random_pool", "pool_frames"})
    """What the `random` strategy draws from (its MD pool, rule md_pool): never read by a walker."""
    ADDED: ClassVar[tuple[str, ...]] = ("strain", "bias_strength", "bias_width", "random_pool", "pool_frames")
    """Options added after campaigns existed: left out of the rule params while unset (Settings.unset_options)."""

    @classmethod
    def initial_fields(cls) -> frozenset[str]:
        """What the initial structures depend on: the starts, their temperatures, INITIAL_ONLY and the limits
        of the geometry checks (a rattled copy that fails one is drawn again)."""
        return cls.INITIAL_ONLY | {"starts", "temperatures"} | set(geometry_limits())

    starts: list[str] = Field(default_factory=lambda: ["ethanol"], min_length=1,
                              description="start geometries: molecule names (ase.build) or ASE-readable files")
    temperatures: list[Temperature] = Field(default_factory=lambda: [300.0, 600.0, 1000.0], min_length=1,
                                      description="thermostat temperatures (K); every start runs at each")
    walkers_per_start: int = Field(2, ge=1, description="walkers per start and temperature (own random streams)")
    steps: int = Field(1000, ge=1, description="MD steps per walker and iteration")
    timestep: Timestep = Field(0.5, description="fs")
    friction: float = Field(0.01, ge=0, description="Langevin friction (1/fs)")
    check_every: int = Field(10, ge=1, description="MD steps between checks of the uncertainty")
    pressure: float | list[float] | None = Field(
        None, description="GPa: walkers of periodic starts run NPT (ASE's LangevinBAOAB, Langevin–Hoover barostat), "
        "molecules stay NVT; a list: every start, temperature and walker at each pressure; None: every walker NVT")
    hydrostatic: bool = Field(True, description="NPT: scale the cell, keep its shape (false: fully flexible cell)")
    measure: Literal["informativeness", "force_error"] = Field(
        "informativeness", description="what low/high bound: the informativeness I = score/σ_th (the paper's "
        "data-derived threshold: I > 1 is informative) or the expected force error (eV/Å, the calibrated map)")
    low: float = Field(1.0, gt=0, description="below: accurate (I, or eV/Å)")
    high: float = Field(20.0, gt=0, description="above: the walker stops (I, or eV/Å)")
    bias_strength: float = Field(0.0, ge=0, description="eV: the depth A of the uncertainty bias E_bias = −A·(1 − "
                                 "exp(−u/B)), u the calibrated force error, that pulls walkers toward what the model "
                                 "does not know (DESIGN §13); 0: unbiased walkers. Checks and bands judge the model "
                                 "alone")
    bias_width: float | None = Field(None, gt=0, description="eV/Å: the force error B over which the bias acts "
                                     "(E_bias ≈ −A·u/B where u ≪ B); null: the model's own calibrated force error "
                                     "at the lower band (I = low), re-read from every iteration's model")
    shards: int = Field(2, ge=1, description="walker jobs per iteration")
    converged: float = Field(0.9, gt=0, le=1, description="stop when this share of walkers runs its full length "
                             "without a trigger (no candidate, not stopped)")
    initial: Literal["rattle", "md", "mixed"] = Field(
        "rattle", description="the initial training and validation structures, labeled by the oracle: 'rattle' "
        "(copies of the starts, displacements graded up to `rattle`, cells strained up to `strain`), 'md' (a short "
        "Langevin MD of each start with sampling.potential, a cheap method such as xTB or CHGNet, at "
        "initial_temperature: a frame every initial_interval steps from the first step on) or 'mixed' (half "
        "each, the rattled copies first)")
    initial_temperature: Temperature | None = Field(None, description="K of the initial MD (default: the highest "
                                              "of temperatures)")
    initial_interval: int = Field(10, ge=1, description="MD steps between the initial MD's frames")
    rattle: float = Field(0.15, gt=0, description="largest standard deviation of the rattle displacements (Å); "
                          "copy k of n is rattled by rattle·(k+1)/n; a copy with a short contact is drawn again")
    strain: float = Field(0.0, ge=0, lt=0.5, description="cells (starts periodic in 3-D): the largest strain of the "
                          "rattled copies (copy k of n: a random symmetric strain of norm strain·(k+1)/n), so that "
                          "the stress is learned from the start; molecules are never strained")
    restart_after: int = Field(2, ge=0, description="a walker that stopped at its first check this many "
                               "iterations in a row starts again from its start geometry with fresh velocities "
                               "(0: never; it resumes from its last accepted frame)")
    random_pool: Literal["walkers", "md"] = Field(
        "walkers", description="what the `random` strategy of an exploration campaign picks from: 'walkers' (at "
        "random among its own walkers' candidates) or 'md' (at random from frames of a Langevin MD of every start at "
        "every temperature with sampling.potential, pool_frames each, sampling.interval steps apart after "
        "sampling.equilibration_steps; no walkers): the baseline exploration must beat at equal labels, in the "
        "verdict (DESIGN §13)")
    pool_frames: int = Field(150, ge=1, description="random_pool md: frames of the MD per start and temperature")
    ramp: bool = Field(True, description="heat up across iterations (DP-GEN's schedule): iteration i runs the "
                       "walkers of the i+1 lowest temperatures, the others wait; no convergence before all run")

    def pressures(self) -> list[float | None]:
        """Every walker pressure (GPa), [None] when the walkers run NVT."""
        return list(self.pressure) if isinstance(self.pressure, list) else [self.pressure]

    @model_validator(mode="after")
    def _check(self) -> "ExploreSettings":
        if isinstance(self.pressure, list) and not self.pressure:
            raise ValueError("explore.pressure: an empty list (give a number, a list of numbers, or null)")
        if self.low >= self.high:
            raise ValueError(f"explore.low ({self.low}) must be below explore.high ({self.high})")
        return self


ExploreSettings = create_model(
    "ExploreSettings", __base__=_Exploration, __doc__=_Exploration.__doc__,
    **{key: (float, field) for key, field in limit_fields().items()})
"""The ``explore`` section: :class:`_Exploration` and the limit keys of every sanity check."""


class DatasetSettings(Settings):
    """Where the campaign's structures come from (written once to ``{results_dir}/{name}/data/source.h5``)."""

    source: str = Field(
        "sample",
        description="'sample' (Langevin MD with the `sampling` settings, labels included), 'explore' (walkers "
        "with the model from the `explore` starts; the test set from the `sampling` MD), "
        "a named data set (ethanol_1000K, ethanol_500K, qm9, wbe) or an ASE-readable/npz file",
    )
    data_dir: str | None = Field(None, description="directory of named data sets (else OEDAL_DATA_DIR)")
    format: str = Field("auto", description="file format for a file source (auto: by extension)")
    transfer: list[str] = Field(
        default_factory=list, description="extra test sets (named data sets or labeled files, e.g. ethanol_500K): every "
        "model is evaluated on each too (metrics_transfer_<name>.json, columns transfer_<name>_* of the summary), "
        "the transfer test of the paper's uniform-accuracy claim")
    test: str | None = Field(
        None, description="exploration campaigns: a labeled file or named data set as the test set instead of the "
        "`sampling` MD, whose potential labels it (right when it is the oracle, as xTB for ethanol; a crystal whose "
        "MD runs on CHGNet needs a test set labeled by the periodic oracle)")
    transfer_every: int = Field(1, ge=1, description="keep every k-th structure of each transfer test set "
                                "(5: 1,000 of a 5,000-frame trajectory, spread over all of it)")

    def imported(self) -> str | None:
        """What the campaign's source rule imports (a named set or a file), or None when it runs the sampling MD
        (source sample, or explore without a test file)."""
        if self.source == "explore":
            return self.test
        return None if self.source == "sample" else self.source

    def transfer_sets(self) -> dict[str, str]:
        """Label (file-name safe) → source of every transfer test set."""
        return {transfer_name(s): s for s in self.transfer}


class SplitSettings(Settings):
    """Iteration 0: initial training set, validation set, pool and test set, disjoint (DESIGN §1)."""

    MERGE: ClassVar[frozenset[str]] = frozenset({"valid_redraw", "valid_share"})
    """How later iterations treat the validation set: read by the merge, not the split."""

    n_train: int = Field(100, ge=1, description="initial (random) training structures")
    n_valid: int = Field(200, ge=1, description="validation structures (early stopping)")
    n_test: int = Field(1000, ge=1, description="held-out test structures (labels from the source)")
    n_pool: int | None = Field(None, ge=1, description="unlabeled candidates (default: every structure left)")
    test_per_class: int | None = Field(
        None, ge=1, description="a test set stratified by class (DESIGN §11): up to this many structures of every "
        "class of the data set, n_test ignored (default: n_test structures drawn at random)")
    valid_redraw: bool | None = Field(
        None,
        description="redraw the validation set from the pool every iteration (the paper's protocol); "
        "the new validation structures are labeled by the oracle and counted. "
        "Default: true for the replay oracle, false otherwise (keep the validation set fixed)",
    )
    valid_share: float | None = Field(
        None, ge=0, lt=1, description="share of every labeled batch that joins the validation set instead of the "
        "training set, so that early stopping sees the newly explored region (default: 0.2 for exploration "
        "campaigns, whose initial validation set holds only rattled starts; 0 otherwise)")


class StopSettings(Settings):
    """When the loop ends. ``iterations`` and ``max_train`` fix the unrolled chain; ``target`` and
    ``informative`` stop early: later iterations then select nothing and keep the previous model."""

    PLAN: ClassVar[frozenset[str]] = frozenset({"iterations", "max_train"})
    """What fixes the unrolled chain (campaign.plan), not a stop decision."""

    iterations: int = Field(3, ge=0, description="selection rounds (models are trained for iterations 0..iterations)")
    max_train: int | None = Field(None, ge=1, description="training-set budget: no iteration selects beyond it")
    target_metric: str = Field("forces_mae_kcal/mol/A", description="metrics.json key compared with target (test set)")
    target: float | None = Field(None, gt=0, description="stop once target_metric ≤ target (test set)")
    informative: bool = Field(True, description="stop when no candidate is informative any more (I ≤ 1, sec. 4)")


class LabelingSettings(Settings):
    """Scatter/gather of the oracle calls, and the label cache every labeling job reads first."""

    shards: int = Field(2, ge=1, description="labeling jobs per iteration (an empty shard is fine)")
    retries: int = Field(1, ge=0, description="Snakemake retries of a failed labeling job")
    cache: str | None = Field(
        None,
        description="label cache (SQLite) keyed by structure content and level of theory, shared by every "
        "iteration, strategy, seed and campaign that names it; default {results_dir}/labels.sqlite",
    )
    cache_journal: Literal["wal", "delete"] = Field(
        "wal",
        description="wal: every labeling job on one machine; delete: jobs on several nodes sharing a network "
        "filesystem with working POSIX locks (NFSv4, Lustre with flock)",
    )


class ResourceSettings(Settings):
    """What the rules ask the scheduler for; partitions and accounts live in profiles/."""

    use_gpu: bool = Field(
        False,
        description="training, scoring, evaluation and the exploration walkers request one GPU (resources gpu=1) and "
        "run with --device cuda "
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
        description="a score with a selection method: qs1|qs2|qs3 with -greedy or -top, qbc, or random",
    )
    seeds: list[int] = Field(default_factory=lambda: [0], min_length=1)
    committee: int = Field(4, ge=2, description="qbc: models per iteration (model.pt, model_k1.pt, ...)")
    warm_start: bool = Field(False, description="start each iteration's training from the previous model")
    final_from_scratch: bool = Field(
        False, description="with warm_start: the planned last iteration trains from scratch, so the campaign's "
        "final model has a from-scratch training's accuracy (a chain of warm rounds loses 1.1–1.6× in force MAE, "
        "benchmarks/bench_warm_chain.py); the rounds before it stay warm and cheap. A campaign that stops early "
        "(stop.target, stop.informative) keeps its last warm model")
    training_seeds: int = Field(
        1, ge=1, description="models trained per iteration on the same set, each from its own initialisation "
        "seed (model.pt, model_k1.pt, ...; for qbc the committee's first ones); each is tested, and the "
        "comparison uses their geometric mean (summary columns seeds_*), so training noise does not pass for "
        "a selection effect. Costs K trainings per iteration; the selection still uses model.pt")
    dataset: DatasetSettings = Field(default_factory=DatasetSettings)
    sampling: SamplingSettings = Field(default_factory=SamplingSettings)
    explore: ExploreSettings = Field(default_factory=ExploreSettings)
    split: SplitSettings = Field(default_factory=SplitSettings)
    model: ModelSettings = Field(default_factory=ModelSettings)
    training: TrainingSettings = Field(default_factory=TrainingSettings)
    score: CampaignScoreSettings = Field(default_factory=CampaignScoreSettings)  # type: ignore[valid-type]
    select: SelectSettings = Field(default_factory=SelectSettings)
    oracle: OracleSettings = Field(default_factory=ReplaySettings)  # type: ignore[valid-type]
    reference_potentials: list[OracleSettings] = Field(  # type: ignore[valid-type]
        default_factory=list, description="potentials every trained model should beat, e.g. [{kind: chgnet}]: each "
        "is evaluated on every seed's test set (`oedal baseline`, energies aligned per element), and the verdict "
        "and the report set the final models' errors beside its")
    labeling: LabelingSettings = Field(default_factory=LabelingSettings)
    stop: StopSettings = Field(default_factory=StopSettings)
    resources: ResourceSettings = Field(default_factory=ResourceSettings)

    @model_validator(mode="after")
    def _check(self) -> "CampaignSettings":
        for i, name in enumerate(self.strategies):
            if name not in STRATEGIES:
                raise ValueError(f"strategies[{i}]: unknown strategy {name!r} (known: {', '.join(STRATEGIES)})")
        if len(set(self.strategies)) != len(self.strategies):
            raise ValueError("strategies has duplicates")
        if len(set(self.seeds)) != len(self.seeds):
            raise ValueError("seeds has duplicates")
        kinds = {STRATEGIES[s].score for s in self.strategies}
        for key in sorted(self.score.model_fields_set):
            if not SCORE_KEY_KINDS[key] & kinds:
                raise ValueError(f"score.{key} applies to {'/'.join(sorted(SCORE_KEY_KINDS[key]))}, "
                                 "which no entry of `strategies` uses; remove it")
        if self.dataset.source == "qm9" and {"qs2", "qs3"} & kinds:
            raise ValueError("strategies: qs2/qs3 score the forces and qm9 has energies only (DESIGN §11); use qs1")
        if "method" in self.select.model_fields_set:
            raise ValueError("select.method is set per entry of `strategies`; remove it")
        if "device" in self.training.model_fields_set:
            raise ValueError("training.device: the workflow sets the device from resources.use_gpu; remove it")
        if "seed" in self.training.model_fields_set or "seed" in self.select.model_fields_set:
            raise ValueError("training.seed / select.seed are derived from `seeds` per iteration; remove them")
        if self.final_from_scratch and not self.warm_start:
            raise ValueError("final_from_scratch: only a warm-started campaign (warm_start: true) has one; remove it")
        if self.stop.max_train is not None and self.stop.max_train < self.split.n_train:
            raise ValueError(f"stop.max_train ({self.stop.max_train}) is below split.n_train ({self.split.n_train})")
        from oedal.oracles.cache.entries import level_of  # what labels depend on: settings less threads, attempts

        if self.dataset.source == "sample" and self.oracle.kind != "replay" and level_of(self.oracle) != level_of(
                self.sampling.potential):
            raise ValueError("sampling.potential: a pool campaign's initial training, validation and test sets carry "
                             "the sampling MD's labels, so its potential must be the oracle (or use oracle kind "
                             "replay); a cheap MD potential belongs to an exploration campaign (explore.initial: md)")
        kinds = [p.kind for p in self.reference_potentials]
        if len(set(kinds)) != len(kinds) or "replay" in kinds:
            raise ValueError(f"reference_potentials: one entry per kind, none of them replay (got {kinds})")
        if self.exploring:
            self._check_explore()
        elif self.dataset.test is not None:
            raise ValueError("dataset.test is the test set of an exploration campaign (dataset.source explore); "
                             "other campaigns draw theirs from the source (split.n_test); remove it")
        return self

    def _check_explore(self) -> None:
        if self.oracle.kind == "replay":
            raise ValueError("dataset.source explore: the walkers' frames are new; the oracle must compute "
                             "(xtb, pyscf, ase), not replay")
        if self.split.valid_redraw:
            raise ValueError("split.valid_redraw: an exploration campaign keeps its validation set (it grows by "
                             "split.valid_share of every labeled batch); remove it")
        if self.explore.random_pool == "md" and "random" not in self.strategies:
            raise ValueError("explore.random_pool md: the MD pool is what the `random` strategy picks from; add random "
                             "to strategies, or remove the key")

    @property
    def valid_share(self) -> float:
        """The effective ``split.valid_share``."""
        if self.split.valid_share is None:
            return 0.2 if self.exploring else 0.0
        return self.split.valid_share

    @property
    def exploring(self) -> bool:
        """dataset.source explore: the walkers make each iteration's pool (oedal.campaign.explore)."""
        return self.dataset.source == "explore"

    def picks_from_md_pool(self, strategy: str) -> bool:
        """``strategy``'s runs pick from the campaign's MD pool instead of making or keeping a pool of their own:
        `random` in an exploration campaign with explore.random_pool md."""
        return self.exploring and strategy == "random" and self.explore.random_pool == "md"

    def walks(self, strategy: str) -> bool:
        """Whether ``strategy``'s runs explore with walkers: every strategy of an exploration campaign but the
        one that picks from the MD pool."""
        return self.exploring and not self.picks_from_md_pool(strategy)

    @property
    def md_pool(self) -> bool:
        """The campaign has a run on an MD pool (explore.random_pool md)."""
        return any(self.picks_from_md_pool(s) for s in self.strategies)

    def score_settings(self, strategy: str) -> dict:
        """The settings of ``strategy``'s score (as oedal score reads them): the campaign's score keys
        that this kind knows; the projections that greedy selection reads are stored for -greedy only."""
        kind, method = STRATEGIES[strategy]
        if kind is None:
            raise ValueError(f"strategy {strategy}: random selection scores nothing")
        known = SCORERS[kind].Settings.model_fields
        data = {k: v for k, v in self.score.model_dump(mode="json").items() if k in known}
        if "projections" in known:
            data["projections"] = method == "greedy"
        return {"kind": kind, **data}

    @property
    def redraw_valid(self) -> bool:
        """The effective ``split.valid_redraw`` (default: only for the replay oracle)."""
        if self.split.valid_redraw is None:
            return self.oracle.kind == "replay" and not self.exploring
        return self.split.valid_redraw
