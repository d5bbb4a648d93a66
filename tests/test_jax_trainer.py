"""The JAX backend's data-parallel trainer (``--strategy data_parallel``), as users start it:
fresh processes with KERAS_BACKEND=jax, several of them joined over localhost."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest
from test_training import _h5_arrays, _scalars

from conftest import TRAIN, free_port, run_trainer_in_process, wait_for_all
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
