"""What the weights cache holds is what was first verified: sha256 pins and trust-on-first-use.

A downloaded file is checked against the sha256 its source publishes where there is one
(torchvision's file names carry its first hex digits). Where none is known offline (pycls's
files, the hub's mutable ``resolve/main`` URLs), the sha256 of the FIRST download is recorded
in the cache's ``manifest.json`` (trust on first use), and every later download of that URL
and every later load of the cached file must hash the same. The converted ``.weights.h5``
files are recorded when written and checked when loaded. ``keras-regnet weights --verify``
re-hashes the whole cache.

The manifest (``$KERAS_HOME/keras_regnet/manifest.json``)::

    {"downloads": {URL: SHA256, ...}, "files": {PATH IN THE CACHE: SHA256, ...}}
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from typing import Iterator

from keras_regnet.files import atomic_path

MANIFEST = "manifest.json"


class IntegrityError(ValueError):
    """A cached or downloaded file does not hash as recorded; the message names it."""


def sha256_of(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            digest.update(chunk)
    return digest.hexdigest()


def _manifest_path(cache: str) -> str:
    return os.path.join(cache, MANIFEST)


def read_manifest(cache: str) -> dict:
    """The manifest of the cache folder ``cache`` (empty where there is none yet)."""
    try:
        with open(_manifest_path(cache), encoding="utf-8") as f:
            manifest = json.load(f)
    except FileNotFoundError:
        manifest = {}
    except (OSError, ValueError) as err:
        raise IntegrityError(f"The weights cache's manifest {_manifest_path(cache)} is unreadable "
                             f"({err}); delete it to record the cached files' hashes afresh.") from err
    return {"downloads": manifest.get("downloads", {}), "files": manifest.get("files", {})}


@contextlib.contextmanager
def _updating(cache: str) -> Iterator[dict]:
    """The manifest, rewritten atomically on exit, one writer at a time (a kernel lock)."""
    from keras_regnet.writers import hold_flock

    busy = "another process is writing the weights cache's manifest"
    with hold_flock(os.path.join(cache, ".manifest.lock"), busy, wait=True):
        manifest = read_manifest(cache)
        yield manifest
        with atomic_path(_manifest_path(cache)) as tmp, open(tmp, "w", encoding="utf-8") as f:
            json.dump(manifest, f, indent=1, sort_keys=True)


def _writable(cache: str) -> bool:
    return os.access(cache, os.W_OK)


def check_download(cache: str, url: str, sha256: str) -> None:
    """A fresh download of ``url`` must hash as its first download did (if one was recorded)."""
    recorded = read_manifest(cache)["downloads"].get(url)
    if recorded is not None and recorded != sha256:
        raise IntegrityError(
            f"{url} now serves a different file than when it was first downloaded (sha256 "
            f"{recorded[:16]}... recorded, {sha256[:16]}... now); nothing was kept. If the change "
            f"is legitimate, delete its entry from {_manifest_path(cache)}.")


def record_download(cache: str, url: str, path: str, sha256: str) -> None:
    """Records a download that passed every check: its URL's hash (trust on first use) and
    the cached file's."""
    if not _writable(cache):
        return
    with _updating(cache) as manifest:
        manifest["downloads"].setdefault(url, sha256)
        manifest["files"][os.path.relpath(path, cache)] = sha256


def record_file(cache: str, path: str) -> None:
    """Records the hash of a file the cache now holds (a converted file, an older download)."""
    if not _writable(cache):
        return
    digest = sha256_of(path)
    with _updating(cache) as manifest:
        manifest["files"][os.path.relpath(path, cache)] = digest


def check_file(cache: str, path: str) -> None:
    """A cached file about to be used must hash as recorded; an unrecorded one (left by an
    older version) is recorded now where the cache is writable."""
    name = os.path.relpath(path, cache)
    recorded = read_manifest(cache)["files"].get(name)
    if recorded is None:
        record_file(cache, path)
        return
    actual = sha256_of(path)
    if actual != recorded:
        raise IntegrityError(f"{path} does not hash as recorded when it entered the cache (sha256 "
                             f"{recorded[:16]}... recorded, {actual[:16]}... now): it changed on disk.")


def verify_cache(cache: str) -> list[tuple[str, str]]:
    """``(path in the cache, "ok" | "CHANGED" | "not recorded")`` for every weight file the
    cache holds, re-hashed now."""
    recorded = read_manifest(cache)["files"]
    report = []
    for folder, _, names in os.walk(cache):
        for name in sorted(names):
            path = os.path.join(folder, name)
            rel = os.path.relpath(path, cache)
            if name == MANIFEST or name.startswith("."):  # the manifest, its lock, staging files
                continue
            if rel not in recorded:
                report.append((rel, "not recorded"))
            else:
                report.append((rel, "ok" if sha256_of(path) == recorded[rel] else "CHANGED"))
    return sorted(report)
