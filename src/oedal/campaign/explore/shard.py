"""One walker shard of an iteration (DESIGN §9): its walkers started or resumed, run with the iteration's model,
their candidates written as an unlabeled store and their states for the next iteration's resume; and the
iteration's pool gathered from every shard, with the walkers' counts (explore.json)."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np

from oedal.campaign.explore.checks import limit_fields
from oedal.campaign.explore.starts import starting_structures
from oedal.campaign.explore.walker import (combined_summary, hold_back, read_walkers, resume_walkers, start_walkers,
                                           summary, write_walkers)
from oedal.data.structures import Structures

if TYPE_CHECKING:
    from oedal.campaign.explore.dynamics import Dynamics
    from oedal.campaign.records import ExploreCounts

log = logging.getLogger(__name__)


def dynamics(settings, cutoff: float | None = None) -> "Dynamics":
    """The walkers' Dynamics from the campaign's ExploreSettings; ``cutoff``: the model's r_c (Å), beyond
    which an atom with no neighbour has flown apart (checks.LoneAtom)."""
    from oedal.campaign.explore.dynamics import Dynamics
    from oedal.oed.bias import UncertaintyBias

    limits = {k: getattr(settings, k) for k in limit_fields()} | ({} if cutoff is None else {"cutoff": cutoff})
    bias = None
    if settings.bias_strength > 0:
        width = settings.bias_width
        if width is None and settings.measure == "force_error":
            width = settings.low  # the lower band is a force error (eV/Å) already
        bias = UncertaintyBias(settings.bias_strength, width, settings.low)
    return Dynamics(settings.steps, settings.timestep, settings.friction, settings.check_every, settings.low,
                    settings.high, limits, settings.measure, settings.hydrostatic, bias)


def with_pressure(walkers: list, settings) -> list:
    """Walkers read from files written before each walker carried its pressure: the campaign's one pressure."""
    pressures = settings.pressures()
    if len(pressures) == 1:
        for w in walkers:
            if w.pressure is None:
                w.pressure = pressures[0]
    return walkers


def explore_shard(model_path: str | Path, settings, *, shard: int, shards: int, seed: int, iteration: int,
                  out_candidates: str | Path, out_walkers: str | Path,
                  previous: Sequence[str | Path] = (), status: str | Path | None = None, device: str = "cpu") -> dict:
    """Run walker shard ``shard`` of ``shards`` for one iteration; write its candidates (an unlabeled store
    with datasets walker, step, informativeness) and its walkers (for the next iteration's resume).

    The walkers start from ``settings.starts`` (iteration 0) or resume from the ``previous`` walker
    files. A checkpoint beside ``out_walkers`` (``.partial``) is written at least every 30 s and after
    every walker that stops; a rerun continues from it and ends with the same candidates. Once the
    iteration's ``status`` (status.json) says the campaign has stopped: no MD, no candidates, the walkers
    passed on as they are. ``device``: where the model and the batched walkers' step loop run (periodic
    walkers at constant pressure step through ASE on the host, the model on the device)."""
    from oedal.campaign.explore.dynamics import run_walkers
    from oedal.campaign.records import Status
    from oedal.gmnn.model import load_model
    from oedal.oed.uncertainty import model_head

    walkers = (resume_walkers(with_pressure(read_walkers(previous), settings), settings.restart_after) if previous
               else start_walkers(starting_structures(settings.starts), settings.temperatures,
                                  settings.walkers_per_start, seed, settings.pressures()))[shard::shards]
    if settings.ramp:
        hold_back(walkers, iteration)
    if status is not None and Status.read(status).stopped:
        counts = summary(walkers)
        _write_candidates(out_candidates, [])
        write_walkers(out_walkers, walkers, summary=counts)
        log.info("the campaign has stopped: no walkers run")
        return counts
    from oedal.device import resolve_device

    model = load_model(model_path, device=resolve_device(device))
    model.eval()
    head = model_head(model)
    partial = Path(str(out_walkers) + ".partial")
    records: list[dict] = []
    if partial.exists():
        data = json.loads(partial.read_text())
        walkers, records = read_walkers([partial]), data["records"]
        log.info("RESUMING %d walkers from %s (%d candidates so far)", len(walkers), partial, len(records))

    def checkpoint(ws, recs) -> None:
        write_walkers(partial, ws, records=recs)

    run_walkers(model, head, walkers, dynamics(settings, model.cutoff), iteration, records, checkpoint)
    _write_candidates(out_candidates, records)
    counts = summary(walkers)
    write_walkers(out_walkers, walkers, summary=counts)
    partial.unlink(missing_ok=True)
    log.info("shard %d/%d: %s", shard, shards, counts)
    return counts


def candidates_structures(records: Sequence[dict]) -> Structures:
    """The candidate frames as an unlabeled store's Structures (ids from walker, iteration and check)."""
    if not records:
        return Structures.empty()
    return Structures(
        positions=np.concatenate([np.asarray(r["positions"]) for r in records]),
        numbers=np.concatenate([np.asarray(r["numbers"]) for r in records]),
        n_atoms=np.array([len(r["numbers"]) for r in records]),
        cell=np.array([r["cell"] for r in records], dtype=np.float64).reshape(-1, 3, 3),
        pbc=np.array([r["pbc"] for r in records], dtype=bool).reshape(-1, 3),
        ids=np.array([r["id"] for r in records], dtype=np.int64),
    )


def _write_candidates(path: str | Path, records: Sequence[dict]) -> None:
    """The candidate frames as an unlabeled store, with their walker, step and informativeness."""
    from oedal.data.store import write_store

    extra = {f"explore_{key}": np.array([r[key] for r in records], dtype=np.float64 if key in
                                        ("informativeness", "force_error") else np.int64)
             for key in ("walker", "step", "informativeness", "force_error")}
    write_store(path, candidates_structures(records), attrs={"content": "exploration candidates"}, extra=extra)


def gather_candidates(candidates: Sequence[str | Path], walkers: Sequence[str | Path], converged: float,
                      out: str | Path, counts_out: str | Path) -> "ExploreCounts":
    """The iteration's pool: every shard's candidates in one store (``out``), and the walkers' counts
    (explore.json, ``counts_out``)."""
    from oedal.campaign.gather import gather_stores
    from oedal.campaign.records import ExploreCounts

    n = gather_stores(list(candidates), out, labeled=False)
    counts = ExploreCounts.from_dict({**combined_summary(walkers, converged), "candidates": n}, str(counts_out))
    counts.write(counts_out)
    return counts
