"""Writers that never destroy what they did not write.

Every folder this package publishes (a KerasHub preset, a SavedModel version) carries a marker
file naming its kind. A target folder is replaced only when it is empty, or when it holds this
package's output of the same kind AND the caller asked to overwrite; never the current
directory or one of its parents, never a folder that holds the source being exported, never a
folder of someone else's files (``--overwrite`` or not).

One writer per target at a time: a writer holds an ``flock`` on the target's parent folder
(the kernel drops it when the process ends, however it ends); a second writer waits for it,
then finds the first one's result and refuses to replace it without ``--overwrite``. Holding
the lock, a writer removes the staging folders and files a killed writer of the same target
left behind (``.NAME.*.part``, ``.VERSION.exporting.*``).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
from typing import Iterable, Iterator

from keras_regnet.files import new_staging

log = logging.getLogger(__name__)
MARKER = ".keras_regnet_output"


class TargetInUseError(RuntimeError):
    """Another process holds the lock (for a training run's directory: refused, not waited)."""


def mark(folder: str, kind: str) -> None:
    """Stamps a folder about to be published as this package's output of ``kind``."""
    with open(os.path.join(folder, MARKER), "w", encoding="utf-8") as f:
        json.dump({"kind": kind}, f)


def kind_of(folder: str) -> str | None:
    """The kind this package wrote ``folder`` as, or None (not ours, or not a folder)."""
    try:
        with open(os.path.join(folder, MARKER), encoding="utf-8") as f:
            return json.load(f).get("kind")
    except (OSError, ValueError, AttributeError):
        return None


def check_folder_target(target: str, kind: str, overwrite: bool, sources: Iterable[str] = ()) -> str:
    """The absolute target, if a writer of ``kind`` may publish a folder there; else a
    ``ValueError`` / ``FileExistsError`` saying why and what to do instead.

    Example:
        >>> check_folder_target("/tmp/keras_regnet_doctest_new_folder", "kerashub_preset", False)
        '/tmp/keras_regnet_doctest_new_folder'
    """
    path = os.path.abspath(os.fspath(target))
    cwd = os.path.abspath(os.getcwd())
    if path == os.path.abspath(os.sep) or path == os.path.expanduser("~") or \
            cwd == path or cwd.startswith(path.rstrip(os.sep) + os.sep):
        raise ValueError(f"refusing to write into {path!r}: it is the current directory, one of "
                         f"its parents, or your home; name a new folder, e.g. --output ./{kind}.")
    for source in sources:
        source = os.path.abspath(os.fspath(source))
        if source == path or source.startswith(path.rstrip(os.sep) + os.sep):
            raise ValueError(f"refusing to write into {path!r}: it holds the source {source!r}; "
                             f"choose another --output.")
    if os.path.isfile(path):
        raise FileExistsError(f"{path} is a file; choose a folder for --output.")
    if os.path.isdir(path) and os.listdir(path):
        found = kind_of(path)
        if found != kind:
            what = f"a {found}" if found else "files keras_regnet did not write"
            raise FileExistsError(f"{path} holds {what}; it is never replaced (not even with "
                                  f"--overwrite): choose an empty or new folder.")
        if not overwrite:
            raise FileExistsError(f"{path} already exists; choose another --output or pass --overwrite.")
    return path


@contextlib.contextmanager
def hold_flock(path: str, busy: str, wait: bool) -> Iterator[None]:
    """An ``flock`` on ``path`` (a file it creates, or an existing folder) for the duration.

    ``wait=False``: refuses at once with ``TargetInUseError(busy)`` if another process holds
    it. ``wait=True``: says so in one log line, then waits. Where ``fcntl`` is missing
    (Windows), no lock.
    """
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        yield
        return
    fd = os.open(path, os.O_RDONLY) if os.path.isdir(path) else os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if not wait:
                raise TargetInUseError(busy) from None
            log.warning("%s; waiting for it to finish", busy)
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


@contextlib.contextmanager
def exclusive_writer(target: str, leftovers: Iterable[str] = ()) -> Iterator[str]:
    """One writer of ``target`` at a time (a lock on its parent folder, waited for); under it,
    the staging leftovers of killed writers of that target are removed: names in the parent
    that start with ``.TARGETNAME.`` and end with ``.part`` (or the target's suffix), and
    those starting with any of ``leftovers``. Yields the absolute target.

    Example:
        >>> with exclusive_writer("/tmp/keras_regnet_doctest_target") as path:
        ...     path
        '/tmp/keras_regnet_doctest_target'
    """
    target = os.path.abspath(os.fspath(target))
    parent, name = os.path.split(target)
    os.makedirs(parent, exist_ok=True)
    with hold_flock(parent, f"another keras_regnet writer is writing into {parent}", wait=True):
        prefixes = tuple(leftovers)
        # Staging names end with .part, .part.old (a swapped-out folder) or the target's own
        # suffix (a file written as .NAME.XXXX.weights.h5 keeps Keras's required suffix).
        endings = (".part", ".part.old") + ((name[name.index("."):],) if "." in name.strip(".") else ())
        for entry in os.listdir(parent):
            stale = (entry.startswith(f".{name}.") and entry.endswith(endings)) or \
                (bool(prefixes) and entry.startswith(prefixes))
            if stale:
                log.info("removing %s, left by an interrupted writer", entry)
                path = os.path.join(parent, entry)
                shutil.rmtree(path, ignore_errors=True) if os.path.isdir(path) else os.remove(path)
        yield target


@contextlib.contextmanager
def staged_files(path: str, overwrite: bool = False, companions: Iterable[str] = ()) -> Iterator[str]:
    """A staging folder beside ``path`` (``.NAME.XXXX.part``), held under
    :func:`exclusive_writer`: write there, then ``os.replace`` each file to its target. An
    existing ``path`` or companion (OpenVINO's ``.bin``) is refused unless ``overwrite``, before
    and after the lock is taken; the staging folder goes in every case.

    Example:
        >>> with staged_files("/tmp/keras_regnet_doctest.onnx", overwrite=True) as staging:
        ...     os.path.isdir(staging)
        True
    """
    targets = [path, *companions]

    def refuse_existing() -> None:
        existing = [p for p in targets if os.path.exists(p)]
        if existing and not overwrite:
            raise FileExistsError(f"{existing[0]} already exists; pass overwrite=True (--overwrite).")

    refuse_existing()
    with exclusive_writer(path):
        refuse_existing()  # another writer may have finished meanwhile
        staging = new_staging(path)
        try:
            yield staging
        finally:
            shutil.rmtree(staging, ignore_errors=True)
