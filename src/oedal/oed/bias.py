"""Uncertainty-biased dynamics (DESIGN §13): an energy that pulls walkers toward what the model does not know.

Uncertainty-driven dynamics (Kulichenko et al., Nat. Comput. Sci. 3, 230 (2023)) adds to the model's energy

    E_bias(x) = −A · (1 − exp(−u(x) / B))

with u the model's own calibrated uncertainty: here the expected force error of the structure,
u = a · s_λ(x)^p (eV/Å; oedal.oed.uncertainty: s_λ = gᵀ(Ã + λI)⁻¹g with g = Σ_i σ_i h_i, the map a·s^p fitted on
the validation set). E_bias falls from 0 (a known structure) toward −A (the model knows nothing), steepest where u
is small against B: A (eV) is how deep the pull is, B (eV/Å) the force error over which it acts; u ≪ B gives
E_bias ≈ −A·u/B. Its forces and virial come from autograd through g (GMNN.evaluate's ``bias``), one more
backward pass per step. The walkers integrate model + bias; every check, band and record judges the model alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from oedal.oed.uncertainty import UncertaintyHead


@dataclass(frozen=True)
class UncertaintyBias:
    """E_bias = −strength · (1 − exp(−u / width)), u the calibrated force error (module docstring)."""

    strength: float  # A, eV
    width: float | None = None  # B, eV/Å; None: the model's own force error at informativeness ``low``
    low: float = 1.0  # the walkers' lower band (I), where a None width is read

    def width_for(self, head: UncertaintyHead) -> float:
        """B (eV/Å): ``width``, or the calibrated force error of a structure at I = ``low`` (score = low·σ_th,
        s = score/(1 − score)): what the model's typical training structure has when low = 1."""
        if self.width is not None:
            return self.width
        score = min(self.low * head.threshold, 1.0 - 1e-12)
        return float(head.error_map[0] * (score / (1.0 - score)) ** head.error_map[1])

    def of(self, head: UncertaintyHead, device: torch.device | str = "cpu") -> Callable[[torch.Tensor], torch.Tensor]:
        """The bias as a differentiable function of the sensitivities g (n, d) float64 → (n,) eV, for ``head``;
        made once per run on the ``device`` of the g it will see (the walkers' loop keeps it there)."""
        chol = torch.from_numpy(head.chol).to(device)  # (d, d) lower Cholesky factor of Ã + λI
        a, p = head.error_map
        width = self.width_for(head)

        def energy(g: torch.Tensor) -> torch.Tensor:
            z = torch.linalg.solve_triangular(chol.to(g.device), g.T, upper=False)  # (d, n): C⁻¹g
            s = (z * z).sum(dim=0)  # (n,) s_λ
            u = a * s.clamp_min(1e-300) ** p  # (n,) eV/Å
            return -self.strength * (1.0 - torch.exp(-u / width))

        return energy
