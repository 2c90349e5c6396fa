"""`oedal score` + `oedal select` on tiny real data (a tiny model trained briefly on 50 ethanol frames)."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from oedal.cli import main
from oedal.data.store import read_store, write_store
from oedal.gmnn.kernels import using


@pytest.fixture(scope="session")
def tiny_campaign(tmp_path_factory, ethanol_structures):
    from oedal.gmnn.model import save_model
    from oedal.settings import ModelSettings, TrainingSettings
    from oedal.gmnn.training import train_model

    root = tmp_path_factory.mktemp("oed_cli")
    s = ethanol_structures
    train, valid, pool = s.subset(np.arange(50)), s.subset(np.arange(50, 70)), s.subset(np.arange(70, 190))
    write_store(root / "train.h5", train)
    write_store(root / "pool.h5", pool.without_labels())
    ms = ModelSettings.model_validate({"hidden": [32, 16], "descriptor": {"r_cut": 4.0, "n_radial": 3}})
    models = []
    for seed in (0, 1):
        ts = TrainingSettings(epochs=3, batch_size=16, seed=seed, device="cpu", patience=5)
        path = root / f"model{seed}.pt"
        save_model(train_model(train, valid, ms, ts, progress=False).model, path)
        models.append(path)
    return root, models


def _scores(path):
    with h5py.File(path, "r") as h5:
        return {k: h5[k][()] for k in h5.keys()}, dict(h5.attrs)


@pytest.mark.parametrize("strategy", ["qs1", "qs2", "qs3"])
def test_score_and_greedy_select(tiny_campaign, strategy):
    root, models = tiny_campaign
    out = root / f"scores_{strategy}.h5"
    rc = main(["score", "--model", str(models[0]), "--train", str(root / "train.h5"), "--pool",
               str(root / "pool.h5"), "--out", str(out), "--strategy", strategy, "--save-sensitivities",
               "--threads", "2"])
    assert rc == 0
    data, attrs = _scores(out)
    assert attrs["strategy"] == strategy and attrs["n_train"] == 50 and attrs["d"] == 16
    np.testing.assert_array_equal(data["id"], np.arange(70, 190))
    assert np.all(data["score"] >= 0) and (strategy == "qs3" or np.all(data["score"] < 1))
    np.testing.assert_allclose(data["informativeness"], data["score"] / attrs["threshold"])
    assert attrs["threshold"] == pytest.approx(np.median(data["train_score"]))
    assert data["g_train"].shape == (50, 16) and data["g_pool"].shape == (120, 16)
    sel = root / f"sel_{strategy}.h5"
    assert main(["select", "--scores", str(out), "--pool", str(root / "pool.h5"), "--out", str(sel),
                 "--method", "greedy", "--fraction", "0.1"]) == 0
    picked = read_store(sel)
    assert len(picked) == 5 and not picked.has_labels
    assert set(picked.ids.tolist()) <= set(range(70, 190))
    with h5py.File(sel, "r") as h5:
        assert list(h5.attrs["selected_ids"] if not isinstance(h5.attrs["selected_ids"], str) else
                    __import__("json").loads(h5.attrs["selected_ids"])) == picked.ids.tolist()


def test_qbc_top_random_and_exclusion(tiny_campaign):
    root, models = tiny_campaign
    out = root / "scores_qbc.h5"
    assert main(["score", "--model", str(models[0]), "--model", str(models[1]), "--train", str(root / "train.h5"),
                 "--pool", str(root / "pool.h5"), "--out", str(out), "--strategy", "qbc"]) == 0
    data, attrs = _scores(out)
    np.testing.assert_allclose(data["score"], data["energy_std"])
    assert np.all(data["force_std"] > 0)
    first = root / "sel_qbc.h5"
    assert main(["select", "--scores", str(out), "--pool", str(root / "pool.h5"), "--out", str(first),
                 "--method", "qbc", "--n", "4"]) == 0
    top = np.argsort(-data["score"], kind="stable")[:4]
    assert read_store(first).ids.tolist() == data["id"][top].tolist()
    again = root / "sel_random.h5"
    assert main(["select", "--scores", str(out), "--pool", str(root / "pool.h5"), "--out", str(again),
                 "--method", "random", "--n", "6", "--seed", "3", "--exclude", str(first)]) == 0
    assert not set(read_store(again).ids.tolist()) & set(read_store(first).ids.tolist())


def test_bad_input_exits_2(tiny_campaign, tmp_path, capsys):
    root, models = tiny_campaign
    base = ["score", "--model", str(models[0]), "--train", str(root / "train.h5"), "--pool", str(root / "pool.h5"),
            "--out", str(tmp_path / "s.h5")]
    assert main(base[:2] + [str(tmp_path / "missing.pt")] + base[3:]) == 2
    assert main(base + ["--strategy", "qbc"]) == 2  # qbc needs two models
    assert main(base + ["--settings", '{"bogus": 1}']) == 2
    (tmp_path / "junk.h5").write_text("not hdf5")
    assert main(["select", "--scores", str(tmp_path / "junk.h5"), "--pool", str(root / "pool.h5"),
                 "--out", str(tmp_path / "x.h5"), "--n", "2"]) == 2
    assert "error" in capsys.readouterr().err
    assert not (tmp_path / "s.h5").exists()


def test_random_without_scores(tiny_campaign, tmp_path, capsys):
    """--method random needs no scores file: pool ids from POOL.h5, training set excluded by --exclude;
    the picks equal those made with a scores file of the same pool and training set."""
    import json
    import subprocess
    import sys

    root, models = tiny_campaign
    pool, train = str(root / "pool.h5"), str(root / "train.h5")
    # a pool that contains training ids too, written in another order: they are never picked
    full = read_store(train).without_labels()
    from oedal.data.structures import Structures

    mixed = Structures.concatenate([read_store(pool), full])
    mixed = mixed.subset(np.random.default_rng(0).permutation(len(mixed)))
    write_store(tmp_path / "mixed.h5", mixed)
    base = ["select", "--method", "random", "--n", "7", "--seed", "11", "--exclude", train]
    out_a, out_b = tmp_path / "a.h5", tmp_path / "b.h5"
    assert main(base + ["--pool", pool, "--out", str(out_a)]) == 0
    assert main(base + ["--pool", str(tmp_path / "mixed.h5"), "--out", str(out_b)]) == 0
    a, b = read_store(out_a), read_store(out_b)
    assert a.ids.tolist() == b.ids.tolist() and len(a) == 7 and not a.has_labels
    assert not set(a.ids.tolist()) & set(range(50))
    with h5py.File(out_a, "r") as h5:
        attrs = dict(h5.attrs)
    ids_attr = attrs["selected_ids"]
    ids_attr = json.loads(ids_attr) if isinstance(ids_attr, str) else list(ids_attr)
    assert ids_attr == a.ids.tolist() and attrs["selection_method"] == "random"
    scores_attr = attrs["selected_scores"]
    scores_attr = json.loads(scores_attr) if isinstance(scores_attr, str) else list(scores_attr)
    assert len(scores_attr) == 7 and np.all(np.isnan(scores_attr))
    # the same picks as with a scores file (its train_id excluded instead of --exclude)
    scores = root / "scores_qs1_random.h5"
    assert main(["score", "--model", str(models[0]), "--train", train, "--pool", pool, "--out", str(scores),
                 "--strategy", "qs1"]) == 0
    assert main(["select", "--scores", str(scores), "--pool", pool, "--out", str(tmp_path / "c.h5"),
                 "--method", "random", "--n", "7", "--seed", "11"]) == 0
    assert read_store(tmp_path / "c.h5").ids.tolist() == a.ids.tolist()
    # fraction needs --n-train without scores; other methods need scores
    assert main(["select", "--method", "random", "--fraction", "0.1", "--pool", pool, "--out",
                 str(tmp_path / "d.h5")]) == 2
    assert main(["select", "--method", "random", "--fraction", "0.1", "--n-train", "50", "--pool", pool,
                 "--exclude", train, "--out", str(tmp_path / "d.h5")]) == 0
    assert len(read_store(tmp_path / "d.h5")) == 5
    assert main(["select", "--method", "greedy", "--n", "2", "--pool", pool, "--out", str(tmp_path / "e.h5")]) == 2
    assert "needs a scores file" in capsys.readouterr().err
    assert not (tmp_path / "e.h5").exists()
    # and a random/top selection process never imports torch
    code = ("import sys; from oedal.cli import main; "
            f"rc = main(['select', '--method', 'random', '--n', '3', '--pool', {pool!r}, '--out', {str(tmp_path / 'f.h5')!r}]); "
            "assert rc == 0; assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_no_projections_keeps_scores_and_top_but_greedy_says_why(tiny_campaign, tmp_path, capsys):
    """--no-projections drops u_forces (the large QS2 rows) only: same scores, `top` works, greedy
    stops with a message naming the missing dataset."""
    root, models = tiny_campaign
    full, lean = tmp_path / "full.h5", tmp_path / "lean.h5"
    base = ["score", "--model", str(models[0]), "--train", str(root / "train.h5"), "--pool", str(root / "pool.h5"),
            "--strategy", "qs2"]
    assert main(base + ["--out", str(full)]) == 0
    assert main(base + ["--out", str(lean), "--no-projections"]) == 0
    (a, _), (b, _) = _scores(full), _scores(lean)
    assert "u_forces" in a and "u_forces" not in b and "u_forces_counts" not in b
    np.testing.assert_array_equal(a["score"], b["score"])
    sel = ["select", "--scores", str(lean), "--pool", str(root / "pool.h5"), "--n", "3"]
    assert main(sel + ["--out", str(tmp_path / "top.h5"), "--method", "top"]) == 0
    assert main(sel + ["--out", str(tmp_path / "greedy.h5"), "--method", "greedy"]) == 2
    assert "u_forces" in capsys.readouterr().err


def test_kernel_backends_give_the_same_scores(tiny_campaign, tmp_path, monkeypatch, capsys):
    """`oedal --kernels torch|numba score` (QS3: energy and forces) agree to float32 rounding; a bad
    OEDAL_KERNELS exits 2 with a message that names it."""
    root, models = tiny_campaign
    args = ["score", "--model", str(models[0]), "--train", str(root / "train.h5"), "--pool", str(root / "pool.h5"),
            "--strategy", "qs3", "--threads", "2"]
    scores = {}
    for kind in ("torch", "numba"):
        with using("auto"):  # main() chooses the backend of the process: restored after
            assert main(["--kernels", kind, *args, "--out", str(tmp_path / f"{kind}.h5")]) == 0
        scores[kind] = _scores(tmp_path / f"{kind}.h5")[0]
    for key in ("score", "train_score"):
        np.testing.assert_allclose(scores["torch"][key], scores["numba"][key], rtol=1e-4)
    monkeypatch.setenv("OEDAL_KERNELS", "cuda")
    with using("auto"):
        assert main([*args, "--out", str(tmp_path / "bad.h5")]) == 2
    assert "OEDAL_KERNELS: unknown kernel backend 'cuda'" in capsys.readouterr().err


@pytest.mark.parametrize("method", ["top", "greedy", "random"])
def test_stores_from_two_files_with_clashing_ids_select_by_content(tiny_campaign, tmp_path, method, caplog):
    """A pool imported from another file than the training set reuses its row ids 0..29 for other
    structures, and holds 10 training structures under new ids: every new structure can be picked, no
    training structure is, and a warning names both files."""
    from oedal.data.structures import Structures

    root, models = tiny_campaign
    train = read_store(root / "train.h5")
    new = read_store(root / "pool.h5").subset(np.arange(30))
    new.ids = np.arange(30)  # the row numbers of the other file: they clash with training ids 0..29
    again = train.subset(np.arange(10)).without_labels()
    again.ids = np.arange(200, 210)
    write_store(tmp_path / "pool.h5", Structures.concatenate([new, again]))
    scores = tmp_path / "scores.h5"
    assert main(["score", "--model", str(models[0]), "--train", str(root / "train.h5"), "--pool",
                 str(tmp_path / "pool.h5"), "--out", str(scores), "--strategy", "qs1"]) == 0
    select = ["select", "--pool", str(tmp_path / "pool.h5"), "--out", str(tmp_path / "sel.h5"), "--method", method,
              "--n", "30"]
    select += ["--scores", str(scores)] if method != "random" else ["--exclude", str(root / "train.h5")]
    caplog.clear()
    assert main(select) == 0
    assert sorted(read_store(tmp_path / "sel.h5").ids.tolist()) == list(range(30))
    warning = " ".join(r.getMessage() for r in caplog.records if r.levelname == "WARNING")
    assert str(tmp_path / "pool.h5") in warning and str(root / "train.h5") in warning and "by content" in warning
