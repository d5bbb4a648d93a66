"""Timing contenders in their own processes, alive at once, one timed step of each in turn.

On a machine whose speed drifts within minutes (a shared VM: the same process measured 1.8x
faster one hour than the hour before), contenders timed one after another compare different
machines. Here every contender's worker process is started first; then each timed step of one
runs while the others wait idle (a short pause between steps lets the last one's thread pools
stop spinning), the order reversed every repeat, so any drift falls on all of them alike.

A benchmark's worker calls :func:`serve` with its named steps; its parent starts one
:class:`ServingWorker` per contender and calls :func:`interleave`.

Example (the parent side; ``bench.py --serve`` calls ``serve({"infer": ...})``):
    >>> workers = {}  # {"ours": ServingWorker([sys.executable, "bench.py", "--serve"]), ...}
    >>> interleave(workers, {"infer": 5}, warmup=2)
    {}
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from typing import Callable

REPLY = "@@"  # marks a worker's replies among whatever else its libraries print
PAUSE_S = 0.05
SLOW_STEP_S = 5.0  # a step slower than this gets 2 timed repeats: its ratio is tens, not percent


def serve(steps: dict[str, Callable[[], object] | None]) -> None:
    """The worker's side: says it is ready, then runs the step named on each stdin line and
    replies with its seconds ("none" for a step it does not have) until stdin closes."""
    print(REPLY + "ready", flush=True)
    for line in sys.stdin:
        step = steps[line.strip()]
        if step is None:
            print(REPLY + "none", flush=True)
            continue
        start = time.perf_counter()
        step()
        print(f"{REPLY}{time.perf_counter() - start}", flush=True)


class ServingWorker:
    """A worker process running :func:`serve`, driven one step at a time."""

    def __init__(self, command: list[str], env: dict[str, str] | None = None):
        self.process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        stderr=subprocess.PIPE, text=True, env={**os.environ, **(env or {})})

    def _reply(self) -> str:
        for line in self.process.stdout:
            if line.startswith(REPLY):
                return line[len(REPLY):].strip()
        raise RuntimeError(self._exit_reason())

    def _exit_reason(self) -> str:
        code = self.process.wait()
        if code == -9:  # SIGKILL: on Linux most often the kernel's out-of-memory killer
            return "killed (out of memory? every contender's process is alive at once: ask for fewer)"
        error = self.process.stderr.read().strip().splitlines()
        return error[-1] if error else f"exited with status {code}"

    def wait_ready(self) -> None:
        self._reply()

    def step(self, kind: str) -> float | None:
        try:
            self.process.stdin.write(kind + "\n")
            self.process.stdin.flush()
        except BrokenPipeError:
            raise RuntimeError(self._exit_reason()) from None
        reply = self._reply()
        return None if reply == "none" else float(reply)

    def close(self) -> None:
        self.process.kill()
        self.process.wait()
        for stream in (self.process.stdin, self.process.stdout, self.process.stderr):
            try:
                stream.close()
            except BrokenPipeError:  # a write that never reached the dead process
                pass


def interleave(workers: dict[str, ServingWorker], repeats: dict[str, int], warmup: int = 2,
               report: Callable[[str], None] = print) -> dict[str, dict[str, list[float]]]:
    """{contender: {step kind: timed seconds}} for the kinds of ``repeats`` (in its order, each
    with its number of timed steps) after ``warmup`` untimed ones (at least 2: the first call
    traces or compiles). A worker that dies is reported and left out; every worker is closed."""
    times: dict = {name: {kind: [] for kind in repeats} for name in workers}
    live = dict(workers)

    def drop(name: str, err: RuntimeError) -> None:
        report(f"  {name}: unavailable ({err})")
        live.pop(name).close()
        times.pop(name)

    def run(name: str, kind: str) -> float | None:
        try:
            return live[name].step(kind)
        except RuntimeError as err:
            drop(name, err)
            return None

    try:
        for name in list(live):
            try:
                live[name].wait_ready()
            except RuntimeError as err:
                drop(name, err)
        for kind, count in repeats.items():
            budget = {}
            for name in list(live):
                budget[name] = count
                for _ in range(max(2, warmup)):
                    seconds = run(name, kind)
                    if seconds is None or seconds > SLOW_STEP_S:
                        budget[name] = 0 if seconds is None else min(count, 2)
                        break
            for index in range(max(budget.values(), default=0)):
                for name in list(live) if index % 2 == 0 else list(reversed(live)):
                    if name in live and len(times[name][kind]) < budget[name]:
                        time.sleep(PAUSE_S)
                        seconds = run(name, kind)
                        if seconds is not None:
                            times[name][kind].append(seconds)
    finally:
        for worker in live.values():
            worker.close()
    return times
