"""One training run per model directory: an OS lock that a killed run cannot leave behind."""

from __future__ import annotations

import contextlib
import os
from typing import Iterator

LOCK_FILE = ".lock"


class DirectoryInUseError(RuntimeError):
    """Another process is training into the same model directory."""


@contextlib.contextmanager
def exclusive(directory: str) -> Iterator[None]:
    """Holds ``directory/.lock`` for the duration; refuses at once if another process holds it.

    The lock is ``flock``'s: the kernel drops it when its process ends, however it ends
    (``kill -9`` included), so a crashed run never blocks the next one. The file keeps the pid
    of the last holder, for the error message. Where ``fcntl`` is missing (Windows), no lock.

    Example:
        >>> with exclusive("/tmp/keras_regnet_doctest_run"):
        ...     pass
    """
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        yield
        return
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, LOCK_FILE)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            raise DirectoryInUseError(
                f"{directory} is in use by another training run (pid {holder}); wait for it to "
                f"finish, or pass another --model_dir.") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        yield
    finally:
        os.close(fd)  # closing releases the lock
