"""Atomic writes: a file or folder appears at its final path complete, or not at all."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from typing import Iterator


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current


# Read once at import: os.umask is process-wide, and writers run in threads.
_FILE_MODE = 0o666 & ~_umask()
_DIR_MODE = 0o777 & ~_umask()


def new_staging(target: str, *, folder: bool = True, directory: str | None = None,
                prefix: str | None = None, suffix: str = ".part") -> str:
    """A new hidden staging folder (or empty file) for ``target``: ``.NAME.XXXX.part`` beside it
    unless ``directory`` and ``prefix`` say otherwise. Where none can be made (a read-only or
    unwritable place) the ``OSError`` names ``target``, the path the user gave, not the staging name.

    Example:
        >>> path = new_staging("/tmp/example_model")
        >>> os.path.basename(path).startswith(".example_model.") and os.path.isdir(path)
        True
        >>> os.rmdir(path)
    """
    directory = directory if directory is not None else os.path.dirname(os.path.abspath(target))
    prefix = prefix if prefix is not None else f".{os.path.basename(target)}."
    try:
        if folder:
            return tempfile.mkdtemp(prefix=prefix, suffix=suffix, dir=directory)
        fd, path = tempfile.mkstemp(prefix=prefix, suffix=suffix, dir=directory)
        os.close(fd)
        return path
    except OSError as err:
        raise OSError(err.errno, err.strerror, target) from None


@contextlib.contextmanager
def atomic_path(target: str, suffix: str = "") -> Iterator[str]:
    """Yields a temporary path beside ``target``; renames it onto ``target`` on success.

    On an exception the temporary file is removed and ``target`` is left as it was.

    Example:
        >>> with atomic_path("/tmp/example.txt") as tmp:
        ...     _ = open(tmp, "w").write("done")
    """
    directory = os.path.dirname(os.path.abspath(target))
    os.makedirs(directory, exist_ok=True)
    tmp = new_staging(target, folder=False, suffix=suffix or ".part")
    os.chmod(tmp, _FILE_MODE)  # mkstemp's 0600 would make every written file private
    try:
        yield tmp
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def replace_directory(staging: str, target: str) -> None:
    """Moves a finished folder onto ``target``; an existing one is swapped out, then removed,
    so a reader (TF Serving, ``from_preset``) never sees a half-written folder."""
    if os.path.exists(target):
        backup = staging + ".old"
        os.replace(target, backup)
        os.replace(staging, target)
        shutil.rmtree(backup, ignore_errors=True)
    else:
        os.replace(staging, target)


@contextlib.contextmanager
def atomic_directory(target: str) -> Iterator[str]:
    """Yields an empty folder beside ``target``; it replaces ``target`` on success.

    On an exception the folder is removed and ``target`` is left as it was.

    Example:
        >>> with atomic_directory("/tmp/example_dir") as tmp:
        ...     _ = open(os.path.join(tmp, "done.txt"), "w").write("done")
    """
    target = os.path.abspath(target)
    parent = os.path.dirname(target)
    os.makedirs(parent, exist_ok=True)
    staging = new_staging(target)
    os.chmod(staging, _DIR_MODE)  # mkdtemp's 0700 would make the published folder private
    try:
        yield staging
        replace_directory(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
