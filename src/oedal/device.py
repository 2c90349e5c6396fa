"""Where torch runs: device resolution and CPU thread count."""

from __future__ import annotations

import logging

import torch

from oedal.errors import SettingsError

log = logging.getLogger(__name__)


def resolve_device(spec: str | torch.device = "auto") -> torch.device:
    """``auto`` → cuda if available else cpu; ``cpu``, ``cuda``, ``cuda:N`` as given (checked).

    A CUDA device asked for where torch finds none (a GPU job on a node without a GPU, or a CPU-only
    torch build) is not an error: one warning line in the log, and the CPU."""
    if isinstance(spec, torch.device):
        return spec
    spec = (spec or "auto").strip().lower()
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(spec)
    except (RuntimeError, ValueError):
        raise SettingsError(f"device: unknown device {spec!r} (auto | cpu | cuda | cuda:N)") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        log.warning("device %r requested but torch finds no CUDA device here: running on the CPU", spec)
        return torch.device("cpu")
    if dev.type not in ("cpu", "cuda"):
        raise SettingsError(f"device: unsupported device type {dev.type!r}")
    return dev


def set_threads(threads: int | None) -> None:
    """Set torch's CPU intra-op threads (None: leave torch's default)."""
    if threads is not None:
        torch.set_num_threads(int(threads))
