"""Inputs that still crashed a step and faults beyond bad input (issue 21): a malformed shard, a model with NaN
weights or weights that do not fit its settings, exploration settings out of physics, a byte-damaged store,
a full disk while a model or a store is written, two working directories on one results folder."""

from __future__ import annotations

import json
import re
import os
import resource
import signal
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from oedal.cli import main
from oedal.data.store import read_store, write_store
from oedal.errors import InputError
from oedal.files import hold_folder
from oedal.gmnn.model import load_model

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def files(tmp_path_factory, ethanol_structures):
    """train/valid/test/pool stores of ethanol and a small trained model (oedal train, 3 epochs)."""
    root = tmp_path_factory.mktemp("faults")
    s = ethanol_structures
    write_store(root / "train.h5", s.subset(np.arange(30)))
    write_store(root / "valid.h5", s.subset(np.arange(30, 40)))
    write_store(root / "test.h5", s.subset(np.arange(40, 50)))
    write_store(root / "pool.h5", s.subset(np.arange(50, 60)).without_labels())
    assert main(["train", "--train", str(root / "train.h5"), "--valid", str(root / "valid.h5"), "--out",
                 str(root / "model.pt"), "--settings", json.dumps({"epochs": 3, "batch_size": 8}), "--model-settings",
                 json.dumps({"hidden": [8, 8], "descriptor": {"r_cut": 4.0, "n_radial": 2, "n_basis": 4}}),
                 "--threads", "1"]) == 0
    return root


def one_line(capsys, *must: str) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    for text in must:
        assert text in err, err
    return err


# ---- oedal label reads a shard with the suspicion of any input ---------------------------------------


def _rewrite(path: Path, **datasets) -> None:
    with h5py.File(path, "a") as f:
        for name, data in datasets.items():
            del f[name]
            f[name] = data


@pytest.mark.parametrize("damage", ["positions (n, 4)", "a structure of 0 atoms"])
def test_label_refuses_a_malformed_shard_before_any_oracle_call(files, tmp_path, capsys, damage):
    shard = tmp_path / "shard.h5"
    write_store(shard, read_store(files / "pool.h5"))
    with h5py.File(shard) as f:
        pos, n_atoms, numbers = f["positions"][()], f["n_atoms"][()], f["numbers"][()]
    if damage == "positions (n, 4)":  # 90 rows of 3 read back as 67.5 rows of 4: the shape says so
        _rewrite(shard, positions=np.concatenate([pos, np.zeros((len(pos), 1))], axis=1))
        expected = "positions has shape (90, 4), expected (90, 3)"
    else:
        n_atoms[3] = 0
        keep = np.r_[0:27, 36:90]
        _rewrite(shard, n_atoms=n_atoms, positions=pos[keep], numbers=numbers[keep])
        expected = "structure 3 (id 53) has 0 atoms"
    cache = tmp_path / "labels.sqlite"
    assert main(["label", "--in", str(shard), "--out", str(tmp_path / "l.h5"), "--failed", str(tmp_path / "f.h5"),
                 "--cache", str(cache), "--oracle-settings", '{"kind": "emt"}']) == 2
    one_line(capsys, str(shard), expected)
    assert not cache.exists() and not (tmp_path / "l.h5").exists()


# ---- a model file is read with the same suspicion ----------------------------------------------------


def _tampered(files: Path, tmp_path: Path, how: str) -> Path:
    payload = torch.load(files / "model.pt", weights_only=True)
    state = payload["state_dict"]
    if how == "NaN weights":
        state["output.weight"][0, 3] = float("nan")
    else:  # a layer of another width than the settings say
        state["mlp.0.weight"] = torch.zeros(9, state["mlp.0.weight"].shape[1])
    path = tmp_path / "tampered.pt"
    torch.save(payload, path)
    return path


@pytest.mark.parametrize("how, expected", [("NaN weights", "weights not finite (NaN or inf) in output.weight"),
                                           ("other shapes", "weights do not fit the model settings")])
def test_a_model_with_bad_weights_is_refused_by_every_entry_point(files, tmp_path, capsys, how, expected):
    path = _tampered(files, tmp_path, how)
    assert main(["evaluate", "--model", str(path), "--data", str(files / "test.h5"), "--out",
                 str(tmp_path / "m.json")]) == 2
    one_line(capsys, str(path), expected)
    assert main(["score", "--model", str(path), "--train", str(files / "train.h5"), "--pool", str(files / "pool.h5"),
                 "--out", str(tmp_path / "s.h5")]) == 2
    one_line(capsys, expected)
    with pytest.raises(InputError, match=expected.split(" (")[0]):
        load_model(path)
    assert not (tmp_path / "m.json").exists() and not (tmp_path / "s.h5").exists()


# ---- exploration settings within physics ---------------------------------------------------------------


@pytest.mark.parametrize("bad, key", [({"temperatures": [300.0, -5.0]}, "temperatures.1"),
                                      ({"temperatures": [0.0]}, "temperatures.0"),
                                      ({"temperatures": [float("nan")]}, "temperatures.0"),
                                      ({"temperatures": [1e7]}, "temperatures.0"),
                                      ({"timestep": 100.0}, "timestep"), ({"timestep": float("inf")}, "timestep"),
                                      ({"initial_temperature": -1.0}, "initial_temperature"),
                                      ({"pressure": float("nan")}, "pressure")])
def test_exploration_settings_out_of_physics_are_refused_naming_the_key(files, tmp_path, capsys, bad, key):
    from oedal.campaign.plan import validate_campaign
    from oedal.errors import SettingsError

    argv = ["explore", "--model", str(files / "model.pt"), "--settings", json.dumps(bad), "--candidates",
            str(tmp_path / "c.h5"), "--walkers", str(tmp_path / "w.json"), "--seed", "1"]
    assert main(argv) == 2
    assert re.search(rf"\b{re.escape(key)}[:.]", capsys.readouterr().err)  # pressure.float: a union's branch
    with pytest.raises(SettingsError, match=rf"explore\.{key}"):
        validate_campaign({"explore": bad})
    assert not (tmp_path / "c.h5").exists()


# ---- a damaged store ----------------------------------------------------------------------------------


def _damage(path: Path, dataset: str) -> None:
    """Overwrite 16 bytes in the middle of the first chunk of ``dataset`` (its data, not the file's metadata)."""
    with h5py.File(path) as f:
        info = f[dataset].id.get_chunk_info(0)
    with open(path, "r+b") as fh:
        fh.seek(info.byte_offset + info.size // 2)
        fh.write(bytes(range(200, 216)))


@pytest.mark.parametrize("dataset", ["positions", "forces", "energy"])
def test_a_byte_damaged_store_is_one_line_for_train_evaluate_and_label(files, tmp_path, capsys, dataset):
    bad = tmp_path / "bad.h5"
    write_store(bad, read_store(files / "train.h5"))
    _damage(bad, dataset)
    commands = {
        "train": ["train", "--train", str(bad), "--valid", str(files / "valid.h5"), "--out", str(tmp_path / "m.pt"),
                  "--epochs", "1"],
        "evaluate": ["evaluate", "--model", str(files / "model.pt"), "--data", str(bad), "--out",
                     str(tmp_path / "m.json")],
        "label": ["label", "--in", str(bad), "--out", str(tmp_path / "l.h5"), "--failed", str(tmp_path / "f.h5"),
                  "--oracle-settings", '{"kind": "emt"}'],
    }
    for name, argv in commands.items():
        if name == "label" and dataset != "positions":
            continue  # a shard's labels are not read
        assert main(argv) == 2, name
        one_line(capsys, str(bad), "the file is damaged")
    assert not any((tmp_path / n).exists() for n in ("m.pt", "m.json", "l.h5"))


# ---- a full disk while a model or a store is written -----------------------------------------------------


def _limit_file_size(limit: int):
    def preexec():  # EFBIG instead of SIGXFSZ: the write fails as on a full disk, the process lives
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return preexec


@pytest.mark.parametrize("what", ["model", "store", "scores"])
def test_a_full_disk_leaves_the_previous_file_and_says_so_in_one_line(files, tmp_path, what, shared_data):
    """The previous file at the output path stays byte for byte; no temporary file is left; one line, exit 2
    (no crash at exit: HDF5 left half-closed by a failed write would segfault during teardown)."""
    out = tmp_path / {"model": "model.pt", "store": "data.h5", "scores": "scores.h5"}[what]
    out.write_bytes(b"the previous file")
    argv = {"model": ["train", "--train", str(files / "train.h5"), "--valid", str(files / "valid.h5"), "--out",
                      str(out), "--epochs", "1", "--no-checkpoint", "--model-settings",
                      json.dumps({"hidden": [64, 64], "descriptor": {"r_cut": 4.0, "n_radial": 2, "n_basis": 4}})],
            "store": ["import", str(shared_data / "gmnn_ethanol" / "ethanol_1000K.npz"), "--out", str(out),
                      "--limit", "400"],
            "scores": ["score", "--model", str(files / "model.pt"), "--train", str(files / "train.h5"), "--pool",
                       str(files / "pool.h5"), "--out", str(out), "--strategy", "qs2"]}[what]
    env = {**os.environ, "OEDAL_KERNELS": "torch"}  # (numba writes its compile cache on a fresh clone: below)
    run = subprocess.run([sys.executable, "-m", "oedal", *argv], capture_output=True, text=True, env=env,
                         preexec_fn=_limit_file_size(20_000))
    err = [line for line in run.stderr.splitlines() if ": error: " in line]
    assert run.returncode == 2 and "Traceback" not in run.stderr, run.stderr[-2000:]
    assert len(err) == 1 and "cannot be written (File too large)" in err[0], run.stderr[-2000:]
    assert out.read_bytes() == b"the previous file" and sorted(p.name for p in tmp_path.iterdir()) == [out.name]


# ---- one Snakemake run at a time on a campaign's results -----------------------------------------------


def test_a_second_working_directory_on_the_same_results_stops_before_any_job(smk_env, tmp_path):
    """A Snakemake run from another working directory holds the campaign folder (here a process standing in
    for it): this run stops before any job, naming the holder; nothing is written into the results."""
    results = tmp_path / "results"
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from oedal.files import hold_folder; "
                               f"hold_folder({str(results / 'tiny')!r}, 'the Snakemake run in /other/checkout'); "
                               "print('held', flush=True); time.sleep(120)"], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        run = subprocess.run([sys.executable, "-m", "snakemake", "--cores", "1", "--configfile", "config/tiny.yaml",
                              "--config", f"results_dir={results}"], cwd=ROOT, capture_output=True, text=True,
                             env=smk_env, timeout=300)
    finally:
        holder.kill()
        holder.wait()
    assert run.returncode != 0
    assert "is in use by the Snakemake run in /other/checkout" in run.stdout + run.stderr
    assert sorted(os.listdir(results / "tiny")) == [".oedal-run.lock"]
    hold_folder(results / "tiny", "this test")  # free again once its holder ended
    child = subprocess.run([sys.executable, "-c", "from oedal.files import hold_folder; "
                            f"hold_folder({str(results / 'tiny')!r}, 'x')"], capture_output=True, text=True)
    assert child.returncode != 0 and "is in use by this test" in child.stderr


def test_a_full_disk_anywhere_else_is_one_line_too(tmp_path):
    """A write outside oedal's own files fails for lack of space (here numba's compile cache, which a fresh
    clone writes on first use, refused by a file size limit of 0): one line, exit 2, no traceback."""
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path / "numba-cache"), "OEDAL_KERNELS": "numba"}
    code = ("import sys, errno; from oedal.cli import main; import oedal.cli.data as d\n"
            "def boom(args): raise OSError(errno.ENOSPC, 'No space left on device', 'numba/cache/x.nbi')\n"
            "d.run_import = boom\n"
            "sys.exit(main(['import', 'x.npz', '--out', 'y.h5']))")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert run.returncode == 2 and "Traceback" not in run.stderr, run.stderr
    assert run.stderr.strip().splitlines() == ["oedal import: error: a file could not be written (No space left on "
                                               "device: [Errno 28] No space left on device: 'numba/cache/x.nbi'); "
                                               "free space (or raise the file size limit) and run again"]
