"""The random arm beside an exploration campaign (benchmarks/si_materials.py; an exploration campaign can carry its
own, explore.random_pool md): the campaign seed's initial sets, then per round as many picked frames as the
campaign had labeled by then (a fifth, split.valid_share, to validation, as the campaign does), each round trained
with the campaign's settings and tested. Not a test."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE"}


def write_rounds(initial: Path, picks, labels: list[int], valid_share: float, out: Path, seed: int) -> list[tuple]:
    """Round i ≥ 1 of the arm under ``out/iter_NNN``: ``initial``'s train.h5 and valid.h5 (the campaign seed's
    iteration 0) plus ``picks`` (Structures in picking order) up to ``labels[i] − labels[0]``, ``labels`` being
    the campaign's labels spent after each round; train.h5 and valid.h5 written unless the round's metrics
    exist, status.json always. Returns (folder, training seed) per round."""
    from oedal.campaign.merge import validation_picks
    from oedal.data.store import read_store, write_store
    from oedal.data.structures import Structures

    train, valid = read_store(initial / "train.h5"), read_store(initial / "valid.h5")
    rounds = []
    for i in range(1, len(labels)):
        batch = picks.subset(np.arange(labels[i - 1] - labels[0], min(labels[i] - labels[0], len(picks))))
        to_valid = validation_picks(len(batch), valid_share)
        train = Structures.concatenate([train, batch.subset(np.setdiff1d(np.arange(len(batch)), to_valid))])
        valid = Structures.concatenate([valid, batch.subset(to_valid)])
        folder = out / f"iter_{i:03d}"
        folder.mkdir(parents=True, exist_ok=True)
        if not (folder / "metrics.json").exists():
            write_store(folder / "train.h5", train, overwrite=True)
            write_store(folder / "valid.h5", valid, overwrite=True)
        (folder / "status.json").write_text(json.dumps({"labels_spent": labels[i], "n_train": len(train),
                                                        "n_valid": len(valid)}))
        rounds.append((folder, seed * 1000 + i))
    return rounds


def train_and_test(folder: Path, settings, test: Path, seed: int) -> dict:
    """`oedal train` on folder/train.h5 + valid.h5 with the campaign's model and training ``settings``
    (CampaignSettings), then `oedal evaluate` on ``test``: the metrics (read back when they exist)."""
    metrics = folder / "metrics.json"
    if metrics.exists():
        return json.loads(metrics.read_text())
    training = settings.training.model_dump(mode="json", exclude=settings.training.unset_options() | {"device"})
    subprocess.run([sys.executable, "-m", "oedal", "train", "--train", str(folder / "train.h5"), "--valid",
                    str(folder / "valid.h5"), "--out", str(folder / "model.pt"), "--threads", "1",
                    "--settings", json.dumps({**training, "seed": seed}),
                    "--model-settings", json.dumps(settings.model.model_dump(mode="json"))],
                   check=True, env=ENV, capture_output=True)
    subprocess.run([sys.executable, "-m", "oedal", "evaluate", "--model", str(folder / "model.pt"), "--data",
                    str(test), "--out", str(metrics), "--threads", "1"], check=True, env=ENV, capture_output=True)
    return json.loads(metrics.read_text())
