"""Atomic file output: every file oedal writes appears complete or not at all.

A job killed mid-write (Slurm time limit, Ctrl-C, a full disk) leaves the previous file, or none,
never a truncated one that a rerun would take for finished. :func:`check_outputs` tells, before any
work, whether the outputs can be written at all. :func:`hold_folder` gives one process at a time a
folder (a campaign's results, which two working directories could otherwise write at once).
"""

from __future__ import annotations

import errno
import fcntl
import os
import socket
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from oedal.errors import OutputError


def publish(tmp: Path, dest: Path, *, fsync: bool = False) -> None:
    """Give a finished temporary file the usual permissions (umask) and rename it onto ``dest``."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    if fsync:
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
    os.replace(tmp, dest)


FULL = frozenset({errno.ENOSPC, errno.EFBIG, errno.EDQUOT})  # a full disk, a file size limit, a quota


class DiskFull(OutputError):
    """A file could not be written for lack of space (or a file size limit, or a quota); the file it was
    to replace is untouched. A library that writes files itself (HDF5) may be left in a state that crashes
    the process at exit: the CLI ends the process at once after saying so (oedal.cli.main)."""


def full_disk(err: BaseException) -> int | None:
    """The errno when ``err`` (or an exception it arose from) is a full disk, a file size limit or a quota:
    an OSError with that errno, or HDF5's error text that names it (h5py reports some as RuntimeError)."""
    seen: set[int] = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if isinstance(err, OSError) and err.errno in FULL:
            return err.errno
        for code in FULL:
            if f"errno = {code}," in str(err):
                return code
        err = err.__cause__ or err.__context__
    return None


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
    except BaseException as err:
        tmp.unlink(missing_ok=True)
        code = full_disk(err)
        if code is not None:
            raise DiskFull(f"{dest}: cannot be written ({os.strerror(code)}); "
                           f"{'the previous file is untouched' if dest.exists() else 'nothing was written'}: "
                           "free space (or raise the file size limit) and run again") from None
        raise


def _writable_folder(path: Path, folder: Path, probed: dict[Path, str | None]) -> None:
    """``folder`` (the nearest existing ancestor of ``path``) is a folder oedal can create files in.

    Tried by creating and removing a file there: permission bits alone lie for root, read-only
    mounts and ACLs."""
    if not folder.is_dir():
        raise OutputError(f"{path}: cannot be written: {folder} is a file, not a folder")
    if folder not in probed:
        try:
            fd, name = tempfile.mkstemp(prefix=".oedal-write-test.", dir=folder)
            os.close(fd)
            os.unlink(name)
            probed[folder] = None
        except OSError as err:
            probed[folder] = err.strerror or str(err)
    if probed[folder] is not None:
        raise OutputError(f"{path}: cannot be written: no permission to create files in {folder} ({probed[folder]})")


def _existing_ancestor(path: Path) -> Path:
    """``path`` itself or its nearest ancestor that exists (the current folder for a relative path)."""
    path = path.absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def check_outputs(*files: str | Path | None, folders: tuple[str | Path | None, ...] = ()) -> None:
    """Before any work: every output file and folder can be written, else :class:`OutputError`.

    A file must not be an existing folder, and its folder must be (or be creatable inside) a folder
    oedal can write in; a folder must not be an existing file, and must be (or be creatable inside)
    such a folder. Nothing is created; ``None`` entries are skipped (optional outputs).
    """
    probed: dict[Path, str | None] = {}
    for file in (Path(f) for f in files if f is not None):
        if file.is_dir():
            raise OutputError(f"{file}: is a folder, but a file is to be written there")
        _writable_folder(file, _existing_ancestor(file.parent), probed)
    for folder in (Path(f) for f in folders if f is not None):
        if folder.exists() and not folder.is_dir():
            raise OutputError(f"{folder}: is a file, but a folder is to be written there")
        _writable_folder(folder, _existing_ancestor(folder), probed)


_HELD: dict[Path, int] = {}  # folder → the open lock file, held until the process ends


def hold_folder(folder: str | Path, holder: str, *, name: str = ".oedal-run.lock") -> Path:
    """Hold ``folder`` for this process until it ends (an exclusive ``flock`` on ``folder/name``, released
    by the kernel when the process exits, however it exits). A folder another live process holds raises
    :class:`OutputError` naming that holder (``holder``: what this process is, e.g. its working
    directory). Holding a folder twice in one process is a no-op. Returns the lock file."""
    folder = Path(folder).resolve()
    path = folder / name
    if folder in _HELD:
        return path
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        other = os.read(fd, 4096).decode(errors="replace").strip() or "another process"
        os.close(fd)
        raise OutputError(f"{folder} is in use by {other}; wait for that run to end, or give this one another "
                          "results_dir") from None
    os.ftruncate(fd, 0)
    os.write(fd, f"{holder} (pid {os.getpid()} on {socket.gethostname()}, since "
                 f"{time.strftime('%Y-%m-%d %H:%M:%S')})\n".encode())
    _HELD[folder] = fd
    return path
