"""Stepping the walkers of a shard (DESIGN §9): batched BAOAB Langevin MD with the model and its uncertainty,
every ``check_every`` steps each walker judged; periodic walkers at constant pressure through ASE.

The judgement of a checked frame: the sanity checks first (oedal.campaign.explore.checks), then the band of
the model's uncertainty (checks.decide): accurate below ``low``, a candidate up to ``high``, stopped above. A
stopped walker resumes next iteration from its last accepted frame; the frame that stopped it is a
candidate too unless its geometry is broken: the model failed there, so it is the most informative frame,
and without it a young model whose walkers all stop at once would find nothing to learn.

Why not one ASE MD per walker: a walker of ethanol is 9 atoms, and a forward/backward pass of the model
costs about the same for 9 atoms as for 150 (per-call overhead: neighbour lists, Python, small matrices), so
all walkers of a shard share one batch per step (benchmarks/bench_explore.py measures both). BAOAB
(Leimkuhler & Matthews, Appl. Math. Res. Express 2013, 34): B (½ kick) A (½ drift) O (Ornstein–Uhlenbeck)
A B, the centre-of-mass velocity of each molecule removed. Units: Å, eV, amu and ASE's time unit
(ase.units.fs); velocities Å per ASE time unit.
"""

from __future__ import annotations

import logging
import math
import time
import warnings
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch
from ase import units
from ase.data import atomic_masses

from oedal.campaign.explore.checks import Frame, broken_geometry, decide, sanity_reason
from oedal.campaign.explore.walker import Walker
from oedal.data.structures import Structures
from oedal.errors import InputError
from oedal.gmnn.batching import make_batch
from oedal.oed.bias import UncertaintyBias
from oedal.oed.uncertainty import UncertaintyHead, evaluate_with_uncertainty

log = logging.getLogger(__name__)
ID_BASE = 10**9  # candidate ids: (iteration + 1)·ID_BASE + walker·10⁵ + check


@dataclass(frozen=True)
class Dynamics:
    """What a walker shard runs: MD steps, the thermostat, the checks and the bands."""

    steps: int  # MD steps per walker in this iteration
    timestep: float  # fs
    friction: float  # 1/fs
    check_every: int  # steps between checks of the uncertainty
    low: float  # below: accurate
    high: float  # above: stopped
    limits: dict  # the sanity checks' limits (checks.CHECKS: the explore keys of each, and cutoff: the model's r_c)
    measure: str = "informativeness"  # what low/high bound: informativeness (I) or force_error (eV/Å)
    hydrostatic: bool = True  # NPT: the cell keeps its shape
    bias: UncertaintyBias | None = None  # walkers move on model + bias (oedal.oed.bias); checks judge the model
    skin: float = 0.5  # Å: the batched walkers' neighbour lists reach r_c + skin, rebuilt after a move of skin/2


class _Batch:
    """The active walkers' atoms, concatenated, as float64 tensors on the model's device: positions x and
    velocities v (N, 3), masses m and k_B T (N, 1), each atom's walker; numbers and cells on the host. The
    step loop stays on the device: only the noise (from each walker's own numpy stream, so a rerun and the
    CPU draw the same) goes there per step, and one scalar (the neighbour list's skin test) comes back."""

    def __init__(self, walkers: Sequence[Walker], device: torch.device):
        self.walkers, self.device = list(walkers), device
        self.n = np.array([len(w.numbers) for w in walkers], np.int64)
        self.start = np.concatenate([[0], np.cumsum(self.n)])
        self.numbers = np.concatenate([np.asarray(w.numbers) for w in walkers])
        tensor = lambda a: torch.as_tensor(np.asarray(a, np.float64), device=device)  # noqa: E731
        self.x = tensor(np.concatenate([w.arrays()[0] for w in walkers]))
        self.v = tensor(np.concatenate([w.arrays()[1] for w in walkers]))
        self.m = tensor(atomic_masses[self.numbers][:, None])
        self.kt = tensor(np.repeat([units.kB * w.temperature for w in walkers], self.n)[:, None])  # eV
        self.molecule = torch.as_tensor(np.repeat([not any(w.pbc) for w in walkers], self.n), device=device)
        self.walker = torch.as_tensor(np.repeat(np.arange(len(self.n)), self.n), device=device)
        self.mass = torch.zeros(len(self.n), dtype=torch.float64, device=device).index_add(0, self.walker, self.m[:, 0])
        self.rngs = [np.random.default_rng() for _ in walkers]
        for rng, w in zip(self.rngs, walkers):
            rng.bit_generator.state = w.rng
        self.cell = np.array([w.cell for w in walkers], np.float64).reshape(-1, 3, 3)
        self.pbc = np.array([w.pbc for w in walkers], bool).reshape(-1, 3)
        self.ids = np.array([w.index for w in walkers], np.int64)

    def slice(self, k: int) -> slice:
        return slice(int(self.start[k]), int(self.start[k + 1]))

    def noise(self) -> torch.Tensor:
        """(N, 3) standard normal numbers, each walker's from its own stream."""
        draws = np.concatenate([rng.normal(size=(int(n), 3)) for rng, n in zip(self.rngs, self.n)])
        return torch.from_numpy(draws).to(self.device)

    def remove_drift(self) -> None:
        """Zero the centre-of-mass velocity of every molecule (FixCom; the O step's noise adds drift)."""
        p = torch.zeros((len(self.n), 3), dtype=torch.float64, device=self.device).index_add(0, self.walker,
                                                                                              self.m * self.v)
        self.v -= torch.where(self.molecule[:, None], (p / self.mass[:, None])[self.walker], 0.0)

    def host(self) -> tuple[np.ndarray, np.ndarray]:
        """(positions, velocities) (N, 3) as numpy arrays on the host."""
        return self.x.cpu().numpy(), self.v.cpu().numpy()

    def temperature(self, k: int, v: np.ndarray) -> float:
        """Instantaneous kinetic temperature of walker k (K) from host velocities ``v``, 3N − 3 degrees of
        freedom for a molecule."""
        s = self.slice(k)
        dof = 3 * self.n[k] - (3 if not any(self.pbc[k]) else 0)
        m = atomic_masses[self.numbers[s]][:, None]
        return float((m * v[s] ** 2).sum() / (dof * units.kB)) if dof > 0 else 0.0


class _Pairs:
    """The batch's neighbour list with a skin (Verlet): pairs within r_c + ``skin`` Å, listed on the host
    from the positions of the last build and kept while no atom has moved ``skin``/2 from them. A pair
    beyond r_c adds exactly nothing (the cosine cutoff is 0 there, and so is its derivative), so the
    model's energies and forces are those of a list rebuilt every step, up to the order of a float sum."""

    def __init__(self, model, b: _Batch, skin: float):
        self.model, self.b, self.skin = model, b, skin
        self.batch, self.ref = None, None

    def __call__(self):
        """The model's Batch at the walkers' current positions (rebuilt when due)."""
        b = self.b
        if self.ref is None or float((b.x - self.ref).norm(dim=1).max()) > 0.5 * self.skin:
            x = b.x.cpu().numpy()
            structures = Structures(positions=x, numbers=b.numbers, n_atoms=b.n, cell=b.cell, pbc=b.pbc, ids=b.ids)
            self.batch = make_batch(structures, self.model.cutoff + self.skin, self.model.species, device=b.device,
                                    dtype=torch.float64)
            self.ref = b.x.clone()
        return self.batch._replace(positions=b.x)


def _evaluate(model, head: UncertaintyHead, pairs: _Pairs, check: bool, bias: Callable | None = None):
    """(energies (W,), forces (N, 3) eV/Å, the forces the walkers move on (N, 3), uncertainty or None) of the
    active walkers, tensors on the model's device: the model's energies and forces, and with a bias the
    model's plus the bias's forces; the uncertainty (UncertaintyHead.structure: score, informativeness,
    force_error (W,), on the host) only on a check."""
    ev, uncertainty = evaluate_with_uncertainty(model, head, pairs(), uncertainty=check, bias=bias)
    forces = ev.forces.double()
    moving = forces if ev.bias is None else forces + ev.bias.forces.double()
    return ev.energy, forces, moving, uncertainty


def baoab_step(model, head: UncertaintyHead, pairs: _Pairs, forces: torch.Tensor, dyn: Dynamics, check: bool,
               bias: Callable | None = None):
    """One BAOAB step of every active walker on ``forces`` (those it moves on); returns the new (energies,
    model forces, forces to move on, informativeness|None). ``dyn.bias`` as made for this head and device
    (``bias``: UncertaintyBias.of)."""
    b = pairs.b
    dt = dyn.timestep * units.fs
    c1 = math.exp(-dyn.friction / units.fs * dt)
    b.v += 0.5 * dt * forces / b.m
    b.x += 0.5 * dt * b.v
    b.v = c1 * b.v + math.sqrt(1.0 - c1 * c1) * torch.sqrt(b.kt / b.m) * b.noise()
    b.remove_drift()
    b.x += 0.5 * dt * b.v
    energies, model_forces, moving, info = _evaluate(model, head, pairs, check, bias)
    b.v += 0.5 * dt * moving / b.m
    return energies, model_forces, moving, info


def _check(b: _Batch, energies, forces, u: dict, dyn: Dynamics, iteration: int, records: list) -> list[int]:
    """Judge every active walker's frame; record candidates; returns the walkers that stop now."""
    x, v = b.host()
    energies, forces = energies.cpu().numpy(), forces.cpu().numpy()
    stopping = []
    for k, w in enumerate(b.walkers):
        s = b.slice(k)
        frame = Snapshot(x[s], v[s], b.numbers[s], forces[s], float(energies[k]), b.temperature(k, v), w.cell)
        if judge(w, frame, {key: float(u[key][k]) for key in ("informativeness", "force_error")}, dyn, iteration,
                 records):
            stopping.append(k)
    return stopping


@dataclass(frozen=True)
class Snapshot:
    """One walker's state at a check: positions, velocities (Å, Å per ASE time unit), forces (eV/Å),
    energy (eV), kinetic temperature (K), cell (3, 3) Å; ``cell_momentum``: the barostat's (NPT)."""

    x: np.ndarray
    v: np.ndarray
    numbers: np.ndarray
    forces: np.ndarray
    energy: float
    temperature: float
    cell: list
    cell_momentum: list | None = None


def judge(w: Walker, f: Snapshot, u: dict, dyn: Dynamics, iteration: int, records: list) -> bool:
    """Judge walker ``w``'s frame ``f`` with its uncertainty ``u`` (informativeness, force_error): count
    it, record a candidate (or the frame that stops it, unless broken), move the walker's last accepted
    frame. Returns whether the walker stops now."""
    frame = Frame(f.x, np.asarray(f.numbers), f.cell, w.pbc, f.forces, f.energy, w.last_energy, f.temperature,
                  w.temperature)
    reason = sanity_reason(frame, dyn.limits)
    value = u[dyn.measure]
    verdict = decide(value, dyn.low, dyn.high, reason)
    w.checks.append([w.step, value, reason, verdict])
    if verdict == "stopped":
        w.status, w.reason = "stopped", reason or f"{dyn.measure} {value:.3g} > {dyn.high}"
        if broken_geometry(frame, dyn.limits) is None:  # the model failed here, the geometry did not:
            records.append(_record(w, f, u, iteration, dyn))  # the most informative frame, a candidate
        return True
    w.counts[verdict] += 1
    w.last_energy = f.energy
    w.accepted = {"positions": f.x.tolist(), "velocities": f.v.tolist(), "cell": f.cell,
                  "cell_momentum": f.cell_momentum}
    if verdict == "candidate":
        records.append(_record(w, f, u, iteration, dyn))
    return False


def _record(w: Walker, f: Snapshot, u: dict, iteration: int, dyn: Dynamics) -> dict:
    """Walker ``w``'s frame as a candidate (id from iteration, walker and check)."""
    return {"id": (iteration + 1) * ID_BASE + w.index * 10**5 + (w.step // dyn.check_every),
            "walker": w.index, "step": w.step, "informativeness": u["informativeness"],
            "force_error": u["force_error"], "numbers": w.numbers, "positions": f.x.tolist(), "cell": f.cell,
            "pbc": w.pbc}


def _store(b: _Batch) -> None:
    """Copy the batch's positions, velocities and random streams back into its walkers."""
    x, v = b.host()
    for k, w in enumerate(b.walkers):
        s = b.slice(k)
        w.positions, w.velocities, w.rng = x[s].tolist(), v[s].tolist(), b.rngs[k].bit_generator.state


def run_walkers(model, head: UncertaintyHead, walkers: Sequence[Walker], dyn: Dynamics, iteration: int,
                records: list, checkpoint: Callable[[Sequence[Walker], list], None] | None = None,
                checkpoint_seconds: float = 30.0) -> None:
    """Step every running walker to ``dyn.steps`` (or until it stops), all as one batch; candidates go
    to ``records``. ``checkpoint(walkers, records)`` is called at least every ``checkpoint_seconds``,
    always right after a check (a rerun from it repeats the same steps)."""
    last_save = time.monotonic()
    npt = [w for w in walkers if w.status == "running" and w.pressure is not None and all(w.pbc)]
    for w in npt:
        last_save = run_cell_walker(model, head, w, dyn, iteration, records,
                                    lambda: checkpoint(walkers, records) if checkpoint else None,
                                    checkpoint_seconds, last_save)
    active = [w for w in walkers if w.status == "running" and w not in npt]
    while active:
        b = _Batch(active, model.device)
        pairs = _Pairs(model, b, dyn.skin)
        bias = None if dyn.bias is None else dyn.bias.of(head, model.device)
        energies, forces, moving, _ = _evaluate(model, head, pairs, False, bias)
        changed = False
        while not changed and b.walkers[0].step < dyn.steps:
            check = (b.walkers[0].step + 1) % dyn.check_every == 0
            energies, forces, moving, info = baoab_step(model, head, pairs, moving, dyn, check, bias)
            for w in b.walkers:
                w.step += 1
            if check:
                stopping = _check(b, energies, forces, info, dyn, iteration, records)
                _store(b)
                changed = bool(stopping)
                if checkpoint is not None and (changed or time.monotonic() - last_save >= checkpoint_seconds):
                    checkpoint(walkers, records)
                    last_save = time.monotonic()
        _store(b)
        for w in b.walkers:
            if w.status == "running" and w.step >= dyn.steps:
                w.status = "finished"
        active = [w for w in active if w.status == "running"]


def run_cell_walker(model, head: UncertaintyHead, w: Walker, dyn: Dynamics, iteration: int, records: list,
                    save: Callable[[], None], checkpoint_seconds: float, last_save: float) -> float:
    """Step one periodic walker at constant pressure to ``dyn.steps`` (or until it stops), judged every
    ``check_every`` steps; returns the time of the last ``save``. One ASE dynamics per walker, not a batch:
    the cell's equations couple all of a walker's atoms, ASE's integrator is maintained and tested, and a
    periodic walker is large enough (tens to hundreds of atoms) that the per-call overhead batching saves
    is small. Every stretch between checks starts from the walker's stored state, exactly as a rerun from
    a checkpoint does, so that a killed job reruns to the same candidates (the calculator's cached
    forces at the same positions make that free)."""
    from oedal.oed.calculator import UncertaintyCalculator

    calc = UncertaintyCalculator(model, head=head, bias=dyn.bias)
    while w.status == "running" and w.step < dyn.steps:
        n = min(dyn.check_every, dyn.steps - w.step)
        try:
            atoms, md, rng = _cell_dynamics(w, dyn, calc)
            md.run(n)
        except InputError as err:  # the calculator refuses what the MD made (a non-finite position or cell)
            w.step += n
            w.checks.append([w.step, float("nan"), str(err), "stopped"])
            w.status, w.reason = "stopped", f"the MD blew up: {err}"
            save()
            return time.monotonic()
        w.step += n
        r = atoms.calc.results
        frame = Snapshot(atoms.positions.copy(), atoms.get_velocities(), atoms.numbers, r["model_forces"],
                         r["model_energy"], atoms.get_temperature(), atoms.cell[:].tolist(),
                         np.asarray(md.p_eps).tolist())
        stopped = judge(w, frame, {k: r[k] for k in ("informativeness", "force_error")}, dyn, iteration, records)
        w.positions, w.velocities, w.cell = frame.x.tolist(), frame.v.tolist(), frame.cell
        w.cell_momentum, w.rng = frame.cell_momentum, rng.bit_generator.state
        if stopped or time.monotonic() - last_save >= checkpoint_seconds:
            save()
            last_save = time.monotonic()
    if w.status == "running":
        w.status = "finished"
    return last_save


def _cell_dynamics(w: Walker, dyn: Dynamics, calc):
    """(atoms, ASE LangevinBAOAB, its random stream) from walker ``w``'s stored state: BAOAB for the atoms,
    Langevin–Hoover for the cell (Quigley & Probert, J. Chem. Phys. 120, 11432 (2004)) at the walker's pressure."""
    from ase import Atoms
    from ase.md.langevinbaoab import LangevinBAOAB

    atoms = Atoms(w.numbers, positions=w.positions, cell=w.cell, pbc=w.pbc)
    atoms.set_velocities(np.asarray(w.velocities))
    atoms.calc = calc
    rng = np.random.default_rng()
    rng.bit_generator.state = w.rng
    t_tau = units.fs / dyn.friction if dyn.friction > 0 else 50 * dyn.timestep * units.fs
    with warnings.catch_warnings():  # ASE's heuristic barostat mass (a cell period of P_tau / 4) is meant
        warnings.simplefilter("ignore", UserWarning)
        md = LangevinBAOAB(atoms, dyn.timestep * units.fs, temperature_K=w.temperature, rng=rng,
                           externalstress=-w.pressure * units.GPa, hydrostatic=dyn.hydrostatic,
                           T_tau=t_tau, P_tau=20 * t_tau)  # ASE's default cell time scale, said aloud
    if w.cell_momentum is not None:
        md.p_eps = np.asarray(w.cell_momentum) if np.ndim(w.cell_momentum) else float(w.cell_momentum)
    return atoms, md, rng
