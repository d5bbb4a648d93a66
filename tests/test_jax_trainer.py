"""The JAX backend's data-parallel trainer (``--strategy data_parallel``), as users start it:
fresh processes with KERAS_BACKEND=jax, several of them joined over localhost."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
from test_training import _h5_arrays, _scalars

from conftest import TRAIN, free_port, run_trainer_in_process, wait_for_all
from keras_regnet.training import rendezvous
from keras_regnet.training.config import TrainConfig
from keras_regnet.training.demo import prepare

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Process 0 SIGKILLed while writing a given checkpoint (the file says how).
KILLED_IN_CHECKPOINT_WRITE = os.path.join(ROOT, "tests", "clients", "jax_train_killed_in_checkpoint_write.py")
JAX = {"KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu"}


def _flags(data_dir: str, design: str, model_dir) -> list[str]:
    return ["--strategy", "data_parallel", f"--data_dir={data_dir}", f"--design={design}",
            f"--model_dir={model_dir}", "--epochs", "2", "--steps_per_epoch", "6", "--batch_size", "16",
            "--image_size", "32", "--num_classes", "10", "--checkpoint_every", "2", "--noexport"]


def _start(command: list[str], processes: int) -> list[subprocess.Popen]:
    """``command`` as each process of a job joined at a free localhost port."""
    if processes == 1:
        extra = [[]]
    else:
        address = f"127.0.0.1:{free_port()}"
        extra = [["--num_processes", str(processes), "--process_id", str(i), "--coordinator_address", address]
                 for i in range(processes)]
    env = {**os.environ, **JAX}
    return [subprocess.Popen([sys.executable, *command, *more], stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True, env=env) for more in extra]


@pytest.mark.slow
def test_two_processes_take_the_steps_of_one_and_resume_exactly_after_a_kill(tmp_path, tiny_design):
    """One process over 2 CPU devices, then 2 processes over 1 device each at the same global
    batch: process 0 SIGKILLed while writing checkpoint 8, the job restarted. Every step's
    loss (within 1e-5 relative), the final weights and the top-1 equal the 1-process run's."""
    data = prepare(str(tmp_path / "demo"))
    one, two = tmp_path / "one", tmp_path / "two"
    output = wait_for_all(_start([TRAIN, *_flags(data, tiny_design, one), "--cpu_replicas", "2"], 1))[0]
    assert "over 2 devices in 1 processes" in output

    first, second = _start([KILLED_IN_CHECKPOINT_WRITE, "8", *_flags(data, tiny_design, two)], 2)
    try:
        first.wait(timeout=400)
        assert first.returncode == -signal.SIGKILL, first.communicate()[0][-3000:]
    finally:
        second.kill()  # waiting for process 0 in the next step's all-reduce
        second.wait()
    checkpoints = two / "checkpoints"
    names = sorted(os.listdir(checkpoints))
    assert [n for n in names if not n.startswith(".")] == ["ckpt-4.npz", "ckpt-6.npz"], names
    assert any(n.startswith(".ckpt-8.npz.") for n in names), names  # 8's data written, never renamed
    assert not (two / "metrics.json").exists()

    outputs = wait_for_all(_start([TRAIN, *_flags(data, tiny_design, two)], 2))
    assert "over 2 devices in 2 processes" in outputs[0] and "resumed from" in outputs[0], outputs[0][-3000:]
    assert sorted(os.listdir(checkpoints)) == ["ckpt-10.npz", "ckpt-12.npz"]  # the partial write removed
    metrics, reference = (json.loads((d / "metrics.json").read_text()) for d in (two, one))
    assert (metrics["steps"], metrics["steps_this_run"], metrics["processes"]) == (12, 6, 2)
    # Steps 1-6 were logged before the kill, 7-12 after the restart.
    losses, expected = _scalars(two, "train/loss"), _scalars(one, "train/loss")
    assert len(losses) == len(expected) == 12
    np.testing.assert_allclose(losses, expected, rtol=1e-5, atol=0)
    weights, expected_weights = _h5_arrays(two / "final.weights.h5"), _h5_arrays(one / "final.weights.h5")
    assert weights.keys() == expected_weights.keys()
    for key in weights:
        np.testing.assert_allclose(weights[key], expected_weights[key], rtol=1e-5, atol=1e-7, err_msg=key)
    # Each process evaluated half of the records; together, every record once.
    assert metrics["val_top1"] == pytest.approx(reference["val_top1"], abs=1e-9)


def test_data_parallel_mistakes_are_one_line(capsys, tmp_path):
    """On the TensorFlow backend (this process) --strategy data_parallel says to use JAX; the
    process flags are checked before anything starts."""
    result = run_trainer_in_process(capsys, "--strategy", "data_parallel", "--epochs", "1",
                                    f"--model_dir={tmp_path / 'run'}")
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    assert "KERAS_BACKEND=jax trains with --strategy data_parallel" in result.stderr
    with pytest.raises(ValueError, match="--num_processes > 1 needs --strategy data_parallel and"):
        TrainConfig(strategy="data_parallel", num_processes=2, process_id=1)
    with pytest.raises(ValueError, match="--process_id must lie in 0 .. --num_processes - 1"):
        TrainConfig(strategy="data_parallel", num_processes=2, process_id=2, coordinator_address="h:1")
    with pytest.raises(ValueError, match="fp32 or mixed_bfloat16"):
        TrainConfig(strategy="data_parallel", precision="mixed_float16")


def _meet_in_threads(address: str, process_ids: list[int], num_processes: int, timeout: float,
                     start_last: int | None = None, timeouts: dict[int, float] | None = None
                     ) -> dict[int, Exception | None]:
    """Each process id's ``rendezvous.meet`` in its own thread ({id: its error or None}), with
    ``timeout`` or its own in ``timeouts``; process 0 starts 0.3 s ahead, and ``start_last``
    after the others retry."""
    outcomes: dict[int, Exception | None] = {}
    timeouts = timeouts or {}

    def one(process_id: int) -> None:
        try:
            rendezvous.meet(address, process_id, num_processes, timeouts.get(process_id, timeout))
            outcomes[process_id] = None
        except Exception as err:  # noqa: BLE001 (the test reads it)
            outcomes[process_id] = err

    threads = {i: threading.Thread(target=one, args=(i,)) for i in process_ids}
    # Process 0 first (unless it is to come last), listening before the others try.
    for i in sorted(threads, key=lambda i: i != 0):
        if i != start_last:
            threads[i].start()
            time.sleep(0.3 if i == 0 else 0)
    if start_last is not None:
        time.sleep(2 * rendezvous.RETRY_SECONDS)
        threads[start_last].start()
    for thread in threads.values():
        thread.join(timeout + 15)
    return outcomes


def test_processes_meet_whichever_starts_first_and_leave_the_port_to_jax():
    address = f"127.0.0.1:{free_port()}"
    assert _meet_in_threads(address, [0, 1, 2], 3, timeout=20, start_last=0) == {0: None, 1: None, 2: None}
    # Process 0 has closed its socket: JAX's coordination service can take the port.
    socket.create_server(("", rendezvous.split_address(address)[1])).close()


def test_a_missing_process_is_one_line_on_either_side():
    address = f"127.0.0.1:{free_port()}"
    (alone,) = _meet_in_threads(address, [1], 2, timeout=1).values()
    assert isinstance(alone, rendezvous.JoinError) and "found no process 0 at --coordinator_address " \
        f"{address} within 1 s" in str(alone)
    # Process 2 gives up first, then process 0; then process 0 first, and process 2 hears it.
    outcomes = _meet_in_threads(address, [0, 2], 4, timeout=1.5, timeouts={2: 0.5})
    assert "reached process 0 at" in str(outcomes[2]), outcomes
    assert "not every one of the 4 processes" in str(outcomes[2])
    assert "process(es) 1, 3 of 4 did not join" in str(outcomes[0])
    outcomes = _meet_in_threads(address, [0, 2], 4, timeout=2.5, timeouts={0: 1.2})
    assert "process(es) 1, 3 of 4 did not join" in str(outcomes[0])
    assert "stopped waiting before every process joined" in str(outcomes[2])
    # A process started with another job's --num_processes is refused, naming both counts.
    wrong = {}
    server = threading.Thread(target=lambda: wrong.update(_meet_in_threads(address, [0], 2, timeout=2)))
    server.start()
    time.sleep(0.5)
    (refused,) = _meet_in_threads(address, [1], 3, timeout=1.5).values()
    server.join()
    assert "refused process 1: process 0 was started with --num_processes 2, this one with 3" in str(refused)
    assert "process(es) 1 of 2 did not join" in str(wrong[0])
    for text in (str(alone), str(outcomes[0]), str(outcomes[2]), str(refused)):
        assert "\n" not in text


def test_a_malformed_coordinator_address_is_refused_before_anything_starts():
    for address in ("10.0.0.2", "10.0.0.2:port", ":9876", "10.0.0.2:70000"):
        with pytest.raises(ValueError, match="--coordinator_address must be HOST:PORT"):
            TrainConfig(strategy="data_parallel", num_processes=2, process_id=1, coordinator_address=address)
    assert rendezvous.split_address("[::1]:9876") == ("::1", 9876)
    with pytest.raises(ValueError, match="--join_timeout must be positive"):
        TrainConfig(strategy="data_parallel", num_processes=2, coordinator_address="h:1", join_timeout=0)


@pytest.mark.slow
def test_a_job_missing_a_process_ends_in_one_line_not_an_abort(tmp_path, tiny_design):
    """As users start it: process 1 of a job whose process 0 never starts, and process 0 of a job
    whose process 1 never does, each exits 2 with one line (JAX's own join aborts with a C++
    stack trace)."""
    data = prepare(str(tmp_path / "demo"))
    env = {**os.environ, **JAX}
    procs = [subprocess.Popen([sys.executable, TRAIN, *_flags(data, tiny_design, tmp_path / f"run{i}"),
                               "--num_processes", "2", "--process_id", str(i), "--coordinator_address",
                               f"127.0.0.1:{free_port()}", "--join_timeout", "3"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
             for i in (0, 1)]
    for i, proc in enumerate(procs):
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 2, err[-3000:]
        assert "Traceback" not in err and "Check failure" not in err, err[-3000:]
        last = err.strip().splitlines()[-1]
        expected = "process(es) 1 of 2 did not join" if i == 0 else "process 1 found no process 0"
        assert last.startswith("train: error: ") and expected in last, err[-3000:]
