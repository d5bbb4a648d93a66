"""Fetching weight files into the cache: atomic, checked, validated, never half-written.

Files go to ``$KERAS_HOME/keras_regnet/downloads`` (default ``~/.keras``). Every file is
written to a temporary name beside its final path and renamed into place only when complete,
hash-checked where a hash is published, and readable as the weights file it claims to be (a
captive portal's HTML page or a body cut short without a Content-Length never enters the
cache).

Environment:

- ``KERAS_REGNET_MIRROR``: fetch ``https://HOST/PATH`` from ``$KERAS_REGNET_MIRROR/HOST/PATH``
  instead: an ``http(s)://`` base or a ``file://`` folder laid out the same way (sites without
  internet, tests).
- ``KERAS_REGNET_TIMEOUT``: seconds to wait for a connection or for data (default 30).
"""

from __future__ import annotations

import hashlib
import os
import sys
import urllib.error
import urllib.parse
import urllib.request
from typing import Callable

from keras_regnet import integrity
from keras_regnet.files import atomic_path
from keras_regnet.weight_table import Download

MIRROR_ENV = "KERAS_REGNET_MIRROR"
TIMEOUT_ENV = "KERAS_REGNET_TIMEOUT"
DEFAULT_TIMEOUT = 30.0
PROGRESS_MIN_BYTES = 4_000_000  # smaller downloads finish before a bar would help


class DownloadError(ConnectionError):
    """A weight file could not be fetched, or what was fetched is not that file."""


def cache_dir(writable: bool = True) -> str:
    """``$KERAS_HOME/keras_regnet`` (``~/.keras/keras_regnet`` by default), created on use.

    ``writable=False`` only names it: reading what a read-only cache already holds is fine.
    """
    home = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    path = os.path.join(home, "keras_regnet")
    if not writable:
        return path
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as err:
        raise OSError(f"Cannot create the weights cache {path} ({err.strerror}); point KERAS_HOME "
                      f"at a writable folder.") from err
    if not os.access(path, os.W_OK):
        raise OSError(f"The weights cache {path} is not writable; point KERAS_HOME at a writable "
                      f"folder.")
    return path


def source_url(url: str) -> str:
    """Where ``url`` is fetched from: itself, or its copy under ``$KERAS_REGNET_MIRROR``.

    Example:
        >>> import os; os.environ["KERAS_REGNET_MIRROR"] = "http://127.0.0.1:8000/"
        >>> source_url("https://example.org/models/w.pth")
        'http://127.0.0.1:8000/example.org/models/w.pth'
        >>> del os.environ["KERAS_REGNET_MIRROR"]
    """
    mirror = os.environ.get(MIRROR_ENV)
    if not mirror:
        return url
    if not mirror.startswith(("http://", "https://", "file://")):
        raise ValueError(f"{MIRROR_ENV}={mirror!r} must be an http(s):// or file:// base URL.")
    parts = urllib.parse.urlsplit(url)
    return f"{mirror.rstrip('/')}/{parts.netloc}{parts.path}"


def timeout() -> float:
    """Seconds to wait for a connection or data: ``$KERAS_REGNET_TIMEOUT``, default 30."""
    value = os.environ.get(TIMEOUT_ENV)
    if not value:
        return DEFAULT_TIMEOUT
    try:
        seconds = float(value)
    except ValueError:
        seconds = -1.0
    if not seconds > 0:
        raise ValueError(f"{TIMEOUT_ENV}={value!r} must be a positive number of seconds.")
    return seconds


class _Progress:
    """A one-line bar on stderr for downloads over a few MB (a line per 25% off a terminal)."""

    def __init__(self, name: str, total: int | None):
        self.name, self.total, self.done, self.last = name, total, 0, -1
        self.tty = sys.stderr.isatty()

    def update(self, n: int) -> None:
        self.done += n
        if self.total is None:  # no Content-Length: report every 10 MB
            mark = self.done // 10_000_000
            if mark != self.last and self.done >= PROGRESS_MIN_BYTES:
                self.last = mark
                print(f"{self.name}: {self.done / 1e6:.0f} MB", file=sys.stderr, flush=True)
            return
        if self.total < PROGRESS_MIN_BYTES:
            return
        pct = int(100 * self.done / self.total)
        if pct != self.last and (self.tty or pct % 25 == 0):
            self.last = pct
            bar = "#" * (pct // 4)
            end = "\n" if pct == 100 or not self.tty else ""
            print(f"\r{self.name}: [{bar:<25}] {pct:3d}% of {self.total / 1e6:.1f} MB",
                  end=end, file=sys.stderr, flush=True)


def download(dl: Download, directory: str, validate: Callable[[str], object] | None = None) -> str:
    """Fetches ``dl`` into ``directory`` (a folder of the cache: its manifest is one level up)
    once and returns the local path.

    The body goes to a temporary file beside the final path. It must match the Content-Length
    and the published hash, and ``validate(temporary path)`` must accept it (e.g. read it as a
    checkpoint); only then is it renamed into place. On any failure nothing is kept, and the
    :class:`DownloadError` names the URL and the file.
    """
    path = os.path.join(directory, dl.filename)
    if os.path.exists(path):
        return path
    url = source_url(dl.url)
    # The temporary file keeps the real suffix: readers pick the format by it.
    with atomic_path(path, suffix=os.path.splitext(path)[1]) as tmp:
        digest = hashlib.sha256()
        try:
            with urllib.request.urlopen(url, timeout=timeout()) as response, open(tmp, "wb") as out:
                total = response.headers.get("Content-Length")
                total = int(total) if total else None
                progress = _Progress(dl.filename, total)
                while chunk := response.read(1 << 20):
                    out.write(chunk)
                    digest.update(chunk)
                    progress.update(len(chunk))
        except (urllib.error.URLError, OSError) as err:
            reason = getattr(err, "reason", None) or err
            raise DownloadError(
                f"Could not download {url}: {reason}. Without network access, fetch the file "
                f"elsewhere and place it at {path} (or set {MIRROR_ENV}).") from err
        if total is not None and progress.done != total:
            raise DownloadError(f"Download of {url} was truncated: got {progress.done} of {total} "
                                f"bytes. Nothing was kept; try again.")
        _check_hash(dl, url, digest.hexdigest())
        try:  # the published hash, where there is one; else the first download's (TOFU)
            integrity.check_download(os.path.dirname(directory), dl.url, digest.hexdigest())
        except integrity.IntegrityError as err:
            raise DownloadError(str(err)) from None
        if validate is not None:
            try:
                validate(tmp)
            except Exception as err:  # any reader error means "not the file we asked for"
                raise DownloadError(
                    f"{url} did not give a valid {dl.filename} ({progress.done} bytes; {err}). "
                    f"Nothing was kept.") from err
    integrity.record_download(os.path.dirname(directory), dl.url, path, digest.hexdigest())
    return path


def _check_hash(dl: Download, url: str, hexdigest: str) -> None:
    expected = dl.sha256 or dl.sha256_prefix
    if expected and not hexdigest.startswith(expected):
        raise DownloadError(
            f"Hash mismatch for {dl.filename} from {url}: expected sha256 "
            f"{expected}{'...' if not dl.sha256 else ''}, got {hexdigest}. The file was "
            f"discarded; if it persists, the server is serving a different file.")
