"""Where jobs run: the device of a GPU job that finds no GPU, and (on a machine with CUDA) train →
score → select → evaluate on the GPU (what resources.use_gpu asks for)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from oedal.cli import main
from oedal.device import resolve_device


def test_a_gpu_asked_for_where_there_is_none_gives_one_warning_and_the_cpu(monkeypatch, caplog):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with caplog.at_level("WARNING", logger="oedal.device"):
        assert resolve_device("cuda") == torch.device("cpu")
    assert len(caplog.records) == 1 and "no CUDA device" in caplog.text and "CPU" in caplog.text
    assert resolve_device("auto") == torch.device("cpu")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_train_score_select_evaluate_on_cuda(ethanol_structures, tmp_path, caplog):
    """The CLI steps of one iteration with --device cuda (what resources.use_gpu asks for): no CPU
    fallback, and the GPU's scores agree with the CPU's (numba route) for the same model."""
    import h5py

    from oedal.data.store import write_store
    from oedal.gmnn.model import load_model

    s = ethanol_structures
    write_store(tmp_path / "train.h5", s.subset(np.arange(40)))
    write_store(tmp_path / "valid.h5", s.subset(np.arange(40, 60)))
    write_store(tmp_path / "pool.h5", s.subset(np.arange(60, 160)).without_labels())
    model = tmp_path / "model.pt"
    ms = json.dumps({"descriptor": {"n_radial": 3, "n_basis": 5, "r_cut": 4.0}, "hidden": [32, 16]})
    with caplog.at_level("WARNING"):
        assert main(["train", "--train", str(tmp_path / "train.h5"), "--valid", str(tmp_path / "valid.h5"),
                     "--out", str(model), "--epochs", "5", "--settings", '{"batch_size": 8}',
                     "--model-settings", ms, "--device", "cuda"]) == 0
        assert load_model(model).meta["training_settings"]["device"] == "cuda"
        common = ["--model", str(model), "--train", str(tmp_path / "train.h5"), "--pool", str(tmp_path / "pool.h5")]
        for strategy in ("qs1", "qs2"):
            for device in ("cuda", "cpu"):
                out = tmp_path / f"{strategy}_{device}.h5"
                assert main(["score", *common, "--out", str(out), "--strategy", strategy, "--device", device]) == 0
            with h5py.File(tmp_path / f"{strategy}_cuda.h5") as a, h5py.File(tmp_path / f"{strategy}_cpu.h5") as b:
                np.testing.assert_allclose(a["score"][()], b["score"][()], rtol=1e-2, atol=1e-4)
        assert main(["select", "--scores", str(tmp_path / "qs2_cuda.h5"), "--pool", str(tmp_path / "pool.h5"),
                     "--out", str(tmp_path / "selected.h5"), "--method", "greedy", "--n", "5"]) == 0
        assert main(["evaluate", "--model", str(model), "--data", str(tmp_path / "valid.h5"),
                     "--out", str(tmp_path / "metrics.json"), "--device", "cuda"]) == 0
    assert "no CUDA device" not in caplog.text
    from oedal.data.store import read_store

    assert len(read_store(tmp_path / "selected.h5")) == 5
    assert np.isfinite(json.loads((tmp_path / "metrics.json").read_text())["forces_mae_kcal/mol/A"])
