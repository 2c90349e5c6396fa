"""The numba CPU kernels, loaded on first use."""

from __future__ import annotations

import functools


@functools.cache
def kernels():
    """oedal.gmnn.kernels, or None without numba (imported on first use: numba costs ≈ 0.3 s of start-up
    that not every command needs). Callers fall back to NumPy or torch on None."""
    try:
        from oedal.gmnn import kernels as compiled
    except ImportError:  # pragma: no cover - numba is a dependency
        return None
    return compiled
