"""A walker of the exploration (DESIGN §9): its system, thermostat, state and record; how walkers start, resume
and restart from one iteration to the next; their files; and what an iteration's walkers did.

Units: Å, amu, K; velocities Å per ASE time unit. Every walker has its own random stream (seeded from the
campaign, seed and walker), stored with it, so a killed job reruns to the same candidates.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
from ase import units
from ase.data import atomic_masses

from oedal.errors import InputError
from oedal.files import atomic_path

log = logging.getLogger(__name__)
WALKERS_FORMAT = "oedal-walkers-1"


@dataclass
class Walker:
    """One walker: its system, thermostat, state and record (positions Å, velocities Å per ASE time unit)."""

    index: int
    temperature: float  # K
    numbers: list[int]
    positions: list  # (n, 3)
    velocities: list  # (n, 3)
    cell: list  # (3, 3)
    pbc: list  # (3,)
    rng: dict  # numpy PCG64 state
    step: int = 0  # MD steps done in this iteration
    status: str = "running"  # running | finished | stopped
    reason: str | None = None
    counts: dict = field(default_factory=lambda: {"accurate": 0, "candidate": 0})
    last_energy: float | None = None
    accepted: dict | None = None  # the last frame that passed its check: positions, velocities, cell, cell_momentum
    cell_momentum: list | float | None = None  # NPT: the barostat's cell momentum (ASE LangevinBAOAB p_eps)
    checks: list = field(default_factory=list)  # [step, measured value, sanity reason or None, decision] per check
    origin: dict | None = None  # where it started: positions, cell (a restart goes back there)
    stuck: int = 0  # iterations in a row in which it stopped at its first check
    pressure: float | None = None  # GPa: a periodic walker runs NPT at it; None: NVT

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        return np.asarray(self.positions, np.float64), np.asarray(self.velocities, np.float64)


def start_walkers(starts: Sequence, temperatures: Sequence[float], per_start: int, seed: int,
                  pressures: Sequence[float | None] = (None,)) -> list[Walker]:
    """Walkers for every start (ase.Atoms) × temperature × pressure (GPa; None: NVT) × ``per_start``,
    Maxwell–Boltzmann velocities without centre-of-mass motion; each with its own random stream from ``seed``.
    A molecule's walkers run NVT whatever the pressure."""
    walkers = []
    for atoms in starts:
        for temperature in temperatures:
            for pressure in pressures:
                for _ in range(per_start):
                    k = len(walkers)
                    rng = np.random.default_rng([seed, k])
                    v = _maxwell_boltzmann(atoms.numbers, temperature, rng)
                    walker = Walker(k, float(temperature), atoms.numbers.tolist(), atoms.positions.tolist(),
                                    v.tolist(), atoms.cell[:].tolist(), atoms.pbc.tolist(), rng.bit_generator.state,
                                    pressure=None if pressure is None else float(pressure))
                    walker.accepted = _frame_of(walker)
                    walker.origin = {"positions": walker.positions, "cell": walker.cell}
                    walkers.append(walker)
    return walkers


def _maxwell_boltzmann(numbers: Sequence[int], temperature: float, rng: np.random.Generator) -> np.ndarray:
    """Velocities (Å per ASE time unit) at ``temperature`` K, without centre-of-mass motion."""
    masses = atomic_masses[np.asarray(numbers)][:, None]
    v = rng.normal(size=(len(numbers), 3)) * np.sqrt(units.kB * temperature / masses)
    return v - (masses * v).sum(0) / masses.sum()


def _frame_of(w: Walker) -> dict:
    """Where walker ``w`` stands now, as an accepted frame (positions, velocities, cell, cell momentum)."""
    return {"positions": w.positions, "velocities": w.velocities, "cell": w.cell, "cell_momentum": w.cell_momentum}


def resume_walkers(previous: Sequence[Walker], restart_after: int = 0) -> list[Walker]:
    """Next iteration's walkers: each from its last accepted frame, step and status reset. A walker
    starts every iteration with that frame as its accepted one, so that one stopped at its first
    check resumes from where the iteration started it, not from the frame that stopped it.

    A walker that stopped at its first check ``restart_after`` iterations in a row (> 0) is stuck in a
    region every new model sends over a limit at once: it starts again from its start geometry with
    fresh Maxwell–Boltzmann velocities drawn from its own random stream (DP-GEN restarts every walker
    from its initial configurations each round)."""
    out = []
    for w in previous:
        stuck = w.stuck + 1 if w.status == "stopped" and len(w.checks) == 1 else 0
        if restart_after and stuck >= restart_after and w.origin is not None:
            out.append(_restarted(w))
            log.info("walker %d stopped at its first check %d iterations in a row: restarted from its start "
                     "geometry with fresh velocities", w.index, stuck)
            continue
        frame = w.accepted or _frame_of(w)  # walker files written before every walker carried a frame
        walker = Walker(w.index, w.temperature, w.numbers, frame["positions"], frame["velocities"],
                        frame.get("cell", w.cell), w.pbc, w.rng,
                        cell_momentum=frame.get("cell_momentum", w.cell_momentum), origin=w.origin, stuck=stuck,
                        pressure=w.pressure)
        walker.accepted = _frame_of(walker)
        out.append(walker)
    return out


def _restarted(w: Walker) -> Walker:
    """Walker ``w`` back at its start geometry, new velocities from its random stream, nothing stuck."""
    rng = np.random.Generator(np.random.PCG64())
    rng.bit_generator.state = w.rng
    v = _maxwell_boltzmann(w.numbers, w.temperature, rng)
    walker = Walker(w.index, w.temperature, w.numbers, w.origin["positions"], v.tolist(), w.origin["cell"], w.pbc,
                    rng.bit_generator.state, origin=w.origin, pressure=w.pressure)
    walker.accepted = _frame_of(walker)
    return walker


def read_walkers(paths: Sequence[str | Path]) -> list[Walker]:
    """Walkers of one or more walker files (ordered by index)."""
    walkers = []
    for path in paths:
        data = json.loads(Path(path).read_text())
        if data.get("format") != WALKERS_FORMAT:
            raise InputError(f"{path}: not an oedal walkers file (format {WALKERS_FORMAT})")
        walkers += [Walker(**w) for w in data["walkers"]]
    return sorted(walkers, key=lambda w: w.index)


def write_walkers(path: str | Path, walkers: Sequence[Walker], **extra) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps({"format": WALKERS_FORMAT, **extra, "walkers": [asdict(w) for w in walkers]}))


def summary(walkers: Sequence[Walker]) -> dict:
    """Per-iteration counts: walkers that ran their full length without a trigger (accurate: no
    candidate either), with candidates, stopped, waiting (the ramp has not reached their temperature;
    never clean, so a campaign cannot converge before every temperature has run); frames judged
    accurate / candidate."""
    finished = [w for w in walkers if w.status == "finished"]
    clean = sum(1 for w in finished if w.counts["candidate"] == 0)
    return {"walkers": len(walkers), "clean": clean, "with_candidates": len(finished) - clean,
            "stopped": sum(1 for w in walkers if w.status == "stopped"),
            "waiting": sum(1 for w in walkers if w.status == "waiting"),
            "accurate_frames": sum(w.counts["accurate"] for w in walkers),
            "candidate_frames": sum(w.counts["candidate"] for w in walkers),
            "clean_share": clean / len(walkers) if walkers else 0.0,
            "stop_reasons": sorted({w.reason for w in walkers if w.reason})}


def hold_back(walkers: Sequence[Walker], iteration: int) -> None:
    """The temperature ramp (DP-GEN's schedule, explore.ramp): in iteration ``i`` only the walkers of the
    i + 1 lowest temperatures run; the others wait where they start. A young model meets the hot,
    distorted frames only after it has learned the basin."""
    ladder = sorted({w.temperature for w in walkers})
    allowed = set(ladder[: iteration + 1])
    for w in walkers:
        if w.temperature not in allowed and w.status == "running":
            w.status = "waiting"


def combined_summary(paths: Sequence[str | Path], converged: float) -> dict:
    """The iteration's counts over every shard's walker file, and whether exploration has converged
    (the share of walkers that ran their full length without a trigger ≥ ``converged``)."""
    counts = summary(read_walkers(paths))
    counts["converged"] = bool(counts["clean_share"] >= converged)
    counts["converged_at"] = converged
    return counts
