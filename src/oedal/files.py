"""Atomic file output: every file oedal writes appears complete or not at all.

A job killed mid-write (Slurm time limit, Ctrl-C, a full disk) leaves the previous file, or none,
never a truncated one that a rerun would take for finished. :func:`check_outputs` tells, before any
work, whether the outputs can be written at all.
"""

from __future__ import annotations

import os
import tempfile
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
