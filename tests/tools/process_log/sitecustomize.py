"""Logs every Python process the test suite starts: put this folder on PYTHONPATH and name a
log file, then summarise it (docs/testing.md)::

    KERAS_REGNET_PROCESS_LOG=/tmp/procs.jsonl PYTHONPATH=tests/tools/process_log python -m pytest -n 2
    python tests/tools/process_log/summary.py /tmp/procs.jsonl

Each process that exits normally appends one JSON line: its arguments, wall and CPU seconds,
which frameworks it imported and the test that started it (pytest's PYTEST_CURRENT_TEST, which
child processes inherit). Processes killed by a signal leave no line.
"""

from __future__ import annotations

import atexit
import json
import os
import resource
import sys
import time

_LOG = os.environ.get("KERAS_REGNET_PROCESS_LOG")
_STARTED = time.time()
_FRAMEWORKS = ("tensorflow", "jax", "torch", "keras", "keras_regnet")


def _write_line() -> None:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    line = {"argv": sys.argv[:4], "wall": round(time.time() - _STARTED, 2),
            "cpu": round(usage.ru_utime + usage.ru_stime, 2),
            "imported": [name for name in _FRAMEWORKS if name in sys.modules],
            "test": os.environ.get("PYTEST_CURRENT_TEST", "").rsplit(" ", 1)[0]}
    with open(_LOG, "a") as log:  # one short append per process: lines do not interleave
        log.write(json.dumps(line) + "\n")


if _LOG:
    atexit.register(_write_line)
