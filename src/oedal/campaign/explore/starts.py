"""Where an exploration campaign starts (DESIGN §9): its start geometries, and the initial training and
validation structures the oracle labels (explore.initial): rattled copies of the starts, or frames of a short
MD of them with a cheap potential (sampling.potential)."""

from __future__ import annotations

import dataclasses
import logging
from typing import Sequence

import numpy as np

from oedal.campaign.explore.checks import geometry_limits, labelable
from oedal.data.structures import Structures
from oedal.errors import InputError

log = logging.getLogger(__name__)

MD_POOL_IDS = 2 * 10**12
"""The first id of the MD pool (explore.random_pool md): apart from the initial structures (0 … n − 1) and the
walkers' candidates ((iteration + 1)·10⁹ + …), so that no pick can take an id the training set has."""


def starting_structures(names: Sequence[str]) -> list:
    """ase.Atoms of every start (a molecule name or a geometry file, its first frame)."""
    from oedal.campaign.sampling import starting_geometry

    return [starting_geometry(name) for name in names]


def random_strain(rng: np.random.Generator, size: float) -> np.ndarray:
    """A random symmetric strain ε (3, 3) whose largest principal strain |λ| is ``size``: the cell h → h (1 + ε)."""
    g = rng.normal(size=(3, 3))
    e = (g + g.T) / 2
    return e * (size / np.abs(np.linalg.eigvalsh(e)).max())


def rattled_structures(names: Sequence[str], n: int, rattle: float, seed: int, limits: dict | None = None,
                       tries: int = 1000, strain: float = 0.0) -> Structures:
    """``n`` unlabeled copies of the starts (in turn), copy k's atoms displaced by N(0, σ_k²) per axis with
    σ_k = ``rattle``·(k + 1)/n Å: amplitudes spread evenly up to ``rattle``, so that the model learns the
    basin the walkers start in as well as its walls (one large σ gives only distorted copies, and a model
    that has never seen the start's neighbourhood sends its walkers downhill into its own holes). A copy
    with a short contact (``limits``: min_distance, min_bond_factor; checks.ShortContact) is drawn again. The
    initial training and validation structures of an exploration campaign, for the oracle to label.

    A cell (periodic in 3-D) is first strained by :func:`random_strain` of size ``strain``·(k + 1)/n, positions
    scaled with it, so that its labels hold stresses of both signs and the model learns the stress; with
    ``strain`` 0 no strain is drawn (the copies are those of campaigns made before strain existed)."""
    limits = {"min_distance": 0.5, "min_bond_factor": 0.0} if limits is None else limits
    starts = starting_structures(names)
    rng = np.random.default_rng([seed, 7])
    frames = []
    for k in range(n):
        atoms = starts[k % len(starts)].copy()
        if strain > 0 and atoms.pbc.all():
            atoms.set_cell(atoms.cell[:] @ (np.eye(3) + random_strain(rng, strain * (k + 1) / n)), scale_atoms=True)
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
    (and, for cells, strained) copies of the starts, frames of a short MD of each start with
    ``sampling.potential``, or ⌈n/2⌉ of the first and the rest of the second ('mixed'); ids 0..n−1."""
    limits = {key: getattr(settings, key) for key in geometry_limits()}
    rattled = n if settings.initial == "rattle" else -(-n // 2) if settings.initial == "mixed" else 0
    parts = []
    if rattled:
        parts.append(rattled_structures(settings.starts, rattled, settings.rattle, seed, limits,
                                        strain=settings.strain))
    if n - rattled:
        parts.append(md_structures(settings, sampling, n - rattled, seed))
    return parts[0] if len(parts) == 1 else dataclasses.replace(Structures.concatenate(parts), ids=np.arange(n))


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


def md_pool(settings, sampling, seed: int) -> tuple[Structures, int]:
    """The pool of the random baseline (explore.random_pool md): a Langevin MD of every start at every walker
    temperature with ``sampling.potential``, ``settings.pool_frames`` frames each, ``sampling.interval`` steps apart
    after ``sampling.equilibration_steps`` (the MD the test set comes from, at the walkers' temperatures); unlabeled
    (the oracle labels what is picked), ids from MD_POOL_IDS. Returns it and the MD steps it took, each a call of
    the potential: what the pool cost beyond its labels."""
    from oedal.campaign.sampling import run_md

    parts, steps = [], 0
    for i, atoms in enumerate(starting_structures(settings.starts)):
        for j, temperature in enumerate(settings.temperatures):
            md = sampling.model_copy(update={"temperature": temperature, "n_frames": settings.pool_frames,
                                             "seed": (seed * 1000 + i) * 100 + j})
            parts.append(run_md(atoms, md).structures.without_labels())
            steps += md.equilibration_steps + md.n_frames * md.interval
    pool = Structures.concatenate(parts)
    return dataclasses.replace(pool, ids=MD_POOL_IDS + np.arange(len(pool))), steps


def write_md_pool(settings, sampling, seed: int, out) -> Structures:
    """:func:`md_pool`, written to the unlabeled store ``out`` (attributes ``content`` and ``md_steps``)."""
    from oedal.data.store import write_store

    pool, steps = md_pool(settings, sampling, seed)
    temperatures = ", ".join(f"{t:g}" for t in settings.temperatures)
    how = f"MD of the starts with {sampling.potential.kind} at {temperatures} K"
    write_store(out, pool, attrs={"content": how, "md_steps": steps})
    log.info("wrote the MD pool: %d frames (%s, %d steps) to %s", len(pool), how, steps, out)
    return pool


def write_initial_structures(settings, sampling, n: int, seed: int, out) -> Structures:
    """:func:`initial_structures`, written to the unlabeled store ``out`` (attribute ``content`` says how
    they were made)."""
    from oedal.data.store import write_store

    structures = initial_structures(settings, sampling, n, seed)
    rattled = f"rattled starts (sigma up to {settings.rattle} A, strain up to {settings.strain})"
    md = f"MD of the starts with {sampling.potential.kind}"
    how = {"rattle": rattled, "md": md, "mixed": f"{rattled}, then {md}"}[settings.initial]
    write_store(out, structures, attrs={"content": how})
    log.info("wrote %d initial structures (%s) of %s to %s", len(structures), how, ", ".join(settings.starts), out)
    return structures
