"""Atomic file writing: write to a temporary file in the same folder, then rename.

A crash or SIGKILL in the middle of a write leaves the previous file intact.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator, Union

PathLike = Union[str, os.PathLike]


def check_writable_folder(folder: PathLike) -> None:
    """Raise FileNotFoundError / PermissionError unless files can be created in ``folder``."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"output folder does not exist: {folder}")
    try:
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as err:
        raise PermissionError(f"output folder is not writable: {folder} ({err})") from err


@contextlib.contextmanager
def atomic_path(path: PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it onto ``path`` on success.

    The caller writes the complete file to the yielded path (with any library:
    torch.save, h5py, mdtraj ...).  If the block raises, the temporary file is
    removed and ``path`` is untouched.
    """
    path = Path(path)
    folder = path.parent
    check_writable_folder(folder)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp" + path.suffix, dir=folder)
    os.close(fd)
    os.unlink(tmp)  # libraries such as PyTables refuse to open an existing empty file
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def keep_previous(path: PathLike, previous: PathLike) -> None:
    """Atomically make ``previous`` hold the current contents of ``path``, if ``path`` exists.

    A hard link where the file system has them, else a copy.  Called inside
    ``with atomic_path(path)`` just before the new ``path`` replaces the old
    one, so that at every moment both names hold complete files.
    """
    path = Path(path)
    if path.exists():
        with atomic_path(previous) as tmp:
            try:
                os.link(path, tmp)
            except OSError:  # no hard links on this file system
                shutil.copyfile(path, tmp)


def atomic_write_text(path: PathLike, text: str) -> None:
    """Write ``text`` to ``path`` atomically (UTF-8)."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
