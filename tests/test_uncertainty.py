"""The model's own uncertainty: stored by oedal train, returned by the calculator per call, equal to
oedal score on the same frames, and calibrated on the validation set."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest

from oedal.cli import main
from oedal.data.store import write_store


@pytest.fixture(scope="module")
def trained(tmp_path_factory, ethanol_structures):
    root = tmp_path_factory.mktemp("unc")
    s = ethanol_structures
    write_store(root / "train.h5", s.subset(np.arange(40)))
    write_store(root / "valid.h5", s.subset(np.arange(40, 80)))
    write_store(root / "pool.h5", s.subset(np.arange(100, 130)).without_labels())
    settings = json.dumps({"epochs": 15, "batch_size": 8})
    model = json.dumps({"hidden": [32, 16], "descriptor": {"r_cut": 4.0, "n_radial": 3, "n_basis": 5}})
    assert main(["train", "--train", str(root / "train.h5"), "--valid", str(root / "valid.h5"), "--out",
                 str(root / "m.pt"), "--settings", settings, "--model-settings", model, "--threads", "1",
                 "--atom-uncertainty"]) == 0
    return root


def test_calculator_scores_equal_oedal_score_on_the_same_frames(trained, ethanol_structures):
    from oedal.oed.calculator import UncertaintyCalculator

    root = trained
    assert main(["score", "--model", str(root / "m.pt"), "--train", str(root / "train.h5"), "--pool",
                 str(root / "pool.h5"), "--out", str(root / "s.h5"), "--settings",
                 json.dumps({"kind": "qs1", "prior": "fitted"}), "--threads", "1"]) == 0
    with h5py.File(root / "s.h5") as h5:
        score, informativeness = h5["score"][()], h5["informativeness"][()]
    calc = UncertaintyCalculator(root / "m.pt", threads=1, atoms=True)
    for k, atoms in enumerate(ethanol_structures.subset(np.arange(100, 130)).to_atoms()):
        atoms.calc = calc
        atoms.get_potential_energy()
        assert calc.results["oed_score"] == pytest.approx(score[k], rel=1e-5)
        assert calc.results["informativeness"] == pytest.approx(informativeness[k], rel=1e-5)
        assert calc.results["force_error"] > 0 and calc.results["atom_force_error"].shape == (9,)


def test_stored_uncertainty_is_calibrated_on_the_validation_set(trained, ethanol_structures):
    from oedal.gmnn.model import load_model
    from oedal.oed.uncertainty import model_head

    head = model_head(load_model(trained / "m.pt"))
    assert head.lam > 0 and head.sigma2 > 0 and 0 < head.threshold < 1 and head.n_train == 40
    assert head.validation["n"] == 40 and 0 <= head.validation["miscalibration_area"] < 0.5
    a, p = head.error_map
    assert a > 0 and np.isfinite(p)
    # structures far from the training data look less known than the training structures
    far = ethanol_structures.subset(np.arange(100, 130))
    far.positions[:] *= 1.15
    from oedal.oed.sensitivities import all_sensitivities

    model = load_model(trained / "m.pt")
    g_train, _ = all_sensitivities(model, ethanol_structures.subset(np.arange(40)), forces=False)
    g_far, _ = all_sensitivities(model, far, forces=False)
    assert np.median(head.structure(g_far)["informativeness"]) > np.median(head.structure(g_train)["informativeness"])


def test_evaluate_reports_the_calibration_and_reproduces_the_validation_figures(trained):
    """oedal evaluate on the model's own validation set recomputes the figures stored when it was trained."""
    out = trained / "metrics_valid.json"
    assert main(["evaluate", "--model", str(trained / "m.pt"), "--data", str(trained / "valid.h5"), "--out",
                 str(out), "--threads", "1"]) == 0
    u = json.loads(out.read_text())["uncertainty"]
    assert u["n"] == u["validation_n"] == 40
    assert u["spearman"] == pytest.approx(u["validation_spearman"], abs=1e-9)
    assert u["miscalibration_area"] == pytest.approx(u["validation_miscalibration_area"], abs=1e-9)
