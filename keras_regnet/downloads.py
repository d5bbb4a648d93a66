"""Fetching weight files into the cache: atomic, checked, never half-written.

Files go to ``$KERAS_HOME/keras_regnet/downloads`` (default ``~/.keras``). Every file is
written to a temporary name beside its final path and renamed into place only when complete
and checked, so an interrupted or corrupt download is never found there later.
"""

from __future__ import annotations

import hashlib
import os
import sys
import urllib.error
import urllib.request

from keras_regnet.files import atomic_path
from keras_regnet.weight_table import Download


def cache_dir() -> str:
    """``$KERAS_HOME/keras_regnet`` (``~/.keras/keras_regnet`` by default), created on use."""
    home = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    path = os.path.join(home, "keras_regnet")
    os.makedirs(path, exist_ok=True)
    return path


class _Progress:
    def __init__(self, name: str, total: int | None):
        self.name, self.total, self.done, self.last = name, total, 0, -1
        self.tty = sys.stderr.isatty()

    def update(self, n: int) -> None:
        self.done += n
        if not self.total:
            return
        pct = int(100 * self.done / self.total)
        if pct != self.last and (self.tty or pct % 25 == 0):
            self.last = pct
            bar = "#" * (pct // 4)
            end = "\n" if pct == 100 or not self.tty else ""
            print(f"\r{self.name}: [{bar:<25}] {pct:3d}% of {self.total / 1e6:.1f} MB",
                  end=end, file=sys.stderr, flush=True)


def download(dl: Download, directory: str, timeout: float = 60.0) -> str:
    """Fetches ``dl`` into ``directory`` (once) and returns the local path.

    The body goes to a temporary file in the same directory; it is checked against the
    Content-Length and the known hash, then renamed into place. On any failure the temporary
    file is removed, so nothing partial is ever found at the final path.
    """
    path = os.path.join(directory, dl.filename)
    if os.path.exists(path):
        return path
    with atomic_path(path) as tmp:
        digest = hashlib.sha256()
        try:
            with urllib.request.urlopen(dl.url, timeout=timeout) as response, open(tmp, "wb") as out:
                total = response.headers.get("Content-Length")
                total = int(total) if total else None
                progress = _Progress(dl.filename, total)
                while chunk := response.read(1 << 20):
                    out.write(chunk)
                    digest.update(chunk)
                    progress.update(len(chunk))
        except (urllib.error.URLError, OSError) as err:
            raise ConnectionError(
                f"Could not download {dl.url}: {err}. Without network access, fetch the file "
                f"elsewhere and place it at {path}.") from err
        if total is not None and progress.done != total:
            raise OSError(f"Download of {dl.url} was truncated: got {progress.done} of {total} "
                          f"bytes. Nothing was kept; try again.")
        _check_hash(dl, digest.hexdigest())
    return path


def _check_hash(dl: Download, hexdigest: str) -> None:
    expected = dl.sha256 or dl.sha256_prefix
    if expected and not hexdigest.startswith(expected):
        raise ValueError(
            f"Hash mismatch for {dl.filename} from {dl.url}: expected sha256 "
            f"{expected}{'...' if not dl.sha256 else ''}, got {hexdigest}. The file was "
            f"discarded; if it persists, the server is serving a different file.")
