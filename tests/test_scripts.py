"""Every script under benchmarks/ and training/ runs end to end on a tiny input, as a user
starts it (its own process), so none can rot unnoticed (gpu.py once called a renamed helper).

The trainer (train.py), make_tfrecords.py and transfer_learning.py have their own tests in
test_training.py, test_hardening.py and test_hub.py; ``test_every_script_has_a_smoke_test``
keeps this table complete.
"""

from __future__ import annotations

import os
import pathlib
import re
import runpy
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
TINY = ["--batch", "2", "--size", "32", "--repeats", "1"]

# script -> (arguments, a line its output must hold)
SMOKE = {
    # --interleave here and for bench_deploy.py (interleave.py's own logic: the tests at the end);
    # bench_models' default mode: OTHER_MODES.
    "benchmarks/bench_models.py": ([*TINY, "--models", "RegNetX002", "--contenders", "keras_regnet",
                                    "keras_regnet_torch", "timm", "--warmup", "0", "--interleave",
                                    "--xla-models"],
                                   r"alternating with the others' batch by batch"
                                   r"[\s\S]*\| RegNetX002 \| .*timm"),
    # The TF SavedModel workers are left out here (served by plain TensorFlow in test_export.py).
    "benchmarks/bench_deploy.py": (["--models", "RegNetX002", "--size", "32", "--repeats", "1", "--int8",
                                    "--runtimes", "onnxruntime", "litert", "openvino", "timm",
                                    "--interleave"],
                                   r"int8 speed-up[\s\S]*\| RegNetX002 \| OpenVINO \| .* \| .*x \|"
                                   r"[\s\S]*\| RegNetX002 \| PyTorch eager \(timm\) \| .* \| .*x \|"),
    "benchmarks/bench_export.py": (["--model", "RegNetX002", "--batch", "2", "--warmup", "0",
                                    "--repeats", "1"], r"SavedModel"),
    "benchmarks/bench_import_order.py": ([*TINY, "--model", "RegNetX002", "--rounds", "1"], r"RegNetX002"),
    # The TensorFlow and timm workers run in bench_models.py's smoke test: here the JAX
    # data-parallel one (the plain JAX worker plus a distribution), its batch of 2 split over
    # two host devices (XLA_FLAGS below) as over a host's GPUs.
    # Its GPU-against-CPU logits check for one backend (CPU against CPU here: the code path).
    "benchmarks/gpu.py": ([*TINY, "--models", "RegNetX002", "--warmup", "0", "--precisions", "fp32",
                           "--contenders", "keras_regnet_jax_dp", "--parity", "jax", "--json", "gpu.json"],
                          r"logits RegNetX002 jax: GPU against CPU max \|difference\| 0 "
                          r"[\s\S]*\| RegNetX002 \| fp32 \| keras_regnet_jax_dp \|"),
    "benchmarks/parity_report.py": (["--models", "RegNetX002"], r"RegNetX002\s+pycls\s+\d"),
    "benchmarks/profile_ops.py": (["--model", "RegNetX002", "--batch", "2", "--steps", "1"], r"RegNetX002"),
    "benchmarks/profile_int8.py": (["--model", "RegNetX002", "--batch", "2", "--size", "32", "--steps", "1"],
                                   r"\| ONNX Runtime \| fp32 ms[\s\S]*\| 3x3 grouped conv \(conv2\) \| \d"
                                   r"[\s\S]*\| OpenVINO \| fp32 ms[\s\S]*\| 1x1 conv \(conv1\) \| \d"
                                   r"[\s\S]*\| LiteRT \(XNNPACK\) \| fp32 ms"
                                   r"[\s\S]*\| 3x3 grouped conv \(conv2\) \| \d"
                                   r"[\s\S]*\| call, wall clock \(profiled\) \| \d"),
    "benchmarks/serve_gpu_check.py": (["RegNetX002", "--batch", "2", "--device", "cpu"], r'"max_difference"'),
}
# Environment beyond the suite's: over one CPU device Keras's JAX predict and train steps
# compile twice (RegNetX002: 7 s and 46 s more at the suite's XLA optimisation level), over two
# once, and the split is what the script does on a multi-GPU host.
SMOKE_ENV = {"benchmarks/gpu.py": {"XLA_FLAGS": os.environ.get("XLA_FLAGS", "")
                                   + " --xla_force_host_platform_device_count=2"}}
TESTED_ELSEWHERE = {"training/train.py", "training/make_tfrecords.py", "training/transfer_learning.py"}
HELPERS = {"benchmarks/timing_args.py", "benchmarks/interleave.py"}  # imported by the scripts, not run


def test_every_script_has_a_smoke_test():
    scripts = {str(p.relative_to(ROOT)) for folder in ("benchmarks", "training")
               for p in (ROOT / folder).glob("*.py")}
    assert scripts - HELPERS == set(SMOKE) | TESTED_ELSEWHERE


# A second mode of a script, run the same way: bench_models' default, one contender's process
# after another (its --interleave runs in SMOKE).
OTHER_MODES = {
    "bench_models one process after another": (
        "benchmarks/bench_models.py", [*TINY, "--models", "RegNetX002", "--contenders", "keras_regnet",
                                       "timm", "--warmup", "0", "--rounds", "1", "--xla-models"],
        r"median over 1 alternating rounds[\s\S]*\| RegNetX002 \| .*timm"),
    "profile_ops against tf-keras": (
        "benchmarks/profile_ops.py", ["--model", "RegNetX002", "--batch", "2", "--steps", "1",
                                      "--mode", "infer", "--against", "tf_keras"],
        r"\| class \| keras_regnet ms/step \| tf_keras ms/step[\s\S]*\| conv forward \| \d+ \| \d+ \|"),
}


@pytest.mark.slow
@pytest.mark.parametrize("script", SMOKE)
def test_script_runs_end_to_end_on_a_tiny_input(script, tmp_path):
    _run_script(script, *SMOKE[script], tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("mode", OTHER_MODES)
def test_script_mode_runs_end_to_end_on_a_tiny_input(mode, tmp_path):
    _run_script(*OTHER_MODES[mode], tmp_path)


@pytest.mark.parametrize("script", [s for s, (args, _) in SMOKE.items() if "RegNetX002" in args])
def test_an_unknown_model_name_is_one_line_before_any_work(script, monkeypatch, capsys):
    """A mistyped model (RegNetX999 for RegNetX002) ends the script at once with argparse's
    usage and one error line naming it, exit status 2: in this process, as the script's own
    parent code runs (its workers, which never see a name it has not checked, are not started)."""
    args = [arg.replace("RegNetX002", "RegNetX999") for arg in SMOKE[script][0]]
    monkeypatch.setattr(sys, "argv", [script, *args])
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    with pytest.raises(SystemExit) as exited:
        runpy.run_path(str(ROOT / script), run_name="__main__")
    assert exited.value.code == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert "RegNetX999" in error and "list_models()" in error, error


def test_scripts_take_paper_names_and_pass_their_workers_the_builder_names():
    """`--models RegNetX-400MF regnety032` reaches the workers (and the anchors, which derive
    timm's and tf-keras's names from ours) as RegNetX004 and RegNetY032."""
    import timing_args

    parser = timing_args.timing_parser("test", models=[])
    assert timing_args.check_models(parser, ["RegNetX-400MF", "regnety032"]) == ["RegNetX004", "RegNetY032"]


def _run_script(script: str, args: list[str], expected: str, tmp_path) -> None:
    result = subprocess.run([sys.executable, str(ROOT / script), *args], capture_output=True, text=True,
                            timeout=600, cwd=tmp_path,
                            env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", **SMOKE_ENV.get(script, {})))
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    assert re.search(expected, result.stdout), result.stdout[-3000:]
    # Every contender asked for ran (gpu.py's GPU serving check has no GPU here, and says so).
    missing = [line for line in result.stdout.splitlines()
               if "unavailable" in line and "sees no GPU" not in line]
    assert missing == [], result.stdout[-3000:]
    assert "Traceback" not in result.stderr


sys.path.insert(0, str(ROOT / "benchmarks"))
import interleave  # noqa: E402 (benchmarks/ is not a package)

# A worker whose step "a" logs its name (and on its Nth call exits with status 3, if given);
# step "b" it does not have.
WORKER = """
import os, sys
sys.path.insert(0, {folder!r})
import interleave
calls = 0
def step():
    global calls
    calls += 1
    if calls == {dies_at}:
        os._exit(3)
    with open({log!r}, "a") as log:
        log.write({name!r} + "\\n")
interleave.serve({{"a": step, "b": None}})
"""


def _workers(tmp_path, dies_at: dict[str, int]) -> dict:
    return {name: interleave.ServingWorker([sys.executable, "-c", WORKER.format(
        folder=str(ROOT / "benchmarks"), log=str(tmp_path / "order.txt"), name=name, dies_at=at)])
        for name, at in dies_at.items()}


def test_interleave_alternates_the_contenders_step_by_step(tmp_path):
    times = interleave.interleave(_workers(tmp_path, {"x": -1, "y": -1}), {"a": 3, "b": 2}, warmup=2)
    order = (tmp_path / "order.txt").read_text().split()
    # Warm-ups one contender after the other, then one timed step each, the order reversed
    # every repeat; a step a worker does not have is not timed.
    assert order == ["x", "x", "y", "y", "x", "y", "y", "x", "x", "y"]
    assert {n: (len(t["a"]), t["b"]) for n, t in times.items()} == {"x": (3, []), "y": (3, [])}


def test_interleave_names_a_worker_that_died_and_finishes_the_others(tmp_path):
    reports: list[str] = []
    times = interleave.interleave(_workers(tmp_path, {"ok": -1, "dies": 4}), {"a": 4}, warmup=2,
                                  report=reports.append)
    assert reports == ["  dies: unavailable (exited with status 3)"]
    assert list(times) == ["ok"] and len(times["ok"]["a"]) == 4


def test_every_bench_models_contender_names_its_worker(monkeypatch):
    # A contender is looked up by name in the worker process: a table entry without its
    # function would fail only on the day someone asks for it.
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    module = runpy.run_path(str(ROOT / "benchmarks" / "bench_models.py"), run_name="bench_models_table")
    missing = [name for name in module["CONTENDERS"]
               if not callable(module.get(module["SAME_WORKER"].get(name, name)))]
    assert not missing, missing
