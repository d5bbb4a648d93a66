"""One training run per model directory: an OS lock that a killed run cannot leave behind."""

from __future__ import annotations

import contextlib
import os
from typing import Iterator

from keras_regnet.writers import TargetInUseError, hold_flock

LOCK_FILE = ".lock"


DirectoryInUseError = TargetInUseError  # another process is training into the same directory


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
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, LOCK_FILE)
    holder = "?"
    if os.path.exists(path):
        with open(path, encoding="utf-8", errors="replace") as f:
            holder = f.read(32).strip() or "?"
    with hold_flock(path, f"{directory} is in use by another training run (pid {holder}); wait for "
                          f"it to finish, or pass another --model_dir.", wait=False):
        with open(path, "w", encoding="utf-8") as f:  # the holder's pid, for the next message
            f.write(str(os.getpid()))
        yield
