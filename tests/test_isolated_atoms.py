"""Structures without a single atom pair within r_c (issue 21): isolated atoms (the reference energies users put
in training sets) and fragments farther apart than r_c go through every torch path — energies, forces,
training, evaluation, QS1/QS2 scoring on both kernel backends — and a walker that flies apart stops alone."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import molecule

from oedal.cli import main
from oedal.data.store import read_store, write_store
from oedal.data.structures import Structures
from oedal.gmnn.batching import make_batch
from oedal.gmnn.kernels import using
from oedal.gmnn.model import GMNN
from oedal.oed.sensitivities import energy_sensitivities, force_sensitivities
from oedal.settings import DescriptorSettings, ModelSettings
from tolerances import assert_close

R_CUT = 4.0


def lonely() -> list[Atoms]:
    """An H atom, C and O 10 Å apart (> r_c), and an O atom: no pair within r_c in any of them."""
    return [Atoms("H", positions=[[0, 0, 0]]), Atoms("CO", positions=[[0, 0, 0], [0, 0, 10.0]]), Atoms("O")]


def small_model(seed: int = 0) -> GMNN:
    torch.manual_seed(seed)
    ms = ModelSettings(descriptor=DescriptorSettings(r_cut=R_CUT, n_radial=3, n_basis=5), hidden=[16, 8],
                       dtype="float64")
    model = GMNN(ms, [1, 6, 8])
    with torch.no_grad():
        model.shift.copy_(torch.tensor([-13.6, -1030.0, -2040.0], dtype=torch.float64))
        model.scale.copy_(torch.tensor([0.7, 1.1, 1.3], dtype=torch.float64))
    return model


def atom_energy(model: GMNN, z: int) -> float:
    """E of an atom alone, from the model's parts: μ_Z + σ_Z (w · MLP(D = 0) + b), D = 0 without neighbours."""
    k = model.species.index(z)
    with torch.no_grad():
        h = model.mlp(torch.zeros(1, model.descriptor.n_features, dtype=model.dtype))
        return float(model.shift[k] + model.scale[k] * model.output(h)[0, 0])


def test_isolated_atoms_have_their_atomic_energy_zero_force_and_batch_with_molecules(kernel_backend):
    model = small_model()
    frames = [molecule("CH3CH2OH"), *lonely()]
    together = make_batch(Structures.from_atoms(frames), model.cutoff, model.species, dtype=torch.float64)
    e, f = model.energy_and_forces(together)
    expected = [atom_energy(model, 1), atom_energy(model, 6) + atom_energy(model, 8), atom_energy(model, 8)]
    assert_close(e[1:].detach().numpy(), expected)
    assert not f[9:].any()  # no neighbour, no force
    alone = make_batch(Structures.from_atoms(frames[:1]), model.cutoff, model.species, dtype=torch.float64)
    e0, f0 = model.energy_and_forces(alone)
    assert_close(e[:1].detach().numpy(), e0.detach().numpy())  # batched = one by one
    assert_close(f[:9].detach().numpy(), f0.detach().numpy())
    only = make_batch(Structures.from_atoms(lonely()), model.cutoff, model.species, dtype=torch.float64)
    ev = model.evaluate(only, sensitivities=True)  # a batch without a single pair
    assert_close(ev.energy.numpy(), expected)
    assert ev.sensitivities.shape == (3, model.d) and torch.isfinite(ev.sensitivities).all()


def test_sensitivities_of_isolated_atoms_on_both_backends(kernel_backend):
    """QS1: g = Σ_i σ_i h_i(D = 0); QS2: forces of lone atoms do not depend on w, so their rows are zero."""
    model = small_model()
    s = Structures.from_atoms([molecule("CH3CH2OH"), *lonely()])
    g = energy_sensitivities(model, s)
    h0 = model.mlp(torch.zeros(1, model.descriptor.n_features, dtype=torch.float64))[0].detach().numpy()
    assert_close(g[1], 0.7 * h0)
    assert_close(g[2], (1.1 + 1.3) * h0)
    gf = force_sensitivities(model, s)
    assert gf.shape == (3 * (9 + 1 + 2 + 1), model.d) and np.abs(gf[27:]).max() == 0.0
    assert np.abs(gf[:27]).max() > 0


@pytest.fixture(scope="module")
def stores(tmp_path_factory, ethanol_structures):
    """A training set of 30 ethanol frames + the three reference atoms (DFT-like atomic energies), a validation
    set of 10 frames, and a pool and a test set that both hold lone atoms."""
    root = tmp_path_factory.mktemp("isolated")
    atoms = Structures.from_atoms([Atoms("H"), Atoms("C"), Atoms("O")], ids=[9001, 9002, 9003])
    atoms.energy = np.array([-13.6, -1029.9, -2040.1])  # eV
    atoms.forces = np.zeros((3, 3))
    eth = ethanol_structures
    write_store(root / "train.h5", Structures.concatenate([eth.subset(np.arange(30)), atoms]))
    write_store(root / "valid.h5", eth.subset(np.arange(30, 40)))
    write_store(root / "test.h5", Structures.concatenate([eth.subset(np.arange(40, 50)), atoms]))
    pool = Structures.concatenate([eth.subset(np.arange(50, 60)).without_labels(),
                                   Structures.from_atoms(lonely(), ids=[9101, 9102, 9103])])
    write_store(root / "pool.h5", pool)
    return root


def test_train_evaluate_and_score_with_isolated_atoms(stores, capsys):
    root = stores
    settings = json.dumps({"epochs": 4, "batch_size": 8})
    model_settings = json.dumps({"hidden": [16, 8], "descriptor": {"r_cut": R_CUT, "n_radial": 3, "n_basis": 5}})
    assert main(["train", "--train", str(root / "train.h5"), "--valid", str(root / "valid.h5"), "--out",
                 str(root / "m.pt"), "--settings", settings, "--model-settings", model_settings, "--threads", "1"]) == 0
    assert main(["evaluate", "--model", str(root / "m.pt"), "--data", str(root / "test.h5"), "--out",
                 str(root / "metrics.json")]) == 0
    metrics = json.loads((root / "metrics.json").read_text())
    assert metrics["n_structures"] == 13 and np.isfinite(metrics["energy_rmse_kcal/mol"])
    scores = {}
    for kernels in ("numba", "torch"):
        for strategy in ("qs1", "qs2"):
            out = root / f"scores_{strategy}_{kernels}.h5"
            with using("auto"):  # main() chooses the backend of the process: restored after
                assert main(["--kernels", kernels, "score", "--model", str(root / "m.pt"), "--train",
                             str(root / "train.h5"), "--pool", str(root / "pool.h5"), "--out", str(out), "--strategy",
                             strategy]) == 0, capsys.readouterr().err
            with h5py.File(out) as f:
                scores[strategy, kernels] = f["score"][()]
            assert np.isfinite(scores[strategy, kernels]).all()
    for strategy in ("qs1", "qs2"):  # the GPU path (torch) gives the CPU kernels' numbers, to float32 rounding
        np.testing.assert_allclose(scores[strategy, "torch"], scores[strategy, "numba"], rtol=1e-4)  # (as test_scoring_cli)
    assert np.all(scores["qs2", "numba"][10:] == 0.0)  # lone atoms: no force to be uncertain about
    assert read_store(root / "pool.h5").ids[10:].tolist() == [9101, 9102, 9103]


class _Calm:
    """Uncertainty that never stops a walker (I = 0.5 < low): only the sanity checks can."""

    def structure(self, g):
        n = len(g)
        return {"score": np.full(n, 0.1), "informativeness": np.full(n, 0.5), "force_error": np.full(n, 0.01)}


def test_a_walker_that_flies_apart_stops_alone_and_is_not_labeled():
    """Two ethanol walkers share one batch of the real model; one starts at 10⁷ K and flies apart between two
    checks (its atoms end far beyond r_c: no pair at all). It stops with the reason, its frame is not a
    candidate; the other walker runs its full length: the shard is not taken down."""
    from oedal.campaign.explore.checks import limit_fields
    from oedal.campaign.explore.dynamics import Dynamics, run_walkers
    from oedal.campaign.explore.walker import start_walkers

    model = small_model()
    walkers = start_walkers([molecule("CH3CH2OH")], [300.0, 1e7], 1, seed=3)
    limits = {"min_distance": 0.3, "min_bond_factor": 0.0, "max_force": 1e6, "max_energy_jump": 1e6,
              "max_temperature_factor": 1e3, "cutoff": model.cutoff}
    assert set(limit_fields()) <= set(limits)
    records: list = []
    run_walkers(model, _Calm(), walkers, Dynamics(60, 0.5, 0.01, 10, 1.0, 20.0, limits), 0, records)
    cold, hot = walkers
    assert hot.status == "stopped" and hot.reason.startswith("flew apart: atom")
    assert cold.status == "finished" and cold.step == 60
    assert not records  # nothing of the broken frame goes to the oracle


def test_an_npt_walker_whose_md_blew_up_stops_alone():
    """A periodic walker whose state went non-finite (NaN position): the calculator refuses it inside ASE's
    NPT step; the walker stops with that reason instead of the exception ending the shard."""
    from oedal.campaign.explore.dynamics import Dynamics, run_walkers
    from oedal.campaign.explore.walker import start_walkers

    box = molecule("CH3CH2OH")
    box.cell, box.pbc = np.eye(3) * 8.0, True
    box.center()
    walkers = start_walkers([box, box], [300.0], 1, seed=1, pressures=[0.0])
    walkers[0].positions[2][0] = float("nan")
    limits = {"min_distance": 0.3, "min_bond_factor": 0.0, "max_force": 1e6, "max_energy_jump": 1e6,
              "max_temperature_factor": 1e3, "cutoff": R_CUT}
    run_walkers(small_model(), _Calm(), walkers, Dynamics(20, 0.5, 0.01, 10, 1.0, 20.0, limits), 0, [])
    assert walkers[0].status == "stopped" and "the MD blew up" in walkers[0].reason and "not finite" in walkers[0].reason
    assert walkers[1].status == "finished" and walkers[1].step == 20
