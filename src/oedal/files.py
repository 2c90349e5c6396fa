"""Atomic file output: every file oedal writes appears complete or not at all.

A job killed mid-write (Slurm time limit, Ctrl-C, a full disk) leaves the previous file, or none,
never a truncated one that a rerun would take for finished.
"""

from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


def publish(tmp: Path, dest: Path, *, fsync: bool = False) -> None:
    """Give a finished temporary file the usual permissions (umask) and rename it onto ``dest``."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    if fsync:
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
    os.replace(tmp, dest)


@contextmanager
def atomic_path(dest: str | Path, *, suffix: str = ".tmp", fsync: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside ``dest`` (not yet existing); publish it onto ``dest`` when the
    block ends without an exception, remove it otherwise (``dest`` is then left untouched)."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=suffix, dir=dest.parent)
    os.close(fd)
    tmp = Path(name)
    tmp.unlink()  # some writers (h5py "w-", ase.db) want to create the file themselves
    try:
        yield tmp
        publish(tmp, dest, fsync=fsync)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
