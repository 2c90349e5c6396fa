"""Heterogeneous sets (DESIGN §11): energy-only learning (QM9 has no forces), and classes kept from import to
the errors per class."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from oedal.data.importers import export_file, import_file, qm9_class, read_qm9, read_wbe, wbe_class
from oedal.data.store import StoreReader, read_store, write_store
from oedal.errors import InputError
from oedal.gmnn.evaluation import KCAL_PER_MOL, error_metrics, predict
from oedal.settings import DescriptorSettings, ModelSettings, TrainingSettings
from tolerances import assert_close, network_energy_scale, tolerance

SMALL = ModelSettings(descriptor=DescriptorSettings(r_cut=3.0, n_radial=3, n_basis=5), hidden=[16, 8],
                      species=["H", "C", "N", "O", "F"])


@pytest.fixture(scope="module")
def qm9():
    """The first 600 QM9 molecules (energies only, size classes)."""
    return read_qm9(limit=600)


@pytest.fixture(scope="module")
def energy_only_model(qm9, tmp_path_factory):
    """A small GM-NN trained on the energies of 200 QM9 molecules, and its file."""
    from oedal.gmnn.model import save_model
    from oedal.gmnn.training import train_model

    ts = TrainingSettings(epochs=40, batch_size=16, patience=1000, seed=0, threads=1, device="cpu")
    result = train_model(qm9.subset(np.arange(200)), qm9.subset(np.arange(200, 300)), SMALL, ts)
    path = tmp_path_factory.mktemp("qm9") / "model.pt"
    save_model(result.model, path, history=result.history)
    return result, path


def test_energy_only_training_learns_qm9_energies(qm9, energy_only_model):
    """A store without forces trains on the energy term alone: the validation energy MAE falls well below the
    spread of the per-atom-reference residuals it starts from, and no force figure is invented."""
    result, _ = energy_only_model
    first, best = result.history[0], result.history[result.best_epoch - 1]
    assert all(row["valid_force_mae"] is None for row in result.history)
    assert best["valid_energy_mae"] < 0.5 * first["valid_energy_mae"], (first, best)


def test_energy_only_loss_is_the_energy_term_and_mixed_sets_mask_forces(ethanol_structures):
    """Eq. (4) without force labels = the energy term (w_F = 0) of the full loss; in a mixed batch a structure
    whose forces are NaN contributes its energy term only, the others their full loss."""
    from oedal.gmnn.batching import make_batch
    from oedal.gmnn.model import GMNN
    from oedal.gmnn.training import batch_loss, structure_loss

    torch.manual_seed(0)
    s = ethanol_structures.subset(np.arange(6))
    model = GMNN(ModelSettings(descriptor=DescriptorSettings(n_radial=2, n_basis=4), hidden=[8, 8], dtype="float64"),
                 [1, 6, 8])
    model.init_scale_shift(s.numbers, s.n_atoms, s.energy)
    full = make_batch(s, model.cutoff, model.species, dtype=torch.float64)
    energy, forces = model.energy_and_forces(full)
    no_forces = full._replace(forces=None)
    e_term = structure_loss(full, energy, forces, 1.0, 0.0)
    assert torch.equal(structure_loss(no_forces, energy, None, 1.0, 100.0), e_term)
    # batch_loss takes the energies from a forward pass alone, e_term from energy_and_forces: equal to the
    # roundoff of the float64 terms summed into each energy (tests/tolerances.py), squared through ΔE²
    de = (energy - full.energy).detach().numpy()  # (6,) eV
    tol_e = tolerance(network_energy_scale(model, s)) + tolerance(s.energy)  # (6,) eV
    assert_close(float(batch_loss(model, no_forces, 1.0, 100.0).detach()), float(e_term.mean().detach()),
                 float(np.mean(2 * np.abs(de) * tol_e + tol_e**2)))
    masked = full.forces.clone()
    masked[full.structure == 2] = float("nan")  # structure 2 has no force label
    mixed = structure_loss(full._replace(forces=masked), energy, forces, 1.0, 100.0)
    reference = structure_loss(full, energy, forces, 1.0, 100.0)
    keep = torch.arange(6) != 2
    torch.testing.assert_close(mixed[keep], reference[keep], rtol=1e-14, atol=0)
    assert float(mixed[2].detach()) == pytest.approx(float(e_term[2].detach()), rel=1e-14)


def test_per_atom_energy_loss_divides_each_error_by_its_own_atom_count(qm9, ethanol_structures):
    """``training.energy_loss: per_atom``: the energy term is w_E (ΔE/N)² with N the atoms of that structure (QM9
    molecules of 3–20 atoms in one batch, checked against the counts of the Structures, brute force; the same
    three float64 operations in the same order: a few roundings); the force term is unchanged (ethanol with
    forces, w_E = 0: bit for bit)."""
    from oedal.gmnn.batching import make_batch
    from oedal.gmnn.model import GMNN
    from oedal.gmnn.training import structure_loss

    torch.manual_seed(0)
    settings = ModelSettings(descriptor=DescriptorSettings(r_cut=3.0, n_radial=2, n_basis=4), hidden=[8, 8],
                             dtype="float64")
    s = qm9.subset(np.arange(0, 600, 40))
    assert len(np.unique(s.n_atoms)) > 5
    model = GMNN(settings, [1, 6, 7, 8, 9])
    model.init_scale_shift(s.numbers, s.n_atoms, s.energy)
    batch = make_batch(s, model.cutoff, model.species, dtype=torch.float64)
    with torch.no_grad():
        energy = model.energy(batch)
        loss = structure_loss(batch, energy, None, 2.0, 0.0, per_atom=True).numpy()
    expected = 2.0 * ((energy.numpy() - s.energy) / s.n_atoms) ** 2  # eV²
    np.testing.assert_allclose(loss, expected, rtol=8 * np.finfo(np.float64).eps, atol=0)

    e = ethanol_structures.subset(np.arange(4))
    model = GMNN(settings, [1, 6, 8])
    model.init_scale_shift(e.numbers, e.n_atoms, e.energy)
    batch = make_batch(e, model.cutoff, model.species, dtype=torch.float64)
    energy, forces = (t.detach() for t in model.energy_and_forces(batch))
    force_term = [structure_loss(batch, energy, forces, 0.0, 100.0, per_atom=p) for p in (False, True)]
    assert torch.equal(*force_term)  # the option touches the energy term alone
    assert float(force_term[0].min()) > 0.0


def test_training_refuses_one_set_with_forces_and_one_without(ethanol_structures):
    from oedal.gmnn.training import train_model

    train, valid = ethanol_structures.subset(np.arange(20)), ethanol_structures.subset(np.arange(20, 30))
    valid.forces = None
    with pytest.raises(InputError, match="training set has force labels and the validation set has none"):
        train_model(train, valid, SMALL, TrainingSettings(epochs=1, threads=1, device="cpu"))


def test_errors_per_class_equal_the_errors_of_each_class_alone(qm9, energy_only_model, ethanol_structures):
    """``per_class`` (one pass over the whole set) = the figures of every class's structures computed by hand
    from the same predictions (brute force), for an energy-only set (QM9 size classes) and a set with forces
    (classes set by hand); the same keys as error_metrics of the class alone; the counts above threshold add
    up to the whole set's. (The predictions are sliced, not redone per class: a re-batched float32 network
    may round differently, and the bookkeeping is what is tested.)"""
    result, _ = energy_only_model
    test = qm9.subset(np.arange(300, 600))
    whole = error_metrics(result.model, test)
    assert "forces_mae_kcal/mol/A" not in whole and set(whole["per_class"]) == set(test.classes.tolist())
    de = (predict(result.model, test, forces=False).energy - test.energy) / KCAL_PER_MOL  # (n,) kcal/mol
    for name, figures in whole["per_class"].items():
        rows = test.classes == name
        alone = error_metrics(result.model, test.subset(np.flatnonzero(rows)))
        alone.pop("definitions"), alone.pop("per_class")
        assert figures.keys() == alone.keys()
        err = np.abs(de[rows])
        expected = {"n_structures": int(rows.sum()), "n_atoms": int(test.n_atoms[rows].sum()),
                    "energy_mae_kcal/mol": err.mean(), "energy_rmse_kcal/mol": np.sqrt((err**2).mean()),
                    "energy_maxe_kcal/mol": err.max(), "n_energy_error_above_1_kcal/mol": int((err > 1.0).sum())}
        for k, v in expected.items():
            assert figures[k] == pytest.approx(v, rel=1e-12), (name, k)
    key = "n_energy_error_above_1_kcal/mol"
    assert sum(f[key] for f in whole["per_class"].values()) == whole[key]

    from oedal.gmnn.model import GMNN

    torch.manual_seed(1)
    s = ethanol_structures.subset(np.arange(40))
    s.classes = np.array(["a", "b", "", "c"] * 10)
    model = GMNN(ModelSettings(descriptor=DescriptorSettings(n_radial=2, n_basis=4), hidden=[8, 8]), [1, 6, 8])
    model.init_scale_shift(s.numbers, s.n_atoms, s.energy)
    per_class = error_metrics(model, s)["per_class"]
    assert set(per_class) == {"a", "b", "c"}  # "" (no class) is left out
    pred = predict(model, s)  # the same predictions, sliced by hand per class (a re-batched prediction of a
    # class alone would sum the float32 pair terms in another order)
    df = (pred.forces - s.forces) / KCAL_PER_MOL  # (n_atoms_total, 3) kcal/mol/Å
    atom_class = np.repeat(s.classes, s.n_atoms)
    for name in per_class:
        err = df[atom_class == name]
        worst = np.abs(df).max(axis=1)[atom_class == name].reshape(-1, 9).max(axis=1)  # ethanol: 9 atoms
        expected = {"forces_mae_kcal/mol/A": np.abs(err).mean(), "forces_rmse_kcal/mol/A": np.sqrt((err**2).mean()),
                    "forces_maxe_kcal/mol/A": np.abs(err).max(),
                    "n_max_force_component_error_above_1_kcal/mol/A": int((worst > 1.0).sum())}
        for k, v in expected.items():
            assert per_class[name][k] == pytest.approx(v, rel=1e-12), (name, k)


def test_energy_only_steps_train_evaluate_and_qs2_refuses(qm9, energy_only_model, tmp_path):
    """The campaign's steps on energy-only stores: evaluate writes energy figures per class; QS1 scores the
    pool; QS2 refuses in one line that names the way out (qs1)."""
    from oedal.campaign.model_steps import evaluate_step
    from oedal.oed.scoring import score_pool
    from oedal.oed.scorers import QS1Settings, QS2Settings

    _, model_path = energy_only_model
    train, test, pool = (tmp_path / f"{n}.h5" for n in ("train", "test", "pool"))
    write_store(train, qm9.subset(np.arange(200)))
    write_store(test, qm9.subset(np.arange(300, 400)))
    write_store(pool, qm9.subset(np.arange(400, 600)).without_labels())
    metrics = evaluate_step(model_path, test, tmp_path / "metrics.json")
    assert json.loads((tmp_path / "metrics.json").read_text())["per_class"].keys() == metrics["per_class"].keys()
    assert metrics["energy_rmse_kcal/mol"] > 0 and not any(k.startswith("forces") for k in metrics)
    summary = score_pool([model_path], train, pool, tmp_path / "scores.h5", QS1Settings(device="cpu"))
    assert summary.n_pool == 200
    with pytest.raises(InputError, match="qs2 needs force labels.*use qs1"):
        score_pool([model_path], train, pool, tmp_path / "scores2.h5", QS2Settings(device="cpu"))


def test_a_qm9_campaign_with_force_scores_is_refused_before_it_runs():
    from oedal.campaign.plan import validate_campaign
    from oedal.errors import SettingsError

    with pytest.raises(SettingsError, match="qs2/qs3 score the forces and qm9 has energies only"):
        validate_campaign({"name": "q", "strategies": ["qs2-top", "random"], "dataset": {"source": "qm9"}}, "cfg")


# --- classes from import to store and split -------------------------------------------------------------

def test_importers_keep_classes(qm9, shared_data, tmp_path):
    """QM9: the class is the heavy-atom count (checked against the atomic numbers); W–Be: the kind of the
    group folder; extxyz: ``config_type`` both ways; the store round-trips them, by slice and by index."""
    heavy = [int((qm9.subset([k]).numbers > 1).sum()) for k in range(len(qm9))]
    assert qm9.classes.tolist() == [qm9_class(h) for h in heavy]
    assert qm9_class(9) == "HA9" and qm9_class(3) == "HA≤6"
    wbe = read_wbe(shared_data / "wbe" / "WBe_PRB2019_JSON.tar.gz", limit=3)
    assert wbe.classes.tolist() == ["surface"] * 3  # 001FreeSurf comes first by name
    assert wbe_class("examples/WBe_PRB2019/JSON/Defect_BOct/x.json") == "defect"
    assert wbe_class("JSON/some_new_group/x.json") == "some_new_group"

    sub = qm9.subset(np.arange(40))
    sub.classes = np.array(["bulk", "", "surface é", "md"] * 10)
    export_file(sub, tmp_path / "a.xyz")
    back = import_file(tmp_path / "a.xyz")
    assert back.classes.tolist() == sub.classes.tolist()
    write_store(tmp_path / "a.h5", sub)
    assert read_store(tmp_path / "a.h5").classes.tolist() == sub.classes.tolist()
    assert read_store(tmp_path / "a.h5", [7, 2, 2]).classes.tolist() == ["md", "surface é", "surface é"]
    with StoreReader(tmp_path / "a.h5") as reader:
        assert reader.class_names().tolist() == sub.classes.tolist()
    sub.classes = None
    write_store(tmp_path / "b.h5", sub)
    assert read_store(tmp_path / "b.h5").classes is None


def test_a_test_set_per_class_holds_every_class():
    """split.test_per_class: min(k, size of the class) test structures of every class, disjoint from train,
    valid and pool, the same for the same seed."""
    from oedal.campaign.settings import SplitSettings
    from oedal.campaign.split import split_indices

    classes = np.array(["big"] * 500 + ["mid"] * 40 + ["rare"] * 3 + [""] * 20)
    split = SplitSettings(n_train=50, n_valid=20, n_test=1, test_per_class=10)
    parts = split_indices(len(classes), split, 3, classes)
    counts = {c: int((classes[parts.test] == c).sum()) for c in ("big", "mid", "rare", "")}
    assert counts == {"big": 10, "mid": 10, "rare": 3, "": 0}
    every = np.concatenate([parts.train, parts.valid, parts.test, parts.pool])
    assert len(np.unique(every)) == len(every) == len(classes)
    assert (len(parts.train), len(parts.valid)) == (50, 20)
    assert np.array_equal(split_indices(len(classes), split, 3, classes).test, parts.test)
    from oedal.errors import SettingsError

    with pytest.raises(SettingsError, match="carry no class"):
        split_indices(len(classes), split, 3, None)


def test_a_new_user_imports_qm9_and_trains(tmp_path):
    """The issue's reproduction, through the CLI: ``oedal import qm9`` then ``oedal train`` on its energies (it
    refused: "the store has no forces but forces are required") and ``oedal evaluate`` with figures per class."""
    from oedal.cli import main

    for name, first in (("train", 0), ("valid", 60)):
        assert main(["import", "qm9", "--out", str(tmp_path / f"all_{name}.h5"), "--limit", str(first + 60)]) == 0
        write_store(tmp_path / f"{name}.h5", read_store(tmp_path / f"all_{name}.h5", slice(first, first + 60)))
    settings = SMALL.model_dump_json()
    assert main(["train", "--train", str(tmp_path / "train.h5"), "--valid", str(tmp_path / "valid.h5"), "--out",
                 str(tmp_path / "m.pt"), "--epochs", "3", "--threads", "1", "--device", "cpu", "--model-settings",
                 settings]) == 0
    assert main(["evaluate", "--model", str(tmp_path / "m.pt"), "--data", str(tmp_path / "valid.h5"), "--out",
                 str(tmp_path / "metrics.json"), "--device", "cpu"]) == 0
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["n_structures"] == 60 and set(metrics["per_class"]) <= {"HA≤6", "HA7", "HA8", "HA9"}
