"""Every step checks what it reads (issue 12): stores are validated before any work, outputs are
checked before any work, training stops on a non-finite loss, model and checkpoint files are data
(a crafted pickle is refused without running it), and the calculator refuses NaN positions."""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from oedal.cli import main
from oedal.data import validate
from oedal.data.store import read_store, write_store
from oedal.data.structures import Structures
from oedal.errors import InputError, OutputError
from oedal.files import check_outputs
from oedal.gmnn.model import GMNN, UnsafeFile, save_model
from oedal.settings import DescriptorSettings, ModelSettings, TrainingSettings

BAD = 5  # index of the broken structure in every broken store
LABEL_CASES = ["nan_energy", "inf_force", "nan_position", "zero_atoms"]
GEOMETRY_CASES = ["nan_position", "zero_atoms"]  # what an unlabeled pool can get wrong


def broken(s: Structures, case: str, k: int = BAD) -> Structures:
    """A copy of ``s`` with structure ``k`` broken: a NaN energy, an inf force component, a NaN
    position, or no atoms at all (its atom rows removed)."""
    s = s.subset(np.arange(len(s)))
    a, b = int(s.offsets[k]), int(s.offsets[k + 1])
    if case == "nan_energy":
        s.energy[k] = np.nan
    elif case == "inf_force":
        s.forces[a + 2, 1] = np.inf
    elif case == "nan_position":
        s.positions[a + 1, 0] = np.nan
    elif case == "zero_atoms":
        keep = np.r_[0:a, b : len(s.numbers)]
        n_atoms = s.n_atoms.copy()
        n_atoms[k] = 0
        s = Structures(positions=s.positions[keep], numbers=s.numbers[keep], n_atoms=n_atoms, cell=s.cell,
                       pbc=s.pbc, ids=s.ids, energy=s.energy,
                       forces=None if s.forces is None else s.forces[keep])
    else:
        raise ValueError(case)
    return s


@pytest.fixture(scope="module")
def data(tmp_path_factory, ethanol_structures):
    """Good stores (train 40, valid 20, pool 30 unlabeled, test 20) and an untrained small model."""
    root = tmp_path_factory.mktemp("validation")
    s = ethanol_structures
    sets = {"train": s.subset(np.arange(40)), "valid": s.subset(np.arange(40, 60)),
            "pool": s.subset(np.arange(60, 90)).without_labels(), "test": s.subset(np.arange(90, 110))}
    for name, structures in sets.items():
        write_store(root / f"{name}.h5", structures)
    torch.manual_seed(0)
    ms = ModelSettings(descriptor=DescriptorSettings(r_cut=4.0, n_radial=2, n_basis=4), hidden=[8, 8])
    model = GMNN(ms, [1, 6, 8])
    model.init_scale_shift(sets["train"].numbers, sets["train"].n_atoms, sets["train"].energy)
    save_model(model, root / "model.pt")
    return root, sets, ms


def _one_line_error(capsys, command: str, path: Path, index: int, ident: int) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert err.startswith(f"oedal {command}: error: {path}: structure {index} (id {ident})"), err
    return err


def _no_work(monkeypatch, *targets: str) -> None:
    """Any call of these functions fails the test: the checks must come before any work."""
    def forbidden(*args, **kwargs):
        raise AssertionError("work started before the inputs were checked")

    for target in targets:
        module, name = target.rsplit(".", 1)
        monkeypatch.setattr(__import__(module, fromlist=[name]), name, forbidden)


# ------------------------------------------------------------------------------------------------
# check_store: the importer's checks on a whole store, streamed
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", LABEL_CASES)
def test_check_store_names_file_global_index_and_id_across_chunks(data, tmp_path, monkeypatch, case):
    _, sets, _ = data
    train = sets["train"]
    monkeypatch.setattr(validate, "CHECK_STRUCTURES", 4)  # ten chunks: the index must be the file's
    monkeypatch.setattr(validate, "CHECK_ATOMS", 30)
    path = tmp_path / "bad.h5"
    write_store(path, broken(train, case, k=13))
    with pytest.raises(InputError) as err:
        validate.check_store(path, labels=True, forces=True)
    assert str(err.value).startswith(f"{path}: structure 13 (id {train.ids[13]})"), err.value
    write_store(tmp_path / "good.h5", train)
    assert validate.check_store(tmp_path / "good.h5", labels=True, forces=True) == len(train)


def test_check_store_labels_elements_and_distances(data, tmp_path):
    root, sets, _ = data
    with pytest.raises(InputError, match="missing labels"):
        validate.check_store(root / "pool.h5", labels=True)
    pool = sets["pool"]
    fluorine = pool.subset(np.arange(len(pool)))
    fluorine.numbers[int(fluorine.offsets[7]) + 3] = 9
    write_store(tmp_path / "f.h5", fluorine)
    assert validate.check_store(tmp_path / "f.h5") == len(pool)  # any element, without a model
    with pytest.raises(InputError, match=r"structure 7 .*unknown element F \(Z=9\) at atom 3; known: H, C, O"):
        validate.check_store(tmp_path / "f.h5", known_numbers=[1, 6, 8])
    close = pool.subset(np.arange(len(pool)))
    a = int(close.offsets[11])
    close.positions[a + 4] = close.positions[a + 2] + [0.2, 0.0, 0.0]
    write_store(tmp_path / "close.h5", close)
    with pytest.raises(InputError, match=r"structure 11 .*atoms 2 and 4 are 0.200 Å apart"):
        validate.check_store(tmp_path / "close.h5")
    assert validate.check_store(tmp_path / "close.h5", min_distance=0.1) == len(pool)


def test_chunk_bounds_cap_atoms_and_structures():
    offsets = np.cumsum([0, 3, 3, 50, 0, 2, 2, 2, 2])
    bounds = validate.chunk_bounds(offsets, max_atoms=6, max_structures=3)
    assert bounds == [(0, 2), (2, 3), (3, 6), (6, 8)]
    assert validate.chunk_bounds(offsets[:1], 6, 3) == []


@pytest.mark.parametrize("periodic", [False, True])
def test_fast_nearest_distance_equals_the_pair_list(periodic):
    rng = np.random.default_rng(3)
    r = rng.random((40, 7, 3)) * 3.0  # (m, k, 3) Å
    cell = np.eye(3) * 3.2 + 0.3 * rng.random((40, 3, 3)) if periodic else None
    d2, _, _ = validate._pair_d2(r, cell)
    np.testing.assert_allclose(validate._nearest_d2(r, cell), d2.min(axis=1), rtol=1e-12)


# ------------------------------------------------------------------------------------------------
# The steps: bad input exits 2 before any work, with one line naming file, index and id
# ------------------------------------------------------------------------------------------------


def _with_a_broken(data, tmp_path: Path, which: str, case: str) -> tuple[Path, dict[str, Path]]:
    """The good stores by name, with store ``which`` replaced by a broken copy (its path first)."""
    root, sets, _ = data
    bad = tmp_path / f"{which}.h5"
    write_store(bad, broken(sets[which], case))
    return bad, {**{name: root / f"{name}.h5" for name in sets}, which: bad}


@pytest.mark.parametrize("which", ["train", "valid"])
@pytest.mark.parametrize("case", LABEL_CASES)
def test_train_refuses_a_bad_store_before_training(data, tmp_path, monkeypatch, capsys, case, which):
    _, sets, ms = data
    bad, stores = _with_a_broken(data, tmp_path, which, case)
    _no_work(monkeypatch, "oedal.gmnn.training.train_model")
    out = tmp_path / "model.pt"
    rc = main(["train", "--train", str(stores["train"]), "--valid", str(stores["valid"]), "--out", str(out),
               "--model-settings", ms.model_dump_json(), "--epochs", "1"])
    assert rc == 2
    _one_line_error(capsys, "train", bad, BAD, int(sets[which].ids[BAD]))
    assert not out.exists() and not out.with_name("model.pt.ckpt").exists()


@pytest.mark.parametrize("case", LABEL_CASES)
def test_evaluate_refuses_a_bad_store(data, tmp_path, monkeypatch, capsys, case):
    root, sets, _ = data
    bad = tmp_path / "test.h5"
    write_store(bad, broken(sets["test"], case))
    _no_work(monkeypatch, "oedal.gmnn.evaluation.error_metrics")
    out = tmp_path / "metrics.json"
    assert main(["evaluate", "--model", str(root / "model.pt"), "--data", str(bad), "--out", str(out)]) == 2
    _one_line_error(capsys, "evaluate", bad, BAD, int(sets["test"].ids[BAD]))
    assert not out.exists()


def test_evaluate_refuses_elements_the_model_does_not_know(data, tmp_path, capsys):
    root, sets, _ = data
    test = sets["test"].subset(np.arange(20))
    test.numbers[int(test.offsets[BAD])] = 7
    write_store(tmp_path / "test.h5", test)
    assert main(["evaluate", "--model", str(root / "model.pt"), "--data", str(tmp_path / "test.h5"),
                 "--out", str(tmp_path / "m.json")]) == 2
    assert "unknown element N (Z=7)" in _one_line_error(capsys, "evaluate", tmp_path / "test.h5", BAD,
                                                        int(test.ids[BAD]))


@pytest.mark.parametrize("which, case", [("pool", c) for c in GEOMETRY_CASES] + [("train", c) for c in LABEL_CASES])
def test_score_refuses_a_bad_store_so_nothing_bad_is_ranked(data, tmp_path, monkeypatch, capsys, which, case):
    root, sets, _ = data
    bad, stores = _with_a_broken(data, tmp_path, which, case)
    _no_work(monkeypatch, "oedal.oed.scoring.score_pool")
    out = tmp_path / "scores.h5"
    assert main(["score", "--model", str(root / "model.pt"), "--train", str(stores["train"]), "--pool",
                 str(stores["pool"]), "--out", str(out)]) == 2
    _one_line_error(capsys, "score", bad, BAD, int(sets[which].ids[BAD]))
    assert not out.exists()


@pytest.mark.parametrize("case", GEOMETRY_CASES)
def test_select_never_picks_from_a_bad_pool(data, tmp_path, capsys, case):
    """A pool whose structure 5 has a NaN position (or no atoms) is refused, scored or not."""
    root, sets, _ = data
    scores = tmp_path / "scores.h5"
    assert main(["score", "--model", str(root / "model.pt"), "--train", str(root / "train.h5"), "--pool",
                 str(root / "pool.h5"), "--out", str(scores)]) == 0
    bad = tmp_path / "pool.h5"
    write_store(bad, broken(sets["pool"], case))  # same ids as the scored pool
    ident = int(sets["pool"].ids[BAD])
    out = tmp_path / "selected.h5"
    for extra in (["--scores", str(scores), "--method", "top"], ["--method", "random", "--exclude",
                                                                 str(root / "train.h5")]):
        capsys.readouterr()
        assert main(["select", *extra, "--pool", str(bad), "--out", str(out), "--n", "30"]) == 2
        _one_line_error(capsys, "select", bad, BAD, ident)
        assert not out.exists()


@pytest.mark.parametrize("case", ["inf_force", "close_atoms"])
def test_export_refuses_a_bad_store(data, tmp_path, capsys, case):
    """All the importer's checks, distances included (export skipped those before)."""
    _, sets, _ = data
    bad = tmp_path / "bad.h5"
    if case == "close_atoms":
        s = sets["test"].subset(np.arange(20))
        a = int(s.offsets[BAD])
        s.positions[a + 1] = s.positions[a] + [0.0, 0.3, 0.0]
    else:
        s = broken(sets["test"], case)
    write_store(bad, s)
    assert main(["export", str(bad), "--out", str(tmp_path / "x.extxyz")]) == 2
    _one_line_error(capsys, "export", bad, BAD, int(sets["test"].ids[BAD]))
    assert not (tmp_path / "x.extxyz").exists()
    assert main(["export", str(bad), "--out", str(tmp_path / "x.extxyz"), "--min-distance", "0"]) == (
        2 if case == "inf_force" else 0)


# ------------------------------------------------------------------------------------------------
# Training stops the moment a loss turns non-finite
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("where", ["train", "valid"])
def test_training_stops_on_a_non_finite_loss(data, where):
    """Unchecked data through the Python API: the loss turns inf; training stops at once, naming the
    epoch (and the batch) instead of returning an untrained or NaN model."""
    from oedal.gmnn.training import TrainingDiverged, train_model

    _, sets, ms = data
    train, valid = sets["train"], sets["valid"]
    if where == "train":
        train = broken(train, "inf_force", k=20)
    else:
        valid = broken(valid, "inf_force")
    ts = TrainingSettings(epochs=3, batch_size=8, seed=0, threads=1, device="cpu")
    expected = r"training loss in epoch 1, batch [1-5] of 5 is (inf|nan)" if where == "train" else \
        r"validation loss before the first epoch is (inf|nan)"
    with pytest.raises(TrainingDiverged, match=expected):
        train_model(train, valid, ms, ts, progress=False)


# ------------------------------------------------------------------------------------------------
# Outputs are checked before the work
# ------------------------------------------------------------------------------------------------


@pytest.fixture
def unwritable(tmp_path) -> Path:
    """A folder nobody can create files in: mode 0o555, or, for root (whom mode bits do not stop),
    sysfs."""
    folder = tmp_path / "read-only"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        (folder / "probe").touch()
    except OSError:
        yield folder
    else:
        (folder / "probe").unlink()
        sysfs = Path("/sys/kernel")
        if not sysfs.is_dir():
            pytest.skip("running as root without sysfs: no folder here refuses new files")
        yield sysfs
    folder.chmod(0o755)


def test_check_outputs(tmp_path, unwritable):
    (tmp_path / "a_file").write_text("x")
    (tmp_path / "a_folder").mkdir()
    check_outputs(tmp_path / "new" / "deeper" / "out.h5", None, folders=(tmp_path / "new_dir", None))
    check_outputs(tmp_path / "a_file")  # an existing file is replaced atomically
    cases = [
        ((tmp_path / "a_folder",), (), "is a folder, but a file is to be written there"),
        ((tmp_path / "a_file" / "out.h5",), (), "a_file is a file, not a folder"),
        ((tmp_path / "a_file" / "x" / "out.h5",), (), "a_file is a file, not a folder"),
        ((), (tmp_path / "a_file",), "is a file, but a folder is to be written there"),
        ((unwritable / "out.h5",), (), "no permission to create files in"),
        ((), (unwritable / "iter_001",), "no permission to create files in"),
    ]
    for files, folders, message in cases:
        with pytest.raises(OutputError, match=re.escape(message)):
            check_outputs(*files, folders=folders)
    assert not list(tmp_path.glob("**/.oedal-write-test*"))


@pytest.mark.parametrize("kind", ["folder", "under_a_file", "unwritable"])
def test_train_checks_its_output_before_training(data, tmp_path, monkeypatch, capsys, unwritable, kind):
    root, _, ms = data
    (tmp_path / "a_file").write_text("x")
    out = {"folder": tmp_path, "under_a_file": tmp_path / "a_file" / "model.pt",
           "unwritable": unwritable / "model.pt"}[kind]
    _no_work(monkeypatch, "oedal.gmnn.training.train_model", "oedal.campaign.model_steps.check_store")
    assert main(["train", "--train", str(root / "train.h5"), "--valid", str(root / "valid.h5"), "--out", str(out),
                 "--model-settings", ms.model_dump_json(), "--epochs", "1"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith(f"oedal train: error: {out}"), err


def _a_cache(tmp_path: Path, root: Path) -> Path:
    from oedal.oracles import label_store, oracle_settings

    cache = tmp_path / "labels.sqlite"
    label_store(root / "pool.h5", tmp_path / "labeled.h5", None, oracle_settings(kind="emt"), cache=cache)
    return cache


def test_every_writing_command_checks_its_output_first(data, tmp_path, capsys, shared_data):
    """An existing folder where the output file goes: exit 2 and one line, for every command."""
    root, _, _ = data
    folder = tmp_path / "taken"
    folder.mkdir()
    f = str(folder)
    store = str(root / "train.h5")
    commands = {
        "import": ["import", str(shared_data / "gmnn_ethanol" / "ethanol_1000K.npz"), "--out", f, "--limit", "3"],
        "export": ["export", store, "--out", f],
        "evaluate": ["evaluate", "--model", str(root / "model.pt"), "--data", store, "--out", f],
        "score": ["score", "--model", str(root / "model.pt"), "--train", store, "--pool", str(root / "pool.h5"),
                  "--out", f],
        "select": ["select", "--pool", str(root / "pool.h5"), "--out", f, "--method", "random", "--n", "2"],
        "label": ["label", "--in", str(root / "pool.h5"), "--out", f, "--failed", str(tmp_path / "failed.h5"),
                  "--oracle-settings", '{"kind": "emt"}'],
        "split": ["split", "--source", store, "--out-dir", str(tmp_path / "it0"), "--test", f, "--seed", "0"],
        "merge": ["merge", "--prev-dir", str(tmp_path), "--out-dir", str(root / "train.h5")],
        "gather": ["gather", "--labeled", store, "--out", f],
        "summary": ["summary", "--run", f"qs1:0:{tmp_path}", "--iterations", "0", "--out", f],
        "schema": ["schema", "--out", f],
        "sample": ["sample", "--n-frames", "2", "--out", f],
        "shard": ["shard", "--selected", store, "--pool", store, "--status", store, "--request", f, "--out", f],
        "report": ["report", str(tmp_path), "--out", f],  # checked before the campaign folder is read
        "cache": ["cache", "export", str(_a_cache(tmp_path, root)), "--out", f],
    }
    for name, argv in commands.items():
        capsys.readouterr()
        assert main(argv) == 2, name
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "to be written there" in err, (name, err)
    assert sorted(os.listdir(folder)) == []


# ------------------------------------------------------------------------------------------------
# Model and checkpoint files are data: a crafted pickle is refused without running anything
# ------------------------------------------------------------------------------------------------


class _Evil:
    """Unpickling this runs code: it creates the file ``marker``."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return exec, (f"open({self.marker!r}, 'w').close()",)


@pytest.fixture
def evil(tmp_path) -> tuple[Path, Path]:
    """evil.pt, a torch file with a model's outer form whose unpickling would create ``marker``."""
    marker = tmp_path / "PWNED"
    path = tmp_path / "evil.pt"
    torch.save({"format": "oedal-gmnn-1", "settings": {}, "species": [1], "state_dict": {}, "meta": _Evil(marker)},
               path)
    return path, marker


def test_the_crafted_file_would_run_code(evil):
    """The test's premise: loading evil.pt the unsafe way runs its code."""
    path, marker = evil
    torch.load(path, weights_only=False)
    assert marker.exists()


def _refused(capsys, command: str, path: Path) -> None:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert err.startswith(f"oedal {command}: error: {path}: refused, not loaded"), err
    assert "exec" in err, err  # the object it names


def test_evaluate_and_score_refuse_a_crafted_model(data, evil, tmp_path, capsys):
    root, _, _ = data
    path, marker = evil
    assert main(["evaluate", "--model", str(path), "--data", str(root / "test.h5"),
                 "--out", str(tmp_path / "m.json")]) == 2
    _refused(capsys, "evaluate", path)
    assert main(["score", "--model", str(path), "--train", str(root / "train.h5"), "--pool", str(root / "pool.h5"),
                 "--out", str(tmp_path / "s.h5")]) == 2
    _refused(capsys, "score", path)
    assert not marker.exists()


def test_warm_start_and_checkpoint_refuse_a_crafted_file(data, evil, tmp_path, capsys):
    root, _, ms = data
    path, marker = evil
    out = tmp_path / "model.pt"
    base = ["train", "--train", str(root / "train.h5"), "--valid", str(root / "valid.h5"), "--out", str(out),
            "--model-settings", ms.model_dump_json(), "--epochs", "1"]
    assert main(base + ["--warm-start", str(path)]) == 2
    _refused(capsys, "train", path)
    ckpt = out.with_name("model.pt.ckpt")
    ckpt.write_bytes(path.read_bytes())  # a crafted checkpoint beside the output
    assert main(base) == 2
    err = capsys.readouterr().err
    assert f"{ckpt}: refused, not loaded" in err and "--restart" in err, err
    assert not marker.exists() and not out.exists()


def test_the_calculator_refuses_a_crafted_model(evil):
    from oedal.gmnn.calculator import GMNNCalculator

    path, marker = evil
    with pytest.raises(UnsafeFile, match="refused, not loaded"):
        GMNNCalculator(path)
    assert not marker.exists()


def test_real_model_and_checkpoint_files_load_as_data(data, tmp_path):
    """Both file kinds oedal writes load with weights_only=True: a model (this release and 0.1.0)
    and a checkpoint written inside an epoch (with the shuffled order of the epoch in progress)."""
    from oedal.gmnn.model import load_model
    from oedal.gmnn.training import train_model

    root, sets, ms = data
    assert torch.load(root / "model.pt", weights_only=True)["format"] == "oedal-gmnn-1"
    assert load_model(Path(__file__).parent / "data" / "model_0.1.0.pt").species == [1, 6, 8]
    import signal

    from oedal.gmnn.training import TrainingInterrupted

    ck = tmp_path / "m.ckpt"
    ts = TrainingSettings(epochs=3, batch_size=8, seed=0, threads=1, device="cpu")

    def term(row):
        if row["epoch"] == 1:
            os.kill(os.getpid(), signal.SIGTERM)

    with pytest.raises(TrainingInterrupted, match="epoch 2"):  # the checkpoint is written inside epoch 2
        train_model(sets["train"], sets["valid"], ms, ts, checkpoint=ck, checkpoint_minutes=60, callback=term)
    payload = torch.load(ck, weights_only=True)
    assert payload["partial"]["position"] == 8 and payload["partial"]["order"].shape == (40,)
    resumed = train_model(sets["train"], sets["valid"], ms, ts, checkpoint=ck)
    straight = train_model(sets["train"], sets["valid"], ms, ts)
    for k, v in straight.model.state_dict().items():
        torch.testing.assert_close(resumed.model.state_dict()[k], v, rtol=1e-12, atol=0)


# ------------------------------------------------------------------------------------------------
# The ASE calculator
# ------------------------------------------------------------------------------------------------


def test_the_calculator_refuses_nan_positions_and_unknown_elements(data):
    from ase.build import molecule

    from oedal.gmnn.calculator import GMNNCalculator

    root, _, _ = data
    atoms = molecule("CH3CH2OH")
    atoms.calc = GMNNCalculator(root / "model.pt")
    assert np.isfinite(atoms.get_potential_energy())
    positions = atoms.get_positions()
    positions[3, 1] = np.nan
    atoms.set_positions(positions)
    with pytest.raises(InputError, match="positions of atom 3 are not finite"):
        atoms.get_potential_energy()
    ammonia = molecule("NH3")
    ammonia.calc = GMNNCalculator(root / "model.pt")
    with pytest.raises(InputError, match=r"unknown element N \(Z=7\) at atom 0; known: H, C, O"):
        ammonia.get_forces()
