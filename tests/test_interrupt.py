"""The SIGTERM helper shared by training and labeling (oedal.interrupt)."""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest

from oedal.interrupt import StopOnSigterm


def _deliver_sigterm() -> None:
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(0.05)  # Python runs the handler between two bytecodes of the main thread


def test_sigterm_is_a_request_and_the_handler_is_restored():
    before = signal.getsignal(signal.SIGTERM)
    with StopOnSigterm() as term:
        assert not term.requested
        _deliver_sigterm()
        assert term.requested
    assert signal.getsignal(signal.SIGTERM) is before


def test_sigterm_exits_at_once_when_asked():
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(SystemExit) as exit_info:
        with StopOnSigterm(exit_at_once=True):
            _deliver_sigterm()
    assert exit_info.value.code == 128 + signal.SIGTERM
    assert signal.getsignal(signal.SIGTERM) is before


def test_sigterm_helper_inactive_or_off_the_main_thread_changes_nothing():
    before = signal.getsignal(signal.SIGTERM)
    with StopOnSigterm(active=False):
        assert signal.getsignal(signal.SIGTERM) is before
    seen = []

    def worker():
        with StopOnSigterm():
            seen.append(signal.getsignal(signal.SIGTERM))

    thread = threading.Thread(target=worker)
    thread.start()
    thread.join()
    assert seen == [before]
