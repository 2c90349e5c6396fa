"""The scores of a pool, one class each in a registry (DESIGN §6; paper sections 2.2–2.3, 3.3).

* QS1: eq. (14) on the energy sensitivities g = ∂E/∂w;
* QS2: eq. (14) per force component g_jk = ∂F_jk/∂w, reduced by eq. (21) (mean) or the per-atom maximum;
* QS3: QS1 + β·QS2, eq. (22);
* QbC: the committee's energy spread, eq. (24), and its force spread.

A new score is one :class:`Scorer` class (with its ``Settings``, a pydantic model whose ``kind`` is a
``Literal``) and one line in :data:`SCORERS`; the settings union :data:`ScoreSettings`, the CLI's
``--kind`` choices and the campaign's strategy names are derived from the registry. Nothing here
imports torch at import time (``oedal select`` and the Snakefile read the registry): the
sensitivities and predictions are imported where a scorer computes them.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Literal, Protocol, Sequence, Union

import numpy as np
from pydantic import Field

from oedal.data import keys
from oedal.errors import InputError
from oedal.oed import fisher
from oedal.oed.selection import Term
from oedal.settings import Settings

if TYPE_CHECKING:
    from oedal.data.structures import Structures
    from oedal.gmnn.model import GMNN

log = logging.getLogger(__name__)

Layout = dict[str, tuple[tuple[int, ...], Any]]
"""Datasets a scorer writes per pool: name → (shape, dtype); axis 0 runs over pool structures, or
over their force components (3·N_at per structure) for the names in :data:`ROW_DATASETS`."""
ROW_DATASETS = (keys.U_FORCES,)


class ScoreSettingsBase(Settings):
    """What every score shares: the threshold σ_th (section 3.3), the pool chunk, the device."""

    RUNTIME: ClassVar[frozenset[str]] = frozenset({"chunk_size", "device"})

    kind: str
    threshold: Literal["median", "mean"] = Field("median", description="σ_th over training scores (sec. 3.3)")
    chunk_size: int = Field(2048, ge=1, description="pool structures scored per chunk")
    device: str = Field("auto", description="auto | cpu | cuda | cuda:N")


class FisherSettings(ScoreSettingsBase):
    """Scores from the output-layer Fisher matrix (QS1, QS2, QS3)."""

    jitter: float = Field(1e-8, ge=0, description="relative diagonal jitter for a singular Fisher matrix")
    prior: Literal["jitter", "fitted"] = Field(
        "jitter", description="QS1: jitter (Ã + jitter·tr(Ã)/d where Ã is singular: the paper's, up to rounding); "
        "fitted: Ã + λI with the prior precision λ fitted on the validation set when the model was trained "
        "(oedal.oed.calibration; the model file must carry it), so that scores of a small training set mean something")
    projections: bool = Field(True, description="store the projected sensitivities u_energy / u_forces that greedy "
                              "selection reads (QS2: 3·N_atoms·d float32 per structure, ≈3.6 GB for all of QM9); "
                              "the workflow sets it from the strategy: on for -greedy only")


class QS1Settings(FisherSettings):
    kind: Literal["qs1"] = "qs1"


class QS2Settings(FisherSettings):
    kind: Literal["qs2"] = "qs2"
    reduction: Literal["mean", "max"] = Field("mean", description="QS2 over a structure: eq. 21 mean, or per-atom maximum")


class QS3Settings(QS2Settings):
    kind: Literal["qs3"] = "qs3"  # type: ignore[assignment]
    beta: float = Field(1.0, ge=0, description="QS3 = QS1 + beta·QS2 (eq. 22)")


class QbCSettings(ScoreSettingsBase):
    kind: Literal["qbc"] = "qbc"


class Scorer(Protocol):
    """Scores any structures against a training set; built once per pool."""

    kind: ClassVar[str]
    Settings: ClassVar[type[ScoreSettingsBase]]
    strategies: ClassVar[dict[str, str]]  # campaign strategy name → selection method (oedal.oed.batch)
    # optional (default False, True): scores with several models (model.pt, model_k1.pt, ...: campaign.committee);
    # writes I = score/σ_th, which the stop "no candidate informative" reads
    committee: ClassVar[bool]
    informativeness: ClassVar[bool]
    train_scores: np.ndarray  # (n_train,) the scores of the training structures (for σ_th)

    def __init__(self, models: Sequence[GMNN], train: Structures, settings: Any, *,
                 save_sensitivities: bool = False) -> None: ...

    def layout(self, n_pool: int, n_rows: int) -> Layout:
        """Datasets beyond score / informativeness / id, for ``n_pool`` structures with ``n_rows`` force components."""

    def constants(self, n_atoms: np.ndarray) -> dict[str, np.ndarray]:
        """Datasets written whole, once (training sensitivities, row counts of the pool)."""

    def attrs(self) -> dict[str, Any]:
        """File attributes a reader of the scores needs (beyond the common ones)."""

    def chunk(self, structures: Structures) -> dict[str, np.ndarray]:
        """``score`` (n,) and every dataset of :meth:`layout` for a chunk of pool structures."""

    @classmethod
    def greedy_terms(cls, scores: dict, path: str) -> list[Term]:
        """The terms of greedy batch OED (oedal.oed.selection) from a scores file's datasets."""


class FisherScorer:
    """QS1 / QS2 / QS3: Fisher factors from the training set, eq. (14) for any structures."""

    energy: ClassVar[bool] = False  # uses the energy sensitivities (QS1 term)
    forces: ClassVar[bool] = False  # uses the force sensitivities (QS2 term)
    committee, informativeness = False, True

    def __init__(self, models: Sequence[GMNN], train: Structures, settings: FisherSettings, *,
                 save_sensitivities: bool = False) -> None:
        from oedal.oed.sensitivities import all_sensitivities

        if len(models) > 1:
            log.warning("score %s uses the first model only", settings.kind)
        self.model, self.settings, self.save_sensitivities = models[0], settings, save_sensitivities
        g_e, g_f = all_sensitivities(self.model, train, forces=self.forces)
        self.g_train = g_e
        self.f_e = self._energy_factor(g_e) if self.energy else None
        self.f_f = fisher.factor_from_sensitivities(g_f, settings.jitter) if self.forces else None
        self.train_scores = self._scores(g_e, g_f, np.asarray(train.n_atoms))[keys.SCORE]

    def _energy_factor(self, g_e: np.ndarray) -> fisher.FisherFactor:
        """The QS1 Fisher factor: with the jitter where Ã is singular, or with the model's fitted prior."""
        if self.settings.prior == "jitter":
            return fisher.factor_from_sensitivities(g_e, self.settings.jitter)
        from oedal.oed.calibration import prior_factor
        from oedal.oed.uncertainty import model_head

        return prior_factor(fisher.fisher_matrix(g_e), model_head(self.model).lam)

    def combine(self, parts: dict[str, np.ndarray]) -> np.ndarray:
        """The score of this kind from score_qs1 / score_qs2."""
        raise NotImplementedError

    @classmethod
    def force_weight(cls, attrs: dict) -> float:
        return 1.0

    def _scores(self, g_e: np.ndarray, g_f: np.ndarray | None, n_atoms: np.ndarray) -> dict[str, np.ndarray]:
        out: dict[str, np.ndarray] = {}
        if self.energy:
            out[keys.SCORE_QS1], out[keys.U_ENERGY] = fisher.qs1_scores(self.f_e, g_e)
        if self.forces:
            out[keys.SCORE_QS2], out[keys.U_FORCES] = fisher.qs2_scores(self.f_f, g_f, 3 * n_atoms, self.settings.reduction,
                                                                  overwrite=True)  # g_f is not used again
        out[keys.SCORE] = self.combine(out)
        return out

    def layout(self, n_pool: int, n_rows: int) -> Layout:
        d, proj = self.model.d, self.settings.projections
        out: Layout = {}
        if self.energy:
            out[keys.SCORE_QS1] = ((n_pool,), np.float64)
        if self.forces:
            out[keys.SCORE_QS2] = ((n_pool,), np.float64)
        if self.energy and proj:
            out[keys.U_ENERGY] = ((n_pool, d), np.float32)
        if self.forces and proj:
            out[keys.U_FORCES] = ((n_rows, d), np.float32)
        if self.save_sensitivities:
            out[keys.G_POOL] = ((n_pool, d), np.float64)
        return out

    def constants(self, n_atoms: np.ndarray) -> dict[str, np.ndarray]:
        out = {}
        if self.forces and self.settings.projections:
            out[keys.U_FORCES_COUNTS] = 3 * n_atoms
        if self.save_sensitivities:
            out[keys.G_TRAIN] = self.g_train
        return out

    def attrs(self) -> dict[str, Any]:
        out: dict[str, Any] = {"jitter": self.settings.jitter}
        if self.forces:
            out["qs2_reduction"] = self.settings.reduction
        return out

    def chunk(self, structures: Structures) -> dict[str, np.ndarray]:
        from oedal.oed.sensitivities import all_sensitivities

        g_e, g_f = all_sensitivities(self.model, structures, forces=self.forces)
        out = self._scores(g_e, g_f, np.asarray(structures.n_atoms))
        out[keys.G_POOL] = g_e
        return out

    @classmethod
    def greedy_terms(cls, scores: dict, path: str) -> list[Term]:
        terms = []
        if cls.energy:
            if keys.U_ENERGY not in scores:
                raise InputError(f"{path}: greedy needs dataset u_energy (scored with projections off?)")
            terms.append(Term(scores[keys.U_ENERGY], np.ones(len(scores[keys.ID]), dtype=np.int64)))
        if cls.forces:
            if keys.U_FORCES not in scores:
                raise InputError(f"{path}: greedy needs datasets u_forces and u_forces_counts (scored with projections off?)")
            attrs = scores["attrs"]
            terms.append(Term(scores[keys.U_FORCES], scores[keys.U_FORCES_COUNTS], cls.force_weight(attrs),
                              str(attrs["qs2_reduction"])))
        return terms


class QS1(FisherScorer):
    """Energy score, eq. (14) with g = ∂E/∂w = Σ_i σ_{Z_i} h_i."""

    kind, Settings, energy = "qs1", QS1Settings, True
    strategies = {"qs1-greedy": "greedy", "qs1-top": "top"}

    def combine(self, parts: dict[str, np.ndarray]) -> np.ndarray:
        return parts[keys.SCORE_QS1]


class QS2(FisherScorer):
    """Force score: eq. (14) per force component, then eq. (21) or the per-atom maximum."""

    kind, Settings, forces = "qs2", QS2Settings, True
    strategies = {"qs2-greedy": "greedy", "qs2-top": "top"}

    def combine(self, parts: dict[str, np.ndarray]) -> np.ndarray:
        return parts[keys.SCORE_QS2]


class QS3(FisherScorer):
    """QS3 = QS1 + β·QS2, eq. (22)."""

    kind, Settings, energy, forces = "qs3", QS3Settings, True, True
    strategies = {"qs3-greedy": "greedy", "qs3-top": "top"}

    def combine(self, parts: dict[str, np.ndarray]) -> np.ndarray:
        return fisher.qs3_scores(parts[keys.SCORE_QS1], parts[keys.SCORE_QS2], self.settings.beta)

    def attrs(self) -> dict[str, Any]:
        return {**super().attrs(), "beta": self.settings.beta}

    @classmethod
    def force_weight(cls, attrs: dict) -> float:
        return float(attrs["beta"])


class QbC:
    """Query by committee: the energy spread of K ≥ 2 models, eq. (24) (and their force spread)."""

    kind, Settings = "qbc", QbCSettings
    strategies = {"qbc": "qbc"}
    committee, informativeness = True, False

    def __init__(self, models: Sequence[GMNN], train: Structures, settings: QbCSettings, *,
                 save_sensitivities: bool = False) -> None:
        if len(models) < 2:
            raise InputError(f"score qbc needs at least 2 models (--model ... --model ...), got {len(models)}")
        if save_sensitivities:
            raise InputError("score qbc has no sensitivities to save")
        self.models = models
        self.train_scores = self.chunk(train)[keys.SCORE]

    def layout(self, n_pool: int, n_rows: int) -> Layout:
        return {keys.ENERGY_STD: ((n_pool,), np.float64), keys.FORCE_STD: ((n_pool,), np.float64)}

    def constants(self, n_atoms: np.ndarray) -> dict[str, np.ndarray]:
        return {}

    def attrs(self) -> dict[str, Any]:
        return {}

    def chunk(self, structures: Structures) -> dict[str, np.ndarray]:
        from oedal.gmnn.evaluation import predict

        preds = [predict(m, structures, batch_size=512) for m in self.models]
        energy = np.stack([p.energy for p in preds])  # (K, n) eV
        forces = np.stack([p.forces for p in preds])  # (K, n_atoms_total, 3) eV/Å
        e_std = fisher.committee_spread(energy)
        return {keys.SCORE: e_std, keys.ENERGY_STD: e_std, keys.FORCE_STD: fisher.force_spread(forces, structures.n_atoms)}

    @classmethod
    def greedy_terms(cls, scores: dict, path: str) -> list[Term]:
        raise InputError(f"{path}: greedy selection needs an OED score (qs1|qs2|qs3), this file is qbc")


SCORERS: dict[str, type[Scorer]] = {cls.kind: cls for cls in (QS1, QS2, QS3, QbC)}  # type: ignore[misc]
"""The registry: score kind → Scorer class."""

ScoreSettings = Annotated[Union[tuple(cls.Settings for cls in SCORERS.values())],  # type: ignore[misc]
                          Field(discriminator="kind")]
"""Settings of any registered score, chosen by ``kind``."""


def scorer_of(kind: str) -> type[Scorer]:
    """The Scorer class of a score kind (a clear error for an unknown one)."""
    if kind not in SCORERS:
        raise InputError(f"unknown score {kind!r} (known: {', '.join(SCORERS)})")
    return SCORERS[kind]


def score_settings(**values):
    """Validated settings of the score ``kind`` names (default qs1), e.g. ``score_settings(kind="qs3", beta=2)``."""
    from oedal.settings import load_settings

    return load_settings(ScoreSettings, {"kind": "qs1", **values})
