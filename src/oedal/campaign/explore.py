"""On-the-fly exploration: Langevin MD walkers driven by the current model, judged by its own uncertainty.

The paper's section 4 promise, and every peer's main loop (DP-GEN, FLARE, apax): instead of ranking a
pool made beforehand, walkers run MD with the model itself, and every ``check_every`` steps a walker's
frame is judged by the model's calibrated QS1 informativeness I (oedal.oed.uncertainty):

* **accurate**: I < ``low`` — the model knows this region; the walker goes on;
* **candidate**: ``low`` ≤ I ≤ ``high`` — informative; the frame is kept for selection, the walker goes on;
* **stopped**: I > ``high`` (the prediction is too uncertain to follow), or a sanity check failed (NaN,
  closest pair below ``min_distance``, a force above ``max_force``, an energy jump above
  ``max_energy_jump`` per atom between checks, a temperature above ``max_temperature``·T): the walker
  stops; next iteration it resumes from its last accepted frame (the last check it passed). The frame
  that stopped it is kept as a candidate too unless its geometry is broken (non-finite, atoms too
  close): the model failed there, so it is the most informative frame, and without it a young model
  whose walkers all stop at once would find nothing to learn.

All walkers of a shard step together as one batch through the model (one forward and one backward per
step for every walker; BAOAB Langevin, Leimkuhler & Matthews, Appl. Math. Res. Express 2013, 34):
B (½ kick) A (½ drift) O (Ornstein–Uhlenbeck) A B, the centre-of-mass velocity of each molecule
removed. Every walker has its own random stream (seeded from campaign, seed, iteration and walker),
and its state is checkpointed: a job killed at any moment reruns to the same candidates.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal, Sequence

import numpy as np
from ase import units
from ase.data import atomic_masses, chemical_symbols, covalent_radii
from ase.geometry import get_distances

from oedal.data.structures import Structures
from oedal.errors import InputError
from oedal.files import atomic_path

log = logging.getLogger(__name__)
Decision = Literal["accurate", "candidate", "stopped"]
WALKERS_FORMAT = "oedal-walkers-1"
ID_BASE = 10**9  # candidate ids: (iteration + 1)·ID_BASE + walker·10⁵ + check
LIMITS = ("min_distance", "min_bond_factor", "max_force", "max_energy_jump", "max_temperature_factor")


def decide(informativeness: float, low: float, high: float, sanity: str | None = None) -> Decision:
    """The band of one checked frame (module docstring); ``sanity``: why it is unphysical, or None."""
    if sanity is not None or not math.isfinite(informativeness) or informativeness > high:
        return "stopped"
    return "candidate" if informativeness >= low else "accurate"


def sanity_reason(positions: np.ndarray, numbers: np.ndarray, forces: np.ndarray, energy: float,
                  previous_energy: float | None, temperature: float, limits: dict) -> str | None:
    """Why a frame of one walker is unphysical, or None: NaN, close atoms, force or energy spike, heat."""
    if not (np.isfinite(energy) and np.all(np.isfinite(forces)) and np.all(np.isfinite(positions))):
        return "non-finite energy, forces or positions"
    n, broken = len(positions), broken_geometry(positions, numbers, limits)
    if broken is not None:
        return broken
    if np.abs(forces).max() > limits["max_force"]:
        return f"a force of {np.abs(forces).max():.1f} eV/Å (> {limits['max_force']})"
    if previous_energy is not None and abs(energy - previous_energy) / n > limits["max_energy_jump"]:
        return f"an energy jump of {abs(energy - previous_energy) / n:.2f} eV/atom between checks"
    if temperature > limits["max_temperature"]:
        return f"a temperature of {temperature:.0f} K (> {limits['max_temperature']:.0f} K)"
    return None


def short_contact(positions: np.ndarray, numbers: np.ndarray, limits: dict) -> str | None:
    """Why two atoms of one structure ``(n, 3)`` are too close, or None: closer than ``min_distance`` Å, or
    than ``min_bond_factor`` × the sum of their covalent radii (ase.data.covalent_radii; at 0.7: C–H 0.75 Å,
    O–H 0.68 Å, C–C 1.06 Å, H–H 0.43 Å); periodic images count where ``limits`` holds ``cell`` and
    ``pbc``. Such a geometry is broken: a walker there has left chemistry
    (the model's hole), and an oracle call on it teaches nothing a campaign wants."""
    n = len(positions)
    if n < 2:
        return None
    i, j = np.triu_indices(n, 1)
    if any(limits.get("pbc") or ()):  # nearest periodic image (minimum image convention)
        d = get_distances(positions, cell=limits["cell"], pbc=limits["pbc"])[1][i, j]
    else:
        d = np.linalg.norm(positions[i] - positions[j], axis=-1)
    k = int(np.argmin(d))
    if d[k] < limits["min_distance"]:
        return f"atoms {d[k]:.2f} Å apart (< {limits['min_distance']} Å)"
    z = np.asarray(numbers)
    bond = covalent_radii[z[i]] + covalent_radii[z[j]]
    factor = limits.get("min_bond_factor", 0.0)
    k = int(np.argmin(d / bond))
    if d[k] < factor * bond[k]:
        return (f"{chemical_symbols[z[i[k]]]}–{chemical_symbols[z[j[k]]]} {d[k]:.2f} Å apart "
                f"(< {factor} × {bond[k]:.2f} Å, the covalent radii)")
    return None


def lone_atom(positions: np.ndarray, limits: dict) -> str | None:
    """Why a structure ``(n, 3)`` of two or more atoms flew apart, or None: an atom with no other atom (or
    periodic image of one) within ``limits["cutoff"]`` Å, the model's r_c (no check without it). The model
    sees such an atom as alone in vacuum: a walker there (a time step too long, a temperature too high, a
    repulsive hole of the model) has left the system it explores."""
    n, cutoff = len(positions), limits.get("cutoff")
    if cutoff is None or n < 2:
        return None
    if any(limits.get("pbc") or ()):
        d = get_distances(positions, cell=limits["cell"], pbc=limits["pbc"])[1]
    else:
        d = np.linalg.norm(positions[:, None] - positions[None, :], axis=-1)  # (n, n) Å
    np.fill_diagonal(d, np.inf)
    nearest = d.min(axis=1)
    k = int(np.argmax(nearest))
    if nearest[k] > cutoff:
        return f"flew apart: atom {k} has no neighbour within the cutoff {cutoff} Å (nearest {nearest[k]:.3g} Å)"
    return None


def broken_geometry(positions: np.ndarray, numbers: np.ndarray, limits: dict) -> str | None:
    """Why a geometry itself is broken, or None: non-finite positions, a short contact (:func:`short_contact`)
    or an atom flown apart from the rest (:func:`lone_atom`)."""
    if not np.all(np.isfinite(positions)):
        return "non-finite positions"
    return short_contact(positions, numbers, limits) or lone_atom(positions, limits)


def labelable(positions: np.ndarray, numbers: np.ndarray, limits: dict) -> bool:
    """A stopped walker's frame is worth an oracle call unless its geometry itself is broken
    (:func:`broken_geometry`): too uncertain, too hot or a force spike of the model mark exactly the
    frames the model has to learn."""
    return broken_geometry(positions, numbers, limits) is None


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

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        return np.asarray(self.positions, np.float64), np.asarray(self.velocities, np.float64)


def start_walkers(starts: Sequence, temperatures: Sequence[float], per_start: int, seed: int) -> list[Walker]:
    """Walkers for every start (ase.Atoms) × temperature × ``per_start``, Maxwell–Boltzmann velocities
    without centre-of-mass motion; each with its own random stream from ``seed``."""
    walkers = []
    for atoms in starts:
        for temperature in temperatures:
            for _ in range(per_start):
                k = len(walkers)
                rng = np.random.default_rng([seed, k])
                v = _maxwell_boltzmann(atoms.numbers, temperature, rng)
                walker = Walker(k, float(temperature), atoms.numbers.tolist(), atoms.positions.tolist(), v.tolist(),
                                atoms.cell[:].tolist(), atoms.pbc.tolist(), rng.bit_generator.state)
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
                        cell_momentum=frame.get("cell_momentum", w.cell_momentum), origin=w.origin, stuck=stuck)
        walker.accepted = _frame_of(walker)
        out.append(walker)
    return out


def _restarted(w: Walker) -> Walker:
    """Walker ``w`` back at its start geometry, new velocities from its random stream, nothing stuck."""
    rng = np.random.Generator(np.random.PCG64())
    rng.bit_generator.state = w.rng
    v = _maxwell_boltzmann(w.numbers, w.temperature, rng)
    walker = Walker(w.index, w.temperature, w.numbers, w.origin["positions"], v.tolist(), w.origin["cell"], w.pbc,
                    rng.bit_generator.state, origin=w.origin)
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


def rattled_structures(names: Sequence[str], n: int, rattle: float, seed: int, limits: dict | None = None,
                       tries: int = 1000) -> Structures:
    """``n`` unlabeled copies of the starts (in turn), copy k's atoms displaced by N(0, σ_k²) per axis with
    σ_k = ``rattle``·(k + 1)/n Å: amplitudes spread evenly up to ``rattle``, so that the model learns the
    basin the walkers start in as well as its walls (one large σ gives only distorted copies, and a model
    that has never seen the start's neighbourhood sends its walkers downhill into its own holes). A copy
    with a short contact (``limits``: min_distance, min_bond_factor; short_contact) is drawn again. The
    initial training and validation structures of an exploration campaign, for the oracle to label."""
    limits = {"min_distance": 0.5, "min_bond_factor": 0.0} if limits is None else limits
    starts = starting_structures(names)
    rng = np.random.default_rng([seed, 7])
    frames = []
    for k in range(n):
        atoms = starts[k % len(starts)].copy()
        for _ in range(tries):
            shifted = atoms.positions + rng.normal(scale=rattle * (k + 1) / n, size=atoms.positions.shape)
            if labelable(shifted, atoms.numbers, limits):
                break
        else:
            raise InputError(f"explore.rattle {rattle} Å: no copy of start {k % len(starts)} without a short contact "
                             f"({limits}) in {tries} draws; lower explore.rattle")
        atoms.positions = shifted
        frames.append(atoms)
    return Structures.from_atoms(frames)


def initial_structures(settings, sampling, n: int, seed: int) -> Structures:
    """The ``n`` unlabeled initial structures of an exploration campaign (``settings.initial``): rattled
    copies of the starts, or frames of a short MD of each start with ``sampling.potential``."""
    if settings.initial == "rattle":
        limits = {"min_distance": settings.min_distance, "min_bond_factor": settings.min_bond_factor}
        return rattled_structures(settings.starts, n, settings.rattle, seed, limits)
    return md_structures(settings, sampling, n, seed)


def md_structures(settings, sampling, n: int, seed: int) -> Structures:
    """``n`` frames (unlabeled) of Langevin MD from the starts in turn (⌈n / starts⌉ each), with the cheap
    ``sampling.potential`` at ``initial_temperature`` (default: the hottest walker's), one every
    ``initial_interval`` steps and no equilibration: the first frames lie in the start's basin, the
    later ones where the heat takes the molecule. The oracle labels them (through the label cache)."""
    from oedal.campaign.sampling import run_md

    temperature = settings.initial_temperature or max(settings.temperatures)
    per_start = -(-n // len(settings.starts))
    parts = []
    for k, atoms in enumerate(starting_structures(settings.starts)):
        md = sampling.model_copy(update={"temperature": temperature, "n_frames": per_start, "equilibration_steps": 0,
                                         "interval": settings.initial_interval, "seed": seed * 1000 + k})
        parts.append(run_md(atoms, md).structures.without_labels())
    return dataclasses.replace(Structures.concatenate(parts).subset(np.arange(n)), ids=np.arange(n))


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


def starting_structures(names: Sequence[str]) -> list:
    """ase.Atoms of every start (a molecule name or a geometry file, its first frame)."""
    from oedal.campaign.sampling import starting_geometry

    return [starting_geometry(name) for name in names]


def dynamics(settings, cutoff: float | None = None) -> "Dynamics":
    """The walkers' Dynamics from the campaign's ExploreSettings; ``cutoff``: the model's r_c (Å), beyond
    which an atom with no neighbour has flown apart (:func:`lone_atom`)."""
    from oedal.campaign.walkers import Dynamics

    limits = {k: getattr(settings, k) for k in LIMITS} | ({} if cutoff is None else {"cutoff": cutoff})
    return Dynamics(settings.steps, settings.timestep, settings.friction, settings.check_every, settings.low,
                    settings.high, limits, settings.measure, settings.pressure, settings.hydrostatic)


def explore_shard(model_path: str | Path, settings, *, shard: int, shards: int, seed: int, iteration: int,
                  out_candidates: str | Path, out_walkers: str | Path,
                  previous: Sequence[str | Path] = (), stopped: bool = False) -> dict:
    """Run walker shard ``shard`` of ``shards`` for one iteration; write its candidates (an unlabeled store
    with datasets walker, step, informativeness) and its walkers (for the next iteration's resume).

    The walkers start from ``settings.starts`` (iteration 0) or resume from the ``previous`` walker
    files. A checkpoint beside ``out_walkers`` (``.partial``) is written at least every 30 s and after
    every walker that stops; a rerun continues from it and ends with the same candidates. ``stopped``
    (the campaign has stopped): no MD, no candidates, the walkers passed on as they are."""
    from oedal.campaign.walkers import run_walkers
    from oedal.gmnn.model import load_model
    from oedal.oed.uncertainty import model_head

    walkers = (resume_walkers(read_walkers(previous), settings.restart_after) if previous else
               start_walkers(starting_structures(settings.starts), settings.temperatures, settings.walkers_per_start,
                             seed))[shard::shards]
    if settings.ramp:
        hold_back(walkers, iteration)
    if stopped:
        counts = summary(walkers)
        _write_candidates(out_candidates, [])
        write_walkers(out_walkers, walkers, summary=counts)
        log.info("the campaign has stopped: no walkers run")
        return counts
    model = load_model(model_path)
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


def _write_candidates(path: str | Path, records: Sequence[dict]) -> None:
    """The candidate frames as an unlabeled store, with their walker, step and informativeness."""
    from oedal.data.store import write_store

    extra = {f"explore_{key}": np.array([r[key] for r in records], dtype=np.float64 if key in
                                        ("informativeness", "force_error") else np.int64)
             for key in ("walker", "step", "informativeness", "force_error")}
    write_store(path, candidates_structures(records), attrs={"content": "exploration candidates"}, extra=extra)
