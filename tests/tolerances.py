"""Tolerances from the arithmetic (STYLE.md), for every float a test compares that was computed twice.

A number computed again — in another process, with another BLAS build or CPU, another thread count or
kernel backend (``OEDAL_KERNELS``) — differs by rounding alone: a sum runs in another order, a fused
multiply-add is used or not, a vector unit is wider. That difference grows with the magnitude of what
was summed and with the precision it was summed in, never with one machine's luck, so a comparison is

    |actual − expected| ≤ ulps · eps(dtype) · scale

* ``eps(dtype)``: the unit roundoff of the precision the arithmetic ran in (float32 for the model's
  per-atom network, float64 for totals, shifts and the OED maths);
* ``scale``: the magnitude of the quantity that was summed (Σ |terms|, e.g. Σ_i σ_i Σ_k |w_k h_ik| for an
  energy from a float32 network: :func:`network_energy_scale`), never the result alone when terms cancel;
  by default the largest |expected| of the array;
* ``ulps``: a few. Measured on the model file of tests/test_registries.py under torch threads 1 and 2,
  ``ATEN_CPU_CAPABILITY`` default / avx2 / avx512, ``MKL_ENABLE_INSTRUCTIONS=SSE4_2`` and both kernel
  backends: ≤ 1 ulp of the energy's summed float32 terms, ≤ 3 ulps of an atom's summed pair forces
  (:func:`force_scale`). :data:`ULPS` leaves a factor of 10–30 above that.

Comparisons of a result with itself in one process (a bit-exact resume, the same call twice) stay exact:
those must not differ at all.
"""

from __future__ import annotations

import numpy as np

ULPS = 32


def tolerance(scale, dtype=np.float64, ulps: float = ULPS) -> np.ndarray:
    """``ulps`` units of roundoff of ``dtype`` at the magnitude ``scale`` (broadcast elementwise)."""
    return ulps * float(np.finfo(dtype).eps) * np.abs(np.asarray(scale, dtype=np.float64))


def assert_close(actual, expected, tol=None, *, dtype=np.float64, scale=None, ulps: float = ULPS,
                 err_msg: str = "") -> None:
    """Assert |actual − expected| ≤ ``tol`` elementwise; ``tol`` defaults to :func:`tolerance` of
    ``scale`` (default: the largest |expected|) in ``dtype``. The message gives the worst element in
    units of the tolerance."""
    actual = np.asarray(actual, dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    assert actual.shape == expected.shape, f"shapes differ: {actual.shape} vs {expected.shape} {err_msg}"
    if tol is None:
        tol = tolerance(np.max(np.abs(expected), initial=0.0) if scale is None else scale, dtype, ulps)
    tol = np.broadcast_to(np.asarray(tol, dtype=np.float64), expected.shape)
    diff = np.abs(actual - expected)
    bad = ~(diff <= tol)  # NaN differences are violations too
    if bad.any():
        k = np.unravel_index(int(np.argmax(np.where(bad, diff / np.maximum(tol, 1e-300), 0.0))), expected.shape)
        raise AssertionError(
            f"{int(bad.sum())} of {expected.size} elements beyond the tolerance; worst at {tuple(map(int, k))}: "
            f"{actual[k]!r} vs {expected[k]!r}, |diff| {diff[k]:.3g} > {tol[k]:.3g} ({np.dtype(dtype).name}, {ulps} ulps)"
            f" {err_msg}")


def network_energy_scale(model, structures) -> np.ndarray:
    """(n_structures,) eV: Σ_i |σ_i| (Σ_k |w_k h_ik| + |b|), the magnitude of the float32 terms summed into
    each total energy by the model's output layer (the float64 shifts μ add only float64 roundoff)."""
    import torch

    from oedal.gmnn.batching import make_batch

    batch = make_batch(structures, model.cutoff, model.species)
    with torch.no_grad():
        h = model.atomic_features(batch).abs().double()  # (n_atoms, d)
        w = model.output.weight.detach().abs().double()[0]  # (d,)
        per_atom = model.atomic_scale(batch).detach().abs().double() * (h @ w + model.output.bias.detach().abs().double())
        return per_atom.new_zeros(batch.n_structures).index_add(0, batch.structure, per_atom).numpy()


def force_scale(model, structures) -> np.ndarray:
    """(n_atoms, 1) eV/Å: Σ over an atom's pairs of |∂E/∂r_ij|, the magnitude of the terms summed into
    each of its forces (the model dtype's roundoff applies)."""
    import torch

    from oedal.gmnn.batching import make_batch

    batch = make_batch(structures, model.cutoff, model.species)
    disp = batch.displacements().detach().to(model.dtype).requires_grad_(True)
    with torch.enable_grad():
        energy = model.atomic_energies(batch, disp).sum()
        (grad,) = torch.autograd.grad(energy, disp)
    size = torch.linalg.vector_norm(grad.detach().double(), dim=1)  # (n_pairs,)
    idx = torch.cat([batch.pair_i, batch.pair_j])
    per_atom = size.new_zeros(batch.species.shape[0]).index_add(0, idx, torch.cat([size, size]))
    return per_atom.numpy()[:, None]
