"""Periodic Kohn–Sham DFT through PySCF's ``pyscf.pbc`` (DESIGN §12): energy, forces and stress of a cell.

GTH pseudopotentials with their Gaussian basis sets (shipped inside the pyscf wheel: no system package),
plane-wave density fitting (FFTDF) on a mesh set by ``ke_cutoff``, a Monkhorst–Pack k-mesh, optional
Fermi–Dirac smearing for metals. Forces are −∂E/∂R and the stress σ = (1/V) ∂E/∂ε (ASE's sign, symmetrised)
from PySCF's analytical gradients (``mf.Gradients().get_stress()``, checked against finite differences of
the energy in tests/test_periodic_oracle.py). Every setting that changes a number keys the label cache.

Cost (2 cores shared with other jobs, 1 thread, PBE/gth-szv, Γ only, ke_cutoff 60 Ha): ≈ 20 s for the
2-atom Si cell, ≈ 130 s for the 8-atom cubic cell (SCF ≈ 60 %, forces and stress the rest).
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from ase import Atoms
from ase.units import Bohr, Hartree
from pydantic import Field

from oedal.oracles.base import ElectronicSettings, Oracle, OracleFailure, OracleResult


class PySCFPBCSettings(ElectronicSettings):
    """Periodic KS-DFT; default PBE with GTH-PBE pseudopotentials and the gth-szv basis at the Γ point."""

    kind: Literal["pyscf_pbc"] = "pyscf_pbc"
    xc: str = Field("pbe", description="exchange-correlation functional (PySCF name)")
    basis: str = Field("gth-szv", description="GTH basis (gth-szv, gth-dzvp, ...: PySCF names)")
    pseudo: str = Field("gth-pbe", description="GTH pseudopotential matching the functional")
    kpts: list[int] = Field([1, 1, 1], min_length=3, max_length=3, description="Monkhorst–Pack k-mesh")
    ke_cutoff: float | None = Field(None, gt=0, description="plane-wave cutoff of the density (Hartree); "
                                    "None: PySCF's choice from the basis (precise, slower)")
    smearing: float | None = Field(None, gt=0, description="Fermi–Dirac smearing width (Hartree) for metals")
    conv_tol: float = Field(1e-9, gt=0, description="SCF energy convergence (Hartree)")


class PySCFPBCOracle(Oracle):
    kind, Settings, environment = "pyscf_pbc", PySCFPBCSettings, "pyscf"

    def __init__(self, settings: PySCFPBCSettings) -> None:
        from pyscf import lib

        self.settings = settings
        self.name = f"pyscf-pbc {settings.xc}/{settings.basis}/{settings.pseudo} k{'x'.join(map(str, settings.kpts))}"
        lib.num_threads(settings.threads)

    def _mean_field(self, atoms: Atoms):
        from pyscf.pbc import dft, gto, scf

        s = self.settings
        cell = gto.Cell()
        cell.atom = [(sym, tuple(pos)) for sym, pos in zip(atoms.get_chemical_symbols(), atoms.positions)]
        cell.a = np.asarray(atoms.cell, dtype=np.float64)
        cell.unit = "A"
        cell.basis, cell.pseudo = s.basis, s.pseudo
        cell.charge, cell.spin = s.charge, s.multiplicity - 1
        if s.ke_cutoff is not None:
            cell.ke_cutoff = s.ke_cutoff
        cell.verbose = 0
        cell.build()
        kind = dft.KRKS if s.multiplicity == 1 else dft.KUKS
        mf = kind(cell, kpts=cell.make_kpts(s.kpts), xc=s.xc)
        if s.smearing is not None:
            mf = scf.addons.smearing_(mf, sigma=s.smearing, method="fermi")
        mf.conv_tol, mf.max_cycle = s.conv_tol, s.max_iterations
        return mf

    def _converged(self, atoms: Atoms):
        """The converged mean field of ``atoms`` and its energy (Hartree), or :class:`OracleFailure`."""
        if not atoms.pbc.all():
            raise OracleFailure("the pyscf_pbc oracle labels cells periodic in all three directions (use pyscf for "
                                "molecules)")
        mf = self._mean_field(atoms)
        try:
            energy = mf.kernel()  # Hartree
        except Exception as err:  # noqa: BLE001 — PySCF raises many types for a cell it cannot treat
            raise OracleFailure(f"SCF failed: {type(err).__name__}: {err}") from None
        if not mf.converged:
            raise OracleFailure(f"SCF not converged in {self.settings.max_iterations} cycles")
        return mf, energy

    def energy(self, atoms: Atoms) -> float:
        """The energy alone (eV): one SCF, no gradients (finite differences, checks)."""
        return float(self._converged(atoms)[1]) * Hartree

    def label(self, atoms: Atoms) -> OracleResult:
        mf, energy = self._converged(atoms)
        gradients = mf.Gradients()
        forces = -np.asarray(gradients.kernel(), dtype=np.float64) * (Hartree / Bohr)  # (n_atoms, 3) eV/Å
        stress = np.asarray(gradients.get_stress(), dtype=np.float64) * (Hartree / Bohr**3)  # (3, 3) eV/Å³
        return OracleResult(float(energy) * Hartree, forces, (stress + stress.T) / 2)
