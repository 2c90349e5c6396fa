"""The kernel backend, chosen once per process (as torchani's ``strategy="auto"``).

* ``numba``: the compiled CPU kernels below; asking for it without numba is a SettingsError.
* ``torch``: the torch routes everywhere (and NumPy for the neighbour pairs of molecules): what a
  GPU runs, and the reference the kernels are tested against.
* ``auto`` (the default): numba where it is installed, else torch.

The choice comes from :func:`use_backend` (the CLI's global ``oedal --kernels``), else the
environment variable ``OEDAL_KERNELS``, else ``auto``. The kernels are imported on first use
(:func:`backend`; numba costs ≈ 0.3 s of start-up that not every command needs), and numba's
thread count is set then, on the thread that first asks: ``threads``, or torch's thread count at
that moment (the CLI's ``--threads``), at most NUMBA_NUM_THREADS. The count is per thread in
numba: worker threads that run whole batches call :meth:`Backend.single_thread`.

The kernels live beside their torch twins; tests compare each with its twin and with
:mod:`oedal.gmnn.reference`:

* :mod:`.pairs`: neighbour pairs of molecules (gmnn.neighbors), per-pair frames and terms of QS2
  (gmnn.tangents.local_frames, GaussianMoments.radial_derivative and angular_derivative);
* :mod:`.moments`: Gaussian-moment features for inference (GaussianMoments.inference_features);
* :mod:`.tangents`: QS2 in packed rows (gmnn.tangents.FeatureTangents, oed.sensitivities).

Kernels are top-level ``@njit(cache=True)`` functions, so the compiled code is kept between
processes (closures recompile every time, ≈ 3 s per kernel). Long argument lists are packed into
small tuples of inputs (a radial basis, index tables, a row layout); the arrays a ``prange`` loop
writes stay plain arguments: numba 0.68 drops such writes to an array unpacked from a tuple
argument when nothing outside the loop uses the tuple (seen on pair_rows while packing it).
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import sys
import threading
from types import ModuleType
from typing import Iterator, Literal, NamedTuple, get_args

from oedal.errors import SettingsError

KernelKind = Literal["auto", "torch", "numba"]
KERNEL_KINDS: tuple[str, ...] = get_args(KernelKind)
ENV_KERNELS = "OEDAL_KERNELS"


class Backend(NamedTuple):
    """The resolved backend: the kernel modules for ``numba``, None for each on ``torch``."""

    name: Literal["torch", "numba"]
    threads: int  # numba threads of the thread that resolved it (0 on torch)
    pairs: ModuleType | None
    moments: ModuleType | None
    tangents: ModuleType | None

    def single_thread(self) -> None:
        """The numba kernels single-threaded on the calling thread (numba's count is per thread):
        the initialiser of worker threads that each run whole batches."""
        if self.name == "numba":
            import numba

            numba.set_num_threads(1)


_lock = threading.Lock()
_request: tuple[str, int | None] | None = None  # (kind, threads) from use_backend; None: the environment
_resolved: Backend | None = None


def requested_kind(kind: str | None = None) -> str:
    """``kind``, else $OEDAL_KERNELS, else ``auto``; checked (SettingsError names the key)."""
    source = "kernels"
    if kind is None:
        kind, source = os.environ.get(ENV_KERNELS, "auto").strip().lower() or "auto", ENV_KERNELS
    if kind not in KERNEL_KINDS:
        raise SettingsError(f"{source}: unknown kernel backend {kind!r} ({' | '.join(KERNEL_KINDS)})")
    if kind == "numba" and importlib.util.find_spec("numba") is None:
        raise SettingsError(f"{source}: 'numba' requested but numba is not installed "
                            "(pip install numba, or choose kernels 'auto' or 'torch')")
    return kind


def use_backend(kind: KernelKind | None = None, threads: int | None = None) -> None:
    """Choose the backend of this process: ``kind`` (None: $OEDAL_KERNELS, else auto) and numba's
    thread count (None: torch's when first used). Checked now, loaded on first use."""
    global _request, _resolved
    if threads is not None and threads < 1:
        raise SettingsError(f"kernel threads must be ≥ 1, got {threads}")
    request = (requested_kind(kind), threads)
    with _lock:
        _request, _resolved = request, None


def backend() -> Backend:
    """The backend of this process, resolved (and numba's threads set) on the first call."""
    global _resolved
    if _resolved is None:
        with _lock:
            if _resolved is None:
                kind, threads = _request if _request is not None else (requested_kind(), None)
                _resolved = _load(kind, threads)
    return _resolved


def _load(kind: str, threads: int | None) -> Backend:
    """Import the kernels for ``kind`` and set numba's thread count on this thread."""
    if kind == "torch":
        return Backend("torch", 0, None, None, None)
    try:
        import numba
        import torch

        from oedal.gmnn.kernels import moments, pairs, tangents
    except ImportError:
        if kind == "numba":
            raise SettingsError("kernels: 'numba' requested but the numba kernels cannot be imported") from None
        return Backend("torch", 0, None, None, None)
    torch_threads = torch.get_num_threads()
    n = max(1, min(threads or torch_threads, numba.config.NUMBA_NUM_THREADS))
    numba.set_num_threads(n)  # starts numba's pool, whose OpenMP layer resets the process's OpenMP threads:
    torch.set_num_threads(torch_threads)  # torch's count stays as the caller set it
    return Backend("numba", n, pairs, moments, tangents)


@contextlib.contextmanager
def using(kind: KernelKind, threads: int | None = None) -> Iterator[Backend]:
    """Within the block, the backend ``kind`` (tests, benchmarks); after it, the previous choice
    and numba's previous thread count on this thread."""
    global _request, _resolved
    saved = _request, _resolved, _numba_threads()
    use_backend(kind, threads)
    try:
        yield backend()
    finally:
        with _lock:
            _request, _resolved = saved[:2]
        if saved[2]:
            import numba

            numba.set_num_threads(saved[2])


def _numba_threads() -> int:
    """numba's thread count on this thread, 0 where numba is not imported yet."""
    numba = sys.modules.get("numba")
    return numba.get_num_threads() if numba is not None else 0
