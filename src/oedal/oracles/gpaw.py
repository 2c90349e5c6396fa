"""Plane-wave PAW DFT through GPAW (Mortensen et al., J. Chem. Phys. 160, 092503 (2024)), the fast periodic
oracle of the materials campaign (DESIGN §12): energy, forces and the analytical plane-wave stress of a cell.

Chosen by measuring four codes on the 8-atom Si cell (PBE, 1 thread): GPAW (PW 300 eV, 2×2×2 k) 6–8 s per
label, CP2K from Debian (DZVP, 350 Ry, 2×2×2 k) 15–18 s, PySCF PBC (gth-szv, Γ) ≈ 130 s, CHGNet 0.03 s.
GPAW is built from PyPI against libxc (``make gpaw``: ``apt-get install libxc-dev libopenblas-dev``, then
``pip install gpaw gpaw-data``, the PAW setups as a wheel: nothing is downloaded at run time); under
``--sdm conda`` it comes from conda-forge (envs/materials.yaml).

The k-mesh is ``kpts`` when given, else the Monkhorst–Pack mesh of density ``kpt_density`` (k-points per Å⁻¹,
ASE's ``kptdensity2monkhorstpack``: n_i = ⌈2π |b_i| · density⌉ along periodic directions, so a vacuum
direction gets one point). The default 1.3 Å gives 2×2×2 for the 8-atom cubic Si cell from −10 % to +10 %
strain and 2×2×1 for its slab with 10 Å of vacuum: one mesh across a campaign's cells, no jump in the
labels from a k-point that appears under strain. A new calculator per structure: a label never depends on
which structure the process labeled before (the label cache's premise). Every setting that changes a
number keys the cache.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from ase import Atoms
from pydantic import Field, model_validator

from oedal.oracles.base import ElectronicSettings, Oracle, OracleFailure, OracleResult


class GPAWSettings(ElectronicSettings):
    """PBE plane waves at 300 eV, the k-mesh from a density of 1.3 Å, Fermi–Dirac smearing 0.01 eV."""

    kind: Literal["gpaw"] = "gpaw"
    xc: str = Field("PBE", description="exchange-correlation functional (GPAW/libxc name)")
    ecut: float = Field(300.0, gt=0, description="plane-wave cutoff (eV)")
    kpts: list[int] | None = Field(None, min_length=3, max_length=3, description="Monkhorst–Pack mesh; "
                                   "None: from kpt_density")
    kpt_density: float = Field(1.3, gt=0, description="k-points per Å⁻¹ (2π|b|·density, rounded up) when kpts "
                               "is None")
    smearing: float = Field(0.01, gt=0, description="Fermi–Dirac width (eV)")
    energy_tolerance: float = Field(1e-6, gt=0, description="SCF convergence of the energy (eV per valence "
                                    "electron)")
    density_tolerance: float = Field(1e-5, gt=0, description="SCF convergence of the density (electrons per "
                                     "valence electron)")
    spinpol: bool = Field(False, description="spin-polarised calculation")

    @model_validator(mode="after")
    def _charge_only(self) -> "GPAWSettings":
        if self.multiplicity != 1 and not self.spinpol:
            raise ValueError("gpaw: a multiplicity other than 1 needs spinpol: true")
        return self


def k_mesh(atoms: Atoms, settings: GPAWSettings) -> tuple[int, int, int]:
    """The Monkhorst–Pack mesh of ``atoms``: ``settings.kpts``, or the mesh of density ``kpt_density``."""
    if settings.kpts is not None:
        return tuple(settings.kpts)
    from ase.calculators.calculator import kptdensity2monkhorstpack

    return tuple(int(n) for n in kptdensity2monkhorstpack(atoms, settings.kpt_density, even=False))


def import_gpaw():
    """``import gpaw``, with numpy left as it was. GPAW switches on debug wrappers for the whole process when it
    finds pytest imported (gpaw/__init__.py: ``np.empty`` and ``np.empty_like`` replaced by functions that fill
    with NaN, ``np.seterr`` raising on overflow, division and invalid values): numba's compiled kernels then
    refuse the replaced ``np.empty``, and every later float warning becomes an exception. A user's test suite,
    and this one, would see oedal fail far from GPAW; a labeling job outside pytest runs GPAW as it is."""
    import numpy as np

    empty, empty_like, errors = np.empty, np.empty_like, np.geterr()
    try:
        import gpaw
    finally:
        np.empty, np.empty_like = empty, empty_like
        np.seterr(**errors)
    return gpaw


class GPAWOracle(Oracle):
    kind, Settings, environment = "gpaw", GPAWSettings, "materials"

    def __init__(self, settings: GPAWSettings) -> None:
        import os

        self.settings = settings
        os.environ.setdefault("OMP_NUM_THREADS", str(settings.threads))
        try:
            import_gpaw()
        except ImportError as err:
            raise ImportError(f"oracle kind 'gpaw' needs GPAW: `make gpaw` (or conda's envs/materials.yaml) ({err})"
                              ) from None
        k = "x".join(map(str, settings.kpts)) if settings.kpts else f"density {settings.kpt_density:g}/Å⁻¹"
        self.name = f"gpaw {settings.xc} PW {settings.ecut:g} eV k {k}"

    def _calculator(self, atoms: Atoms):
        from gpaw import GPAW, PW, FermiDirac

        s = self.settings
        return GPAW(mode=PW(s.ecut), xc=s.xc, kpts=k_mesh(atoms, s), occupations=FermiDirac(s.smearing),
                    charge=s.charge, spinpol=s.spinpol, maxiter=s.max_iterations, txt=None,
                    convergence={"energy": s.energy_tolerance, "density": s.density_tolerance})

    def _attached(self, atoms: Atoms) -> Atoms:
        if not atoms.pbc.all():
            raise OracleFailure("the gpaw oracle (plane waves) labels cells periodic in all three directions: put a "
                                "slab or a molecule in a box with vacuum and pbc = True")
        atoms = atoms.copy()
        if self.settings.spinpol:
            atoms.set_initial_magnetic_moments([(self.settings.multiplicity - 1) / len(atoms)] * len(atoms))
        atoms.calc = self._calculator(atoms)
        return atoms

    def energy(self, atoms: Atoms) -> float:
        """The energy alone (eV): one SCF, no forces or stress (finite differences, checks)."""
        return float(self._run(lambda a: a.get_potential_energy(), atoms))

    def label(self, atoms: Atoms) -> OracleResult:
        def everything(a: Atoms) -> OracleResult:
            energy = float(a.get_potential_energy())  # eV
            forces = np.array(a.get_forces(), dtype=np.float64)  # (n_atoms, 3) eV/Å
            stress = np.array(a.get_stress(voigt=False), dtype=np.float64)  # (3, 3) eV/Å³, ASE's sign
            return OracleResult(energy, forces, (stress + stress.T) / 2)

        return self._run(everything, atoms)

    def _run(self, compute, atoms: Atoms):
        attached = self._attached(atoms)
        try:
            return compute(attached)
        except OracleFailure:  # a timeout (OracleTimeout) keeps its type
            raise
        except Exception as err:  # noqa: BLE001 — GPAW raises KohnShamConvergenceError and others
            raise OracleFailure(f"GPAW failed: {type(err).__name__}: {err}") from None
