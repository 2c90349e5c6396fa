"""Candidate pools from Langevin molecular dynamics (the GM-NN ethanol protocol: GFN2-xTB here).

Ethanol at 1000 K, 0.5 fs steps, friction 0.01/fs, a frame every 10 steps. Velocity Verlet
started at 1000 K equilibrates near 350 K (energy flows into the potential): a thermostat is needed.
Every frame's energy and forces are a free by-product of the MD; they are kept only on request
(a labeled source for a test set or the replay oracle) — a pool file never holds labels.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from ase import Atoms, units
from ase.calculators.singlepoint import SinglePointCalculator

from oedal.data.structures import Structures
from oedal.errors import InputError
from oedal.campaign.settings import SamplingSettings
from oedal.oracles.base import ASEOracle, gives_stress
from oedal.oracles.registry import get_oracle

log = logging.getLogger(__name__)

NAMED_MOLECULES = {"ethanol": "CH3CH2OH"}
"""Names accepted by :func:`starting_geometry` → ase.build.molecule names."""


@dataclass
class MDResult:
    structures: Structures  # frames with energy (eV) and forces (eV/Å), ids 0..n−1
    temperatures: np.ndarray  # (n,) instantaneous kinetic temperature of each frame, K
    seconds: float


def starting_geometry(molecule: str) -> Atoms:
    """``'ethanol'`` (ase.build.molecule('CH3CH2OH')), any ase.build.molecule name, or a file."""
    from ase.build import molecule as build_molecule
    from ase.collections import g2

    if molecule in NAMED_MOLECULES:
        return build_molecule(NAMED_MOLECULES[molecule])
    if Path(molecule).exists():
        import ase.io

        try:
            return ase.io.read(molecule, index=0)
        except Exception as err:  # noqa: BLE001
            raise InputError(f"{molecule}: cannot read a starting geometry ({err})") from None
    if molecule in g2.names:
        return build_molecule(molecule)
    raise InputError(f"molecule {molecule!r}: neither a known name ({', '.join(NAMED_MOLECULES)}) nor a file")


def run_md(atoms: Atoms, settings: SamplingSettings, calculator=None) -> MDResult:
    """Langevin MD (ASE) from ``atoms``; returns ``settings.n_frames`` frames, one every ``interval`` steps
    after ``equilibration_steps``. Seeded: the same settings give the same trajectory."""
    from ase.constraints import FixCom
    from ase.md.langevin import Langevin
    from ase.md import velocitydistribution as vd

    start = time.perf_counter()
    os.environ.setdefault("OMP_NUM_THREADS", str(settings.potential.threads))  # before tblite starts
    if calculator is None:
        oracle = get_oracle(settings.potential)
        if not isinstance(oracle, ASEOracle):
            raise InputError(f"sampling.potential.kind {settings.potential.kind!r} has no ASE calculator for MD")
        calculator = oracle.calculator
    atoms = atoms.copy()
    atoms.set_constraint(FixCom())  # fixcm=True of ASE's Langevin runs ~20 % hot for ethanol
    atoms.calc = calculator
    rng = np.random.default_rng(settings.seed)
    thermalize = getattr(vd, "thermalize_momenta", None) or vd.MaxwellBoltzmannDistribution  # ASE ≥ 3.28 / older
    thermalize(atoms, temperature_K=settings.temperature, rng=rng)
    vd.Stationary(atoms)
    vd.ZeroRotation(atoms)
    dyn = Langevin(
        atoms,
        timestep=settings.timestep * units.fs,
        temperature_K=settings.temperature,
        friction=settings.friction / units.fs,
        fixcm=False,
        rng=rng,
    )
    if settings.equilibration_steps:
        dyn.run(settings.equilibration_steps)
    n = settings.n_frames
    frames, temperatures = [], np.zeros(n)
    last_log = time.monotonic()
    for k in range(n):
        dyn.run(settings.interval)
        frame = atoms.copy()  # copies positions, numbers, cell, pbc (not the calculator)
        frame.set_constraint()
        labels = {"energy": atoms.get_potential_energy(), "forces": atoms.get_forces(apply_constraint=False)}  # cached
        if gives_stress(calculator, atoms):  # a cell: its stress too (eV/Å³)
            labels["stress"] = atoms.get_stress()
        frame.calc = SinglePointCalculator(frame, **labels)
        frames.append(frame)
        temperatures[k] = atoms.get_temperature()
        if time.monotonic() - last_log >= 15 or k == n - 1:
            log.info(
                "MD: %d/%d frames, %.1f ps, mean T %.0f K, %.2f ms/step",
                k + 1, n, (settings.equilibration_steps + (k + 1) * settings.interval) * settings.timestep / 1000,
                temperatures[: k + 1].mean(),
                1000 * (time.perf_counter() - start) / (settings.equilibration_steps + (k + 1) * settings.interval),
            )
            last_log = time.monotonic()
    structures = Structures.from_atoms(frames, ids=np.arange(n))
    if not (np.all(np.isfinite(structures.energy)) and np.all(np.isfinite(structures.forces))):
        raise InputError("MD produced non-finite energies or forces (the trajectory blew up)")
    return MDResult(structures, temperatures, time.perf_counter() - start)


def sample_pool(settings: SamplingSettings, out: str | Path, labels: bool = False, overwrite: bool = False) -> MDResult:
    """Run the MD of ``settings`` and write its frames to the store ``out`` (ids 0..n−1).

    Without ``labels`` the store is a pool (no energies/forces); with it, a labeled data set.
    """
    from oedal.data.store import write_store

    out = Path(out)
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} exists; refusing to overwrite it")
    result = run_md(starting_geometry(settings.molecule), settings)
    structures = result.structures if labels else result.structures.without_labels()
    attrs = {
        "source": f"Langevin MD of {settings.molecule} with {settings.potential.kind}",
        "sampling": settings.model_dump_json(),
        "mean_temperature_K": float(result.temperatures.mean()),
    }
    write_store(out, structures, attrs=attrs, overwrite=overwrite)
    log.info(
        "wrote %d frames (%s) to %s; mean T %.0f K; %.1f s",
        len(structures), "with labels" if labels else "no labels", out, result.temperatures.mean(), result.seconds,
    )
    return result
