"""Extension points: scores and oracles are registries with settings unions discriminated by ``kind``;
a model file of the previous release still loads."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

import numpy as np
import pytest

from oedal.campaign.plan import validate_campaign
from oedal.campaign.settings import STRATEGIES
from oedal.data.store import write_store
from oedal.errors import SettingsError
from oedal.oed import scorers
from oedal.oracles import ORACLES, OracleSettings, oracle_settings
from oedal.settings import load_settings
from tolerances import assert_close, force_scale, network_energy_scale, tolerance

DATA = Path(__file__).resolve().parent / "data"


@pytest.mark.parametrize("kind, key", [("xtb", "basis"), ("pyscf", "method"), ("emt", "source"), ("replay", "xc")])
def test_oracle_settings_reject_keys_of_other_kinds(kind, key):
    with pytest.raises(ValueError, match=key):
        load_settings(OracleSettings, {"kind": kind, key: "x"})
    assert oracle_settings(kind=kind).kind == kind


@pytest.mark.parametrize("kind, key, value", [("qs1", "beta", 2.0), ("qs1", "reduction", "max"), ("qbc", "jitter", 1e-6)])
def test_score_settings_reject_keys_of_other_kinds(kind, key, value):
    with pytest.raises(ValueError, match=key):
        scorers.score_settings(kind=kind, **{key: value})


def test_campaign_rejects_a_score_key_no_strategy_uses():
    with pytest.raises(SettingsError, match=r"score\.beta applies to qs3"):
        validate_campaign({"strategies": ["qs1-greedy", "random"], "score": {"beta": 2.0}})
    campaign = validate_campaign({"strategies": ["qs1-greedy", "qs3-top"], "score": {"beta": 2.0}})
    assert campaign.score_settings("qs3-top") == {"kind": "qs3", "beta": 2.0, "reduction": "mean", "threshold": "median",
                                                   "chunk_size": 2048, "jitter": 1e-8, "projections": False,
                                                   "prior": "jitter"}
    assert "beta" not in campaign.score_settings("qs1-greedy") and campaign.score_settings("qs1-greedy")["projections"]


def test_strategies_and_cli_choices_follow_the_registries():
    from oedal.cli import build_parser

    assert set(STRATEGIES) == {f"{k}-{m}" for k in ("qs1", "qs2", "qs3") for m in ("greedy", "top")} | {"qbc", "random"}
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command").choices
    kind = next(a for a in sub["score"]._actions if a.dest == "strategy")
    assert list(kind.choices) == list(scorers.SCORERS)
    assert set(ORACLES) == {"replay", "xtb", "pyscf", "pyscf_pbc", "gpaw", "emt", "chgnet", "ase"}


class SpreadSettings(scorers.ScoreSettingsBase):
    kind: Literal["spread"] = "spread"


class Spread:
    """A new score in one class: the radius of gyration of a structure (Å), no model needed."""

    kind, Settings, strategies = "spread", SpreadSettings, {"spread-top": "top"}

    def __init__(self, models, train, settings, *, save_sensitivities=False):
        self.train_scores = self.chunk(train)["score"]

    def layout(self, n_pool, n_rows):
        return {}

    def constants(self, n_atoms):
        return {}

    def attrs(self):
        return {}

    @staticmethod
    def chunk(structures):
        off = structures.offsets
        return {"score": np.array([np.sqrt(((p - p.mean(0)) ** 2).sum(1).mean())
                                   for p in (structures.positions[a:b] for a, b in zip(off[:-1], off[1:]))])}


def test_a_new_score_is_one_class_and_one_registry_line(tmp_path, monkeypatch, ethanol_structures):
    from oedal.oed.batch import select_batch
    from oedal.oed.scoring import read_scores, score_pool
    from oedal.settings import SelectSettings

    monkeypatch.setitem(scorers.SCORERS, "spread", Spread)
    s = ethanol_structures
    write_store(tmp_path / "train.h5", s.subset(np.arange(20)))
    write_store(tmp_path / "pool.h5", s.subset(np.arange(20, 80)).without_labels())
    summary = score_pool([DATA / "model_0.1.0.pt"], tmp_path / "train.h5", tmp_path / "pool.h5",
                         tmp_path / "scores.h5", SpreadSettings())
    scores = read_scores(tmp_path / "scores.h5")
    expected = Spread.chunk(s.subset(np.arange(20, 80)))["score"]
    np.testing.assert_array_equal(scores["score"], expected)
    assert summary.threshold == pytest.approx(np.median(Spread.chunk(s.subset(np.arange(20)))["score"]))
    np.testing.assert_allclose(scores["informativeness"], expected / summary.threshold)
    picked = select_batch(tmp_path / "scores.h5", tmp_path / "pool.h5", tmp_path / "sel.h5",
                          SelectSettings(method="top", n=5))
    assert set(picked.ids) == set(20 + np.argsort(-expected)[:5])


def test_model_file_of_the_previous_release_loads_and_predicts_the_same(ethanol_structures):
    """tests/data/model_0.1.0.pt was written by oedal 0.1.0 in the flat layout (tests/data/make_model_0.1.0.py)."""
    from oedal.gmnn.evaluation import predict
    from oedal.gmnn.model import load_model

    recorded = json.loads((DATA / "model_0.1.0.json").read_text())
    model = load_model(DATA / "model_0.1.0.pt")
    test = ethanol_structures.subset(np.asarray(recorded["ids"]))
    pred = predict(model, test)
    # recorded on another machine: equal to the roundoff of the float32 network (tests/tolerances.py)
    energy_tol = tolerance(network_energy_scale(model, test), np.float32) + tolerance(recorded["energy_eV"])
    assert_close(pred.energy, recorded["energy_eV"], energy_tol)
    assert_close(pred.forces, recorded["forces_eV_per_A"], tolerance(force_scale(model, test), np.float32))
