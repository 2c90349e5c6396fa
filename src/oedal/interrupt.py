"""SIGTERM as a request to stop cleanly, shared by training and labeling.

Slurm (at a job's time limit, or on ``scancel``) and Snakemake send SIGTERM some seconds before they
kill a job; a long step uses them to write its checkpoint, so that the rerun resumes instead of
starting again.
"""

from __future__ import annotations

import signal
import threading


class StopOnSigterm:
    """Context manager that catches SIGTERM while it is active and restores the previous handler.

    * ``exit_at_once=False`` (training): the signal only sets :attr:`requested`; the caller polls it
      where its state is consistent (between two optimizer steps), writes its checkpoint and stops.
    * ``exit_at_once=True`` (labeling): the signal raises ``SystemExit(128 + SIGTERM)`` at once, so
      the caller's ``finally`` blocks write what it has (one oracle call may last minutes).

    Signal handlers can only be set in the main thread; elsewhere, or with ``active=False``, it does
    nothing and SIGTERM keeps its previous meaning.
    """

    def __init__(self, *, exit_at_once: bool = False, active: bool = True):
        self.exit_at_once = exit_at_once
        self.active = active
        self._event = threading.Event()
        self._previous = None

    @property
    def requested(self) -> bool:
        """True once SIGTERM has arrived while the context was active."""
        return self._event.is_set()

    def _handle(self, signum, frame) -> None:  # noqa: ARG002
        self._event.set()
        if self.exit_at_once:
            raise SystemExit(128 + signum)

    def __enter__(self) -> "StopOnSigterm":
        if self.active and threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGTERM, self._handle)
        return self

    def __exit__(self, *exc) -> bool:
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)
            self._previous = None
        return False
