"""The uncertainty a trained model carries: what an MD step needs to judge its own prediction.

Fitted once after training (``oedal train`` stores it in the model file) from the model's own
training set and its validation set (oedal.oed.calibration):

* the QS1 Fisher matrix with a fitted prior, Ã_λ = Σ_train g gᵀ + λI (its Cholesky factor), and the
  score of eq. (14), s/(1+s) with s = gᵀÃ_λ⁻¹g, for any structure from its g = Σ_i σ_i h_i;
* the threshold σ_th = median of the training structures' scores (section 3.3) and the
  informativeness I = score/σ_th;
* a map from s to the expected force error of a structure (RMS over its 3N components, eV/Å),
  with its Spearman r and miscalibration area on the validation set;
* optionally the per-atom force uncertainty: QS2 per atom (eq. 14 on ∂F_jk/∂w with the force
  Fisher matrix of the training set, the atom's mean over x, y, z) mapped to the expected error of
  that atom's force components;
* for cells, when the validation set has stress labels: the stress uncertainty. The stress is linear in the
  output weights as the energy is (σ = Σ_k w_k ∂σ/∂w_k, oedal.oed.sensitivities.stress_sensitivities), so
  its variance under the same posterior is σ² g_σᵀÃ_λ⁻¹g_σ per Voigt component; s̄_σ, the mean of
  g_σᵀÃ_λ⁻¹g_σ over the six components, is mapped to the expected stress RMS (GPa, over the six) by a power
  law fitted on the validation cells, as forces are (calibration.fit_error_map).
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass

import numpy as np

from oedal.errors import InputError
from oedal.oed import calibration, fisher

log = logging.getLogger(__name__)
FORMAT = "oedal-uncertainty-1"


def model_head(model) -> UncertaintyHead:
    """The uncertainty stored in a model's file (``model.meta``), or a clear error."""
    payload = getattr(model, "meta", {}).get("uncertainty")
    if payload is None:
        raise InputError("the model file carries no uncertainty (trained by an older oedal, or with --no-uncertainty): "
                         "retrain it, or fit one with oedal.oed.uncertainty.fit_uncertainty(model, train, valid)")
    return UncertaintyHead.from_payload(payload)


@dataclass
class UncertaintyHead:
    """The fitted uncertainty of one model (see the module docstring); plain data and arrays."""

    chol: np.ndarray  # (d, d) float64: Cholesky factor of Ã + λI (energy sensitivities)
    lam: float  # the prior precision λ
    sigma2: float  # eV²: var(E) = σ² s
    threshold: float  # σ_th: median over the training structures of s/(1+s)
    error_map: tuple[float, float]  # (a, p): expected force RMS of a structure = a · s^p, eV/Å
    validation: dict  # spearman, miscalibration_area, n on the validation set
    n_train: int
    atom_chol: np.ndarray | None = None  # (d, d): Cholesky factor of the force Fisher matrix (+ jitter)
    atom_error_map: tuple[float, float] | None = None  # per-atom force RMS = a · s̄^p, eV/Å
    stress_error_map: tuple[float, float] | None = None  # stress RMS over xx yy zz yz xz xy = a · s̄_σ^p, GPa

    def to_payload(self) -> dict:
        """Tensors and plain numbers only: a model file holding it loads with weights_only=True."""
        import torch

        def plain(v):
            if isinstance(v, np.ndarray):
                return torch.from_numpy(v)
            if isinstance(v, (tuple, list)):
                return tuple(plain(x) for x in v)
            if isinstance(v, dict):
                return {k: plain(x) for k, x in v.items()}
            return v.item() if isinstance(v, np.generic) else v

        return {"format": FORMAT, **{k: plain(v) for k, v in asdict(self).items()}}

    @classmethod
    def from_payload(cls, payload: dict) -> "UncertaintyHead":
        if payload.get("format") != FORMAT:
            raise InputError(f"uncertainty of format {payload.get('format')!r}, expected {FORMAT}: retrain the model")
        import torch

        data = {k: (v.numpy() if isinstance(v, torch.Tensor) else v) for k, v in payload.items() if k != "format"}
        for key in ("error_map", "atom_error_map", "stress_error_map"):  # the stress map: absent in older files
            data[key] = None if data.get(key) is None else tuple(data[key])
        return cls(**data)

    def structure(self, g: np.ndarray) -> dict[str, np.ndarray]:
        """For sensitivities ``g (n, d)``: s, the score s/(1+s), I and the expected force error (eV/Å)."""
        factor = fisher.FisherFactor(self.chol, self.lam, self.n_train)
        s = fisher.row_norms2(fisher.project(factor, np.atleast_2d(g)))
        score = fisher.variance_change(s)
        return {"s": s, "score": score, "informativeness": fisher.informativeness(score, self.threshold),
                "force_error": calibration.ErrorMap(*self.error_map)(s)}

    def atoms(self, g_forces: np.ndarray) -> np.ndarray:
        """Per-atom expected force error (eV/Å) from force sensitivities ``(3·n_atoms, d)``."""
        if self.atom_chol is None:
            raise InputError("this model file carries no per-atom force uncertainty (oedal train --atom-uncertainty)")
        factor = fisher.FisherFactor(self.atom_chol, 0.0, self.n_train)
        s = fisher.row_norms2(fisher.project(factor, g_forces)).reshape(-1, 3).mean(axis=1)
        return calibration.ErrorMap(*self.atom_error_map)(s)

    def stress_scores(self, g_stress: np.ndarray) -> np.ndarray:
        """s̄_σ (n,): the mean over the six Voigt components of g_σᵀÃ_λ⁻¹g_σ, from ``g_stress (n, 6, d)``."""
        factor = fisher.FisherFactor(self.chol, self.lam, self.n_train)
        g = np.asarray(g_stress, dtype=np.float64)
        return fisher.row_norms2(fisher.project(factor, g.reshape(-1, g.shape[-1]))).reshape(len(g), 6).mean(axis=1)

    def stress(self, g_stress: np.ndarray) -> np.ndarray:
        """Expected stress error (GPa, RMS over the six Voigt components) of cells with ``g_stress (n, 6, d)``."""
        if self.stress_error_map is None:
            raise InputError("this model file carries no stress uncertainty (its validation set had no cells with "
                             "stress labels): retrain it on stress-labeled cells")
        return calibration.ErrorMap(*self.stress_error_map)(self.stress_scores(g_stress))


def evaluate_with_uncertainty(model, head: UncertaintyHead, batch, *, stress: bool = False,
                              uncertainty: bool = True, bias=None):
    """What an MD step with uncertainty needs of ``model`` on ``batch``, from one forward and one backward
    pass (GMNN.evaluate): (Evaluation, the uncertainty of every structure from ``head.structure``: s,
    score, informativeness, force_error, (n_structures,) each), the uncertainty None unless asked. With
    ``bias`` (oedal.oed.bias.UncertaintyBias) the Evaluation carries the bias's energy, forces and virial apart
    (one more backward pass); or its function for ``head`` made once (UncertaintyBias.of: the walkers' loop).
    Shared by the exploration walkers and the ASE calculator (oedal.oed.calculator)."""
    if hasattr(bias, "of"):
        bias = bias.of(head, batch.positions.device)
    ev = model.evaluate(batch, stress=stress, sensitivities=uncertainty, bias=bias)
    return ev, head.structure(ev.sensitivities.double().cpu().numpy()) if uncertainty else None


def fit_uncertainty(model, train, valid, *, atoms: bool = False, jitter: float = 1e-8) -> UncertaintyHead:
    """Fit the uncertainty of ``model`` from its training and validation sets (labeled Structures)."""
    from oedal.gmnn.evaluation import predict
    from oedal.oed.sensitivities import all_sensitivities

    g_train, gf_train = all_sensitivities(model, train, forces=atoms)
    g_valid, gf_valid = all_sensitivities(model, valid, forces=atoms)
    pred = predict(model, valid)
    e_err = pred.energy - np.asarray(valid.energy, np.float64)
    f_err = pred.forces - np.asarray(valid.forces, np.float64)
    prior = calibration.fit_prior(g_train, g_valid, e_err)
    s_valid = fisher.row_norms2(fisher.project(prior.factor, g_valid))
    s_train = fisher.row_norms2(fisher.project(prior.factor, g_train))
    n_atoms = np.asarray(valid.n_atoms, np.int64)
    error_map = calibration.fit_error_map(s_valid, calibration.structure_force_rms(f_err, n_atoms))
    quality = calibration.assess(error_map, s_valid, f_err, n_atoms)
    head = UncertaintyHead(prior.factor.chol, prior.lam, prior.sigma2,
                           fisher.threshold(fisher.variance_change(s_train)), (error_map.a, error_map.p),
                           quality._asdict(), len(train.n_atoms))
    if atoms:
        head.atom_chol, head.atom_error_map = _atom_uncertainty(gf_train, gf_valid, f_err, jitter)
    head.stress_error_map = _stress_uncertainty(model, head, valid)
    log.info("uncertainty: prior λ %.3g, σ %.3g eV, σ_th %.4g, force error %.3g·s^%.2f eV/Å; validation Spearman "
             "r %.2f, miscalibration area %.3f", head.lam, head.sigma2**0.5, head.threshold, *head.error_map,
             quality.spearman, quality.miscalibration_area)
    return head


def assess_on(model, head: UncertaintyHead, structures) -> dict:
    """How well the stored uncertainty tracks the errors on labeled ``structures`` (a test set, or frames
    labeled after the model was trained): Spearman r of score and per-structure force RMS, the
    miscalibration area of the force-error map, and the validation figures stored at training."""
    from oedal.gmnn.evaluation import predict
    from oedal.oed.sensitivities import all_sensitivities

    g, _ = all_sensitivities(model, structures, forces=False)
    f_err = predict(model, structures).forces - np.asarray(structures.forces, np.float64)
    quality = calibration.assess(calibration.ErrorMap(*head.error_map), head.structure(g)["s"], f_err,
                                 np.asarray(structures.n_atoms, np.int64))
    return {**quality._asdict(), **{f"validation_{k}": v for k, v in head.validation.items()}}


MIN_STRESS_CELLS = 3  # validation cells with a stress label needed to fit the stress map (two parameters)


def stress_rms(model, cells) -> np.ndarray:
    """The model's stress error of each labeled cell: (n,) GPa, RMS over the six Voigt components."""
    from oedal.gmnn.evaluation import GPA, predict
    from oedal.oed.sensitivities import VOIGT

    error = (predict(model, cells, stress=True).stress - np.asarray(cells.stress, np.float64)) / GPA  # (n, 3, 3)
    return np.sqrt((error[:, VOIGT[0], VOIGT[1]] ** 2).mean(axis=1))


def stress_labeled_cells(structures) -> np.ndarray:
    """Indices of the structures periodic in 3D with a finite stress label."""
    if getattr(structures, "stress", None) is None:
        return np.zeros(0, dtype=np.int64)
    from oedal.data.structures import cell_volumes

    ok = np.isfinite(cell_volumes(structures.cell, structures.pbc))
    ok &= np.isfinite(np.asarray(structures.stress, np.float64)).all(axis=(1, 2))
    return np.flatnonzero(ok)


def _stress_uncertainty(model, head: UncertaintyHead, valid) -> tuple[float, float] | None:
    """The map from s̄_σ to the stress RMS (GPa) on the validation cells with stress labels, or None (fewer than
    MIN_STRESS_CELLS of them, or errors and scores that leave nothing to fit)."""
    from oedal.oed.sensitivities import stress_sensitivities

    index = stress_labeled_cells(valid)
    if len(index) < MIN_STRESS_CELLS:
        return None
    cells = valid.subset(index)
    try:
        stress_map = calibration.fit_error_map(head.stress_scores(stress_sensitivities(model, cells)),
                                               stress_rms(model, cells))
    except InputError:
        return None
    log.info("stress uncertainty: error %.3g·s^%.2f GPa from %d validation cells", *stress_map, len(index))
    return stress_map.a, stress_map.p


def _atom_uncertainty(gf_train: np.ndarray, gf_valid: np.ndarray, f_err: np.ndarray, jitter: float):
    """The force Fisher factor and the map from an atom's mean s over x, y, z to its force RMS."""
    factor = fisher.factor_from_sensitivities(gf_train, jitter)
    s_atom = fisher.row_norms2(fisher.project(factor, gf_valid)).reshape(-1, 3).mean(axis=1)
    rms_atom = np.sqrt((np.asarray(f_err) ** 2).mean(axis=1))
    atom_map = calibration.fit_error_map(s_atom, rms_atom)
    return factor.chol, (atom_map.a, atom_map.p)
