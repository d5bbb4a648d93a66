"""Atomic file writes: a file appears at its final path complete, or not at all."""

from __future__ import annotations

import contextlib
import os
import tempfile
from typing import Iterator


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current


# Read once at import: os.umask is process-wide, and writers run in threads.
_FILE_MODE = 0o666 & ~_umask()


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
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(target)}.", suffix=suffix or ".part",
                               dir=directory)
    os.close(fd)
    os.chmod(tmp, _FILE_MODE)  # mkstemp's 0600 would make every written file private
    try:
        yield tmp
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
