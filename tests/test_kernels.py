"""The kernel backend: chosen once (use_backend, $OEDAL_KERNELS, auto), numba's threads set when it
is resolved (not at import), a clear error for numba where it is missing."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys

import pytest

from oedal.errors import SettingsError
from oedal.gmnn import kernels


def test_torch_and_numba_backends():
    with kernels.using("torch") as chosen:
        assert chosen.name == "torch" and chosen.pairs is chosen.moments is chosen.tangents is None
        assert kernels.backend() is chosen  # resolved once
    with kernels.using("numba", threads=1) as chosen:
        assert chosen.name == "numba" and chosen.threads == 1
        assert chosen.moments.gaussian_moments is not None and chosen.tangents.scatter_rows is not None


def test_auto_follows_the_environment(monkeypatch):
    monkeypatch.delenv(kernels.ENV_KERNELS, raising=False)
    monkeypatch.setenv(kernels.ENV_KERNELS, "torch")
    with kernels.using("auto"):
        kernels.use_backend()  # None: the environment
        assert kernels.backend().name == "torch"
    monkeypatch.delenv(kernels.ENV_KERNELS)
    with kernels.using("auto") as chosen:
        assert chosen.name == "numba"  # installed: numba is a dependency


def test_numba_where_it_is_missing_is_a_settings_error(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "numba" else real(name, *a))
    with pytest.raises(SettingsError, match="'numba' requested but numba is not installed"):
        kernels.use_backend("numba")
    monkeypatch.setenv(kernels.ENV_KERNELS, "numba")
    with pytest.raises(SettingsError, match="OEDAL_KERNELS: 'numba' requested"):
        kernels.use_backend()
    with pytest.raises(SettingsError, match="unknown kernel backend 'gpu'"):
        kernels.use_backend("gpu")


def test_numba_threads_set_when_resolved_not_at_import():
    """In a fresh process: importing the kernels leaves numba's thread count alone; resolving the
    backend sets it (torch's count, or ``threads``); single_thread affects the calling thread only."""
    code = """
import numba, torch
torch.set_num_threads(1)
before = numba.get_num_threads()
import oedal.gmnn.kernels.tangents, oedal.gmnn.kernels.moments, oedal.gmnn.kernels.pairs
assert numba.get_num_threads() == before, "set at import"
from oedal.gmnn.kernels import backend, use_backend
assert backend().threads == 1 == numba.get_num_threads()  # torch's count when resolved
use_backend("numba", threads=2)
assert backend().threads == min(2, numba.config.NUMBA_NUM_THREADS) == numba.get_num_threads()
import threading
worker = threading.Thread(target=backend().single_thread)
worker.start(); worker.join()
assert numba.get_num_threads() == backend().threads  # only the worker went single-threaded
"""
    env = {k: v for k, v in os.environ.items() if k != kernels.ENV_KERNELS}  # auto
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert run.returncode == 0, run.stderr


def test_using_restores_the_previous_choice_and_threads():
    import numba

    with kernels.using("numba", threads=1) as outer:
        with kernels.using("torch"):
            assert kernels.backend().name == "torch"
        assert kernels.backend() is outer and numba.get_num_threads() == 1
    threads = numba.get_num_threads()
    with kernels.using("numba", threads=1):
        assert numba.get_num_threads() == 1
    assert numba.get_num_threads() == threads
