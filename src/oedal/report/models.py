"""The models of a run looked at closely: predictions of a model on the run's test set (parity, error
distribution) and the score of every test structure against its error (Pearson and Spearman r).

Evaluation uses oedal.gmnn.evaluation.predict; scoring re-runs the iteration's own score
(oedal.oed.scoring.score_pool with the settings stored in its scores.h5) on the test set.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import NamedTuple

import numpy as np

from oedal.campaign.tree import model_file
from oedal.report.runs import Run


class TestPredictions(NamedTuple):
    """A model on the run's test set, in kcal/mol and kcal/mol/Å."""

    iteration: int
    energy_ref: np.ndarray  # (n_structures,)
    energy_pred: np.ndarray  # (n_structures,)
    force_ref: np.ndarray  # (n_atoms_total * 3,) components; (0,) for an energy-only test set (QM9)
    force_pred: np.ndarray  # (n_atoms_total * 3,) or (0,)
    force_rmse: np.ndarray  # (n_structures,) RMSE over each structure's force components, or (0,)


class ScoreErrors(NamedTuple):
    """Scores of the test structures against their force errors under the same model."""

    iteration: int
    scores: np.ndarray  # (n_structures,)
    errors: np.ndarray  # (n_structures,) force RMSE per structure (kcal/mol/Å), or |energy error| (kcal/mol)
    pearson: float
    spearman: float
    quantity: str = "force RMSE per structure (kcal/mol/Å)"  # what ``errors`` holds


def test_predictions(run: Run, iteration: int) -> TestPredictions:
    """Predict the run's test set (``{run}/test.h5``) with the model of ``iteration`` (CPU)."""
    from oedal.data.store import read_store
    from oedal.gmnn.evaluation import KCAL_PER_MOL, predict
    from oedal.gmnn.model import load_model
    from oedal.oed.calibration import structure_force_rms

    test = read_store(run.path / "test.h5")
    with_forces = test.forces is not None
    pred = predict(load_model(run.iter_dir(iteration) / model_file(0), device="cpu"), test, forces=with_forces)
    if not with_forces:
        none = np.zeros(0)
        return TestPredictions(iteration, np.asarray(test.energy) / KCAL_PER_MOL, pred.energy / KCAL_PER_MOL, none,
                               none, none)
    f_ref = np.asarray(test.forces, np.float64) / KCAL_PER_MOL  # (n_atoms_total, 3) kcal/mol/Å
    f_pred = pred.forces / KCAL_PER_MOL
    return TestPredictions(iteration, np.asarray(test.energy) / KCAL_PER_MOL, pred.energy / KCAL_PER_MOL,
                           f_ref.ravel(), f_pred.ravel(), structure_force_rms(f_pred - f_ref, test.n_atoms))


def last_scored(run: Run) -> int | None:
    """The last finished iteration of the run with a scores.h5 (random runs score nothing)."""
    scored = [i for i in range(run.complete) if (run.iter_dir(i) / "scores.h5").is_file()]
    return scored[-1] if scored else None


def score_test_set(run: Run, iteration: int) -> np.ndarray:
    """The score of every test structure under the models and score settings of ``iteration`` (the
    Fisher matrix of that iteration's training set), on the CPU."""
    from oedal.oed.scorers import ScoreSettings
    from oedal.oed.scoring import read_scores, score_pool
    from oedal.settings import load_settings

    d = run.iter_dir(iteration)
    attrs = read_scores(d / "scores.h5")["attrs"]
    settings = load_settings(ScoreSettings, str(attrs["settings"]), device="cpu")
    if "projections" in type(settings).model_fields:  # the report needs the scores alone
        settings = settings.model_copy(update={"projections": False})
    models = [d / Path(p).name for p in json.loads(str(attrs.get("models", '["model.pt"]')))]
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "scores.h5"
        score_pool(models, d / "train.h5", run.path / "test.h5", out, settings)
        return np.asarray(read_scores(out)["score"], np.float64)


def score_errors(run: Run, iteration: int) -> ScoreErrors:
    """Test-set scores against the force errors of the same model (the energy errors on energy-only data),
    with Pearson and Spearman r (oedal.oed.calibration, as the model's own uncertainty is assessed)."""
    from oedal.oed.calibration import pearson, spearman

    scores = score_test_set(run, iteration)
    pred = test_predictions(run, iteration)
    errors, quantity = pred.force_rmse, ScoreErrors._field_defaults["quantity"]
    if len(errors) == 0:  # energy-only data: QS1 is an energy score, compared with the energy error
        errors, quantity = np.abs(pred.energy_pred - pred.energy_ref), "|energy error| per structure (kcal/mol)"
    ok = np.isfinite(scores) & np.isfinite(errors)
    return ScoreErrors(iteration, scores, errors, pearson(scores[ok], errors[ok]), spearman(scores[ok], errors[ok]),
                       quantity)
