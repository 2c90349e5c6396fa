"""Training: learning ethanol forces quickly, early stopping, warm start, and the train/evaluate CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from oedal.cli import main
from oedal.data.datasets import load_dataset
from oedal.data.store import write_store
from oedal.model import load_model, save_model
from oedal.settings import DescriptorSettings, ModelSettings, TrainingSettings
from oedal.training import train_model

ETHANOL = Path(__file__).resolve().parents[2] / "shared" / "data" / "gmnn_ethanol" / "ethanol_1000K.npz"


@pytest.fixture(scope="module")
def ethanol():
    assert ETHANOL.exists(), f"reference data {ETHANOL} not found"
    return load_dataset(ETHANOL)


def test_training_learns_ethanol_forces(ethanol):
    """200 GM-NN ethanol structures (1000 K), ≤ ~40 s: valid force MAE far below the force std."""
    idx = np.random.default_rng(0).permutation(len(ethanol))
    train, valid = ethanol.subset(idx[:200]), ethanol.subset(idx[200:400])
    ts = TrainingSettings(epochs=10_000, patience=10_000, max_minutes=0.55, seed=1, threads=1, device="cpu")
    result = train_model(train, valid, ModelSettings(descriptor=DescriptorSettings(r_cut=4.0)), ts)
    best = result.history[result.best_epoch - 1]
    std = float(valid.forces.std())
    assert result.stopped == "time" and result.seconds < 45
    assert best["valid_force_mae"] < 0.25 * std, (best, std)


def test_early_stopping_and_warm_start(ethanol, tmp_path):
    train, valid = ethanol.subset(np.arange(40)), ethanol.subset(np.arange(40, 60))
    ms = ModelSettings(descriptor=DescriptorSettings(n_radial=2, n_basis=4), hidden=[16, 8])
    ts = TrainingSettings(epochs=200, patience=2, learning_rate=0.5, seed=0, threads=1, device="cpu")
    r = train_model(train, valid, ms, ts)  # a huge learning rate stops improving quickly
    assert r.stopped == "patience" and r.epochs == r.best_epoch + 2
    # the best weights are restored
    from oedal.training import BatchLoader, validate

    loader = BatchLoader(valid, r.model.cutoff, r.model.species, 64)
    assert validate(r.model, loader, 1.0, 100.0)["valid_loss"] == pytest.approx(r.best_valid_loss, rel=1e-6)
    path = tmp_path / "m.pt"
    save_model(r.model, path)
    r2 = train_model(train, valid, ms, ts.model_copy(update={"epochs": 1, "learning_rate": 1e-4}), warm_start=path)
    assert r2.history[0]["valid_loss"] <= r.best_valid_loss * 1.5
    with pytest.raises(ValueError, match="hidden"):
        train_model(train, valid, ms.model_copy(update={"hidden": [4]}), ts, warm_start=path)


def test_seed_makes_training_reproducible(ethanol):
    train, valid = ethanol.subset(np.arange(20)), ethanol.subset(np.arange(20, 30))
    ms = ModelSettings(descriptor=DescriptorSettings(n_radial=2, n_basis=4), hidden=[8, 8])
    ts = TrainingSettings(epochs=2, seed=5, threads=1, batch_size=8, device="cpu")
    a, b = train_model(train, valid, ms, ts), train_model(train, valid, ms, ts)
    assert a.history[-1]["train_loss"] == b.history[-1]["train_loss"]


def test_cli_train_and_evaluate(ethanol, tmp_path):
    write_store(tmp_path / "train.h5", ethanol.subset(np.arange(30)))
    write_store(tmp_path / "valid.h5", ethanol.subset(np.arange(30, 40)))
    model_settings = json.dumps({"descriptor": {"n_radial": 2, "n_basis": 4}, "hidden": [8, 8]})
    args = ["train", "--train", str(tmp_path / "train.h5"), "--valid", str(tmp_path / "valid.h5"),
            "--out", str(tmp_path / "m.pt"), "--epochs", "2", "--seed", "3", "--settings", '{"epochs": 50}',
            "--model-settings", model_settings, "--threads", "1", "--device", "cpu"]
    assert main(args) == 0
    model = load_model(tmp_path / "m.pt")
    assert len(model.meta["history"]) == 2  # --epochs overrides the JSON
    assert main(["evaluate", "--model", str(tmp_path / "m.pt"), "--data", str(tmp_path / "valid.h5"),
                 "--out", str(tmp_path / "metrics.json")]) == 0
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    for key in ("energy_mae_eV", "energy_rmse_kcal/mol", "forces_maxe_kcal/mol/A",
                "n_max_force_component_error_above_1_kcal/mol/A", "n_energy_error_above_1_kcal/mol"):
        assert key in metrics
    assert metrics["n_structures"] == 10
    # a bad setting and a warm start with other settings exit 2
    assert main(args[:7] + ["--settings", '{"epochs": 0}'] + args[13:]) == 2
    other = json.dumps({"descriptor": {"n_radial": 3, "n_basis": 4}, "hidden": [8, 8]})
    assert main(args[:13] + ["--model-settings", other, "--warm-start", str(tmp_path / "m.pt")] + args[15:]) == 2


def test_functional_loss_equals_autograd_loss(ethanol):
    """The training loss (forces by torch.func.grad) has the same value and parameter gradients as autograd."""
    from oedal.batching import make_batch
    from oedal.model import GMNN
    from oedal.training import batch_loss, structure_loss

    torch.manual_seed(0)
    s = ethanol.subset(np.arange(4))
    model = GMNN(ModelSettings(descriptor=DescriptorSettings(n_radial=2, n_basis=4), hidden=[8, 8], dtype="float64"),
                 [1, 6, 8])
    model.init_scale_shift(s.numbers, s.n_atoms, s.energy)
    batch = make_batch(s, model.cutoff, model.species, dtype=torch.float64)
    a = batch_loss(model, batch, 1.0, 100.0)
    ga = torch.autograd.grad(a, list(model.parameters()))
    e, f = model.energy_and_forces(batch, create_graph=True)
    b = structure_loss(batch, e, f, 1.0, 100.0).mean()
    gb = torch.autograd.grad(b, list(model.parameters()))
    assert float(a) == pytest.approx(float(b), rel=1e-12)
    for x, y in zip(ga, gb):
        assert torch.allclose(x, y, rtol=1e-9, atol=1e-12)
