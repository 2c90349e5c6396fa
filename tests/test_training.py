"""Training: learning ethanol forces quickly, early stopping, warm start, and the train/evaluate CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from oedal.campaign.records import Status
from oedal.cli import main
from oedal.data.datasets import load_dataset
from oedal.data.store import write_store
from oedal.gmnn.model import load_model, save_model
from oedal.settings import DescriptorSettings, ModelSettings, TrainingSettings
from oedal.gmnn.training import train_model

ETHANOL = Path(__file__).resolve().parents[2] / "shared" / "data" / "gmnn_ethanol" / "ethanol_1000K.npz"


@pytest.fixture(scope="module")
def ethanol():
    assert ETHANOL.exists(), f"reference data {ETHANOL} not found"
    return load_dataset(ETHANOL)


def test_training_learns_ethanol_forces(ethanol):
    """200 GM-NN ethanol structures (1000 K), an epoch budget (≈ 20 s): valid force MAE far below the
    force std; the cosine schedule runs from the peak to the final rate."""
    idx = np.random.default_rng(0).permutation(len(ethanol))
    train, valid = ethanol.subset(idx[:200]), ethanol.subset(idx[200:400])
    ts = TrainingSettings(epochs=30, patience=1000, seed=1, threads=1, device="cpu")
    result = train_model(train, valid, ModelSettings(descriptor=DescriptorSettings(r_cut=4.0)), ts)
    best = result.history[result.best_epoch - 1]
    std = float(valid.forces.std())
    assert result.stopped == "epochs" and result.epochs == result.epoch_budget == 30
    assert best["valid_force_mae"] < 0.25 * std, (best, std)
    rates = [row["lr"] for row in result.history]
    assert rates[0] == pytest.approx(1e-2, rel=0.01) and rates[-1] < 2e-4 and np.all(np.diff(rates) < 0)


def test_early_stopping_and_warm_start(ethanol, tmp_path):
    train, valid = ethanol.subset(np.arange(40)), ethanol.subset(np.arange(40, 60))
    ms = ModelSettings(descriptor=DescriptorSettings(n_radial=2, n_basis=4), hidden=[16, 8])
    ts = TrainingSettings(epochs=200, patience=2, learning_rate=0.5, seed=0, threads=1, device="cpu")
    r = train_model(train, valid, ms, ts)  # a huge learning rate stops improving quickly
    assert r.stopped == "patience" and r.epochs == r.best_epoch + 2
    # the best weights are restored
    from oedal.gmnn.training import BatchLoader, validate

    loader = BatchLoader(valid, r.model.cutoff, r.model.species, 64)
    assert validate(r.model, loader, 1.0, 100.0)["valid_loss"] == pytest.approx(r.best_valid_loss, rel=1e-6)
    path = tmp_path / "m.pt"
    save_model(r.model, path)
    r2 = train_model(train, valid, ms, ts.model_copy(update={"epochs": 1, "learning_rate": 1e-4}), warm_start=path)
    assert r2.history[0]["valid_loss"] <= r.best_valid_loss * 1.5
    with pytest.raises(ValueError, match="hidden"):
        train_model(train, valid, ms.model_copy(update={"hidden": [4]}), ts, warm_start=path)


def test_shrink_and_perturb_mixes_the_weights_with_a_fresh_start_and_keeps_the_energy_scale(ethanol, tmp_path):
    """θ ← λθ + sθ₀ for every MLP and output weight and bias (θ₀: the seed's fresh initialisation), the
    descriptor's β and σ_Z, μ_Z untouched; a warm start with warm_shrink starts from those weights."""
    from oedal.gmnn.model import GMNN
    from oedal.gmnn.training import shrink_perturb

    train, valid = ethanol.subset(np.arange(40)), ethanol.subset(np.arange(40, 60))
    ms = ModelSettings(descriptor=DescriptorSettings(n_radial=2, n_basis=4), hidden=[16, 8])
    r = train_model(train, valid, ms, TrainingSettings(epochs=5, seed=0, threads=1, device="cpu"))
    before = {k: v.clone() for k, v in r.model.state_dict().items()}
    path = tmp_path / "m.pt"
    save_model(r.model, path)
    shrink_perturb(r.model, 0.6, 0.3, seed=7)
    torch.manual_seed(7)
    fresh = GMNN(ms, r.model.species).state_dict()
    for key, value in r.model.state_dict().items():
        moved = key.startswith(("mlp.", "output."))
        if not moved:
            assert torch.equal(value, before[key]), key
            continue
        # two roundings (the product, the sum): 2 ulps of the terms' magnitudes, not of a result that may cancel
        terms = 0.6 * before[key].abs() + 0.3 * fresh[key].abs()
        error = (value - (0.6 * before[key] + 0.3 * fresh[key])).abs()
        assert (error <= 2 * torch.finfo(value.dtype).eps * terms).all(), key
    # a warm start with warm_shrink starts from exactly these weights: one epoch at 1e-12 (Adam moves each
    # weight by about the rate) ends on them
    ts = TrainingSettings(epochs=1, seed=7, threads=1, device="cpu", warm_shrink=0.6, warm_perturb=0.3,
                          warm_learning_rate=1e-12, final_learning_rate=1e-12)
    warm = train_model(train, valid, ms, ts, warm_start=path).model.state_dict()
    for key, value in r.model.state_dict().items():
        assert (warm[key] - value).abs().max() < 1e-9, key


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
    from oedal.gmnn.batching import make_batch
    from oedal.gmnn.model import GMNN
    from oedal.gmnn.training import batch_loss, structure_loss

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
    assert float(a.detach()) == pytest.approx(float(b.detach()), rel=1e-12)
    for x, y in zip(ga, gb):
        assert torch.allclose(x, y, rtol=1e-9, atol=1e-12)


# --- checkpoints: nothing lost when a job dies ---------------------------------------------------

def _tiny(structures, **ts):
    train, valid = structures.subset(np.arange(40)), structures.subset(np.arange(40, 60))
    ms = ModelSettings(descriptor=DescriptorSettings(n_radial=2, n_basis=4), hidden=[16, 8])
    settings = dict(epochs=6, batch_size=8, patience=1000, seed=2, threads=1, device="cpu")
    return train, valid, ms, TrainingSettings(**{**settings, **ts})


def _same_result(a, b):
    sa, sb = a.model.state_dict(), b.model.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        torch.testing.assert_close(sa[k], sb[k], rtol=1e-12, atol=0)
    strip = lambda h: [{k: v for k, v in row.items() if k != "seconds"} for row in h]  # noqa: E731
    assert strip(a.history) == strip(b.history)
    assert (a.epochs, a.best_epoch, a.best_valid_loss, a.stopped) == (b.epochs, b.best_epoch, b.best_valid_loss,
                                                                      b.stopped)


def _stop_after(k, action):
    def callback(row):
        if row["epoch"] == k:
            action()
    return callback


def test_resume_after_a_crash_gives_the_same_model(ethanol_structures, tmp_path, caplog):
    import os
    import signal

    from oedal.gmnn.training import TrainingInterrupted

    train, valid, ms, ts = _tiny(ethanol_structures)
    straight = train_model(train, valid, ms, ts)
    ck = tmp_path / "m.pt.ckpt"

    def crash():
        raise KeyboardInterrupt

    # killed after epoch 3 (checkpoint at every epoch end), resumed
    with pytest.raises(KeyboardInterrupt):
        train_model(train, valid, ms, ts, checkpoint=ck, checkpoint_minutes=0, callback=_stop_after(3, crash))
    assert ck.exists()
    with caplog.at_level("INFO", logger="oedal.gmnn.training"):
        resumed = train_model(train, valid, ms, ts, checkpoint=ck)
    assert "RESUMING training from checkpoint" in caplog.text and str(ck) in caplog.text
    _same_result(straight, resumed)

    # SIGTERM at the end of epoch 2: the checkpoint is written inside epoch 3 (after its first batch)
    ck.unlink()
    with pytest.raises(TrainingInterrupted, match="epoch 3"):
        train_model(train, valid, ms, ts, checkpoint=ck, checkpoint_minutes=60,
                    callback=_stop_after(2, lambda: os.kill(os.getpid(), signal.SIGTERM)))
    assert torch.load(ck, weights_only=True)["partial"]["position"] == 8  # data only: loads as weights
    _same_result(straight, train_model(train, valid, ms, ts, checkpoint=ck))


def test_checkpoint_of_another_training_is_refused(ethanol_structures, tmp_path):
    from oedal.gmnn.training import CheckpointMismatch

    train, valid, ms, ts = _tiny(ethanol_structures, epochs=3)
    ck = tmp_path / "m.ckpt"

    def crash():
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_model(train, valid, ms, ts, checkpoint=ck, checkpoint_minutes=0, callback=_stop_after(1, crash))
    with pytest.raises(CheckpointMismatch, match=f"{ck}.*training settings"):
        train_model(train, valid, ms, ts.model_copy(update={"learning_rate": 3e-3}), checkpoint=ck)
    with pytest.raises(CheckpointMismatch, match="training data"):
        train_model(ethanol_structures.subset(np.arange(1, 41)), valid, ms, ts, checkpoint=ck)
    assert ck.exists()
    # more epochs may be asked for on a resume
    assert train_model(train, valid, ms, ts.model_copy(update={"epochs": 4}), checkpoint=ck).epochs == 4
    # restart: the checkpoint is removed and training starts from scratch
    other = ts.model_copy(update={"learning_rate": 1e-2, "epochs": 2})
    r = train_model(train, valid, ms, other, checkpoint=ck, restart=True)
    _same_result(r, train_model(train, valid, ms, other))


def test_cli_train_resumes_after_sigterm(ethanol_structures, tmp_path, caplog):
    import os
    import signal
    import subprocess
    import sys
    import time

    train, valid, ms, ts = _tiny(ethanol_structures, epochs=20)
    write_store(tmp_path / "train.h5", train)
    write_store(tmp_path / "valid.h5", valid)
    out, ck = tmp_path / "m.pt", tmp_path / "m.pt.ckpt"
    args = ["train", "--train", str(tmp_path / "train.h5"), "--valid", str(tmp_path / "valid.h5"), "--out", str(out),
            "--settings", ts.model_dump_json(), "--model-settings", ms.model_dump_json(), "--checkpoint-minutes", "0"]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")}
    proc = subprocess.Popen([sys.executable, "-m", "oedal", *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 60
        while not ck.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        proc.send_signal(signal.SIGTERM)
        log_text = proc.communicate(timeout=60)[0]
    finally:
        proc.kill()
    assert proc.returncode == 143, log_text
    assert "interrupted by SIGTERM" in log_text and ck.exists() and not out.exists()
    # a checkpoint of other settings is refused (exit 2) unless --restart
    assert main(args + ["--epochs", "2", "--seed", "9", "--no-checkpoint"]) == 0 and ck.exists()  # left alone
    out.unlink()
    assert main(args + ["--seed", "9"]) == 2 and ck.exists() and not out.exists()
    with caplog.at_level("INFO", logger="oedal.gmnn.training"):
        assert main(args) == 0
    assert "RESUMING training from checkpoint" in caplog.text
    assert out.exists() and not ck.exists()  # the checkpoint is removed once the model is written
    straight = train_model(train, valid, ms, ts)
    model = load_model(out)
    for k, v in straight.model.state_dict().items():
        torch.testing.assert_close(model.state_dict()[k], v, rtol=1e-12, atol=0)
    assert len(model.meta["history"]) == 20
    assert main(args + ["--epochs", "2", "--restart"]) == 0 and not ck.exists()


def test_cli_train_carries_the_previous_model_over_once_the_campaign_has_stopped(ethanol_structures, tmp_path,
                                                                               caplog):
    """`oedal train --status S --carry-from PREV` (the workflow's train rule): a stopped campaign copies
    PREV byte for byte and trains nothing (the data are not even read); a running one trains."""
    previous, out = tmp_path / "previous.pt", tmp_path / "model.pt"
    previous.write_bytes(b"the previous iteration's model")
    stopped = tmp_path / "stopped.json"
    Status(2, True, "target reached", 20, 5, 0, 25).write(stopped)
    args = ["train", "--train", str(tmp_path / "missing_train.h5"), "--valid", str(tmp_path / "missing_valid.h5"),
            "--out", str(out), "--status", str(stopped)]
    with caplog.at_level("INFO", logger="oedal.campaign.merge"):
        assert main(args + ["--carry-from", str(previous)]) == 0
    assert out.read_bytes() == previous.read_bytes()
    assert "campaign stopped (target reached)" in caplog.text and "instead of training" in caplog.text
    out.unlink()
    assert main(args) == 2 and not out.exists()  # stopped, but nothing to carry over
    assert main(args[:-2] + ["--carry-from", str(previous)]) == 2  # --carry-from needs --status

    train, valid, ms, ts = _tiny(ethanol_structures, epochs=1)
    write_store(tmp_path / "train.h5", train)
    write_store(tmp_path / "valid.h5", valid)
    running = tmp_path / "running.json"
    Status(1, False, None, 20, 5, 0, 25).write(running)
    assert main(["train", "--train", str(tmp_path / "train.h5"), "--valid", str(tmp_path / "valid.h5"),
                 "--out", str(out), "--settings", ts.model_dump_json(), "--model-settings", ms.model_dump_json(),
                 "--status", str(running), "--carry-from", str(previous)]) == 0
    assert len(load_model(out).meta["history"]) == 1
