"""The keras-regnet command line."""

from __future__ import annotations

import pytest

from keras_regnet import cli, verify
from keras_regnet.variants import VARIANTS


def test_list_prints_every_model(capsys):
    assert cli.main(["list"]) == 0
    out = capsys.readouterr().out
    assert all(f"`{name}`" in out for name in VARIANTS)


def test_info_builds_and_checks_the_model(capsys):
    assert cli.main(["info", "RegNetY002", "--size", "64", "--batch", "2"]) == 0
    out = capsys.readouterr().out
    assert "equal to the analytic count" in out and "softmax sums to 1.000000" in out


def test_unknown_model_is_a_clear_error(capsys):
    assert cli.main(["info", "RegNetZ999"]) == 2
    assert "Unknown model 'RegNetZ999'" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.parametrize("source, model", [("pycls", "RegNetX002"), ("timm", "RegNetY002"),
                                           ("torchvision", "RegNetX004TV")])
def test_convert_with_verify(source, model, tmp_path, capsys):
    # --verify loads the same tensors into the reference model strictly.
    checkpoint = verify.save_native(verify.calibrated_reference(model, source), source, tmp_path)
    output = tmp_path / "converted.weights.h5"
    code = cli.main(["convert", "--source", source, "--checkpoint", checkpoint, "--model",
                     model, "--output", str(output), "--verify"])
    out = capsys.readouterr().out
    assert code == 0 and output.exists() and "OK" in out
    if source != "pycls":
        return
    # A checkpoint of another model is refused with the mismatch list, and nothing is written.
    other = tmp_path / "y002.weights.h5"
    code = cli.main(["convert", "--source", "pycls", "--checkpoint", checkpoint, "--model",
                     "RegNetY002", "--output", str(other)])
    assert code == 2 and not other.exists()
    assert "nothing was loaded" in capsys.readouterr().err


@pytest.mark.slow
def test_verify_exits_nonzero_above_tolerance(tmp_path, capsys):
    reference = verify.calibrated_reference("RegNetY004", "torchvision")
    checkpoint = verify.save_native(reference, "torchvision", tmp_path)
    code = cli.main(["convert", "--source", "torchvision", "--checkpoint", checkpoint, "--model",
                     "RegNetY004", "--output", str(tmp_path / "y004.weights.h5"), "--verify",
                     "--tolerance", "1e-12"])
    assert code == 1 and "FAILED" in capsys.readouterr().out


def _console_script() -> str:
    """The installed ``keras-regnet`` command (pip writes it beside the interpreter)."""
    import os
    import shutil
    import sys

    script = os.path.join(os.path.dirname(sys.executable), "keras-regnet")
    return script if os.path.exists(script) else shutil.which("keras-regnet")


HEAVY_PACKAGES = ("tensorflow", "keras", "keras_hub", "torch")


def _imported_modules(importtime_stderr: str) -> set[str]:
    """The modules a `python -X importtime` process imported, from its stderr."""
    return {line.rsplit("|", 1)[-1].strip() for line in importtime_stderr.splitlines() if "|" in line}


def _one_line_before_keras(result, prefix: str) -> str:
    """A `python -X importtime` process's one error line: exit status 2, nothing else on stderr,
    no TensorFlow, Keras, KerasHub or PyTorch imported."""
    lines = [line for line in result.stderr.splitlines() if not line.startswith("import time:")]
    assert result.returncode == 2 and len(lines) == 1 and lines[0].startswith(prefix), lines
    heavy = {m for m in _imported_modules(result.stderr) if m.split(".")[0] in HEAVY_PACKAGES}
    assert not heavy, sorted(heavy)[:5]
    return lines[0]


LIGHT_COMMANDS = {"list": (["list"], "RegNetY320"), "help": (["--help"], "usage: keras-regnet"),
                  "sweep-sample": (["sweep", "sample", "--space", "RegNetX", "--n", "3"], "wrote 3 RegNetX"),
                  "weights": (["weights"], "tv2_in1k"),
                  "weights-verify": (["weights", "--verify"], "0 changed since they were recorded")}


@pytest.mark.parametrize("started_as", ["keras-regnet", "python -m keras_regnet.cli"])
@pytest.mark.parametrize("command", LIGHT_COMMANDS)
def test_light_commands_start_without_tensorflow(command, started_as, tmp_path):
    """`keras-regnet list`, `--help` and `sweep sample` as a user starts them: the installed
    command in a fresh process, which never imports TensorFlow or Keras (they start in well
    under a second, where the whole import took ~8 s)."""
    import subprocess
    import sys

    argv, expected = LIGHT_COMMANDS[command]
    if command == "sweep-sample":
        argv = [*argv, "--out", str(tmp_path / "s.jsonl")]
    import os

    entry = [_console_script()] if started_as == "keras-regnet" else ["-m", "keras_regnet.cli"]
    result = subprocess.run([sys.executable, "-X", "importtime", *entry, *argv],
                            capture_output=True, text=True, timeout=60,
                            env=dict(os.environ, KERAS_HOME=str(tmp_path / "home")))
    assert result.returncode == 0, result.stderr[-2000:]
    imported = _imported_modules(result.stderr)
    # (With -m the command's module runs as __main__: only its package shows as imported.)
    assert ("keras_regnet.cli" if started_as == "keras-regnet" else "keras_regnet") in imported
    heavy = {m for m in imported if m.split(".")[0] in HEAVY_PACKAGES}
    assert not heavy, sorted(heavy)[:5]
    assert expected in result.stdout


# A command's argument errors -> the one line each must print. The default weights
# ("imagenet") are not in the test's fresh KERAS_HOME: each error comes before any download.
EXPORT = ["export", "--model", "RegNetX002", "--output", "out"]
INT8 = ["--format", "onnx", "--quantize", "int8", "--calibration"]
CONVERT = ["convert", "--source", "timm", "--model", "RegNetX002", "--output", "out.weights.h5"]
ARGUMENT_ERRORS = {
    "export: calibration path": ([*EXPORT, *INT8, "missing"], "calibration source missing does not exist."),
    "export: calibration pairing": ([*EXPORT, "--format", "litert", "--quantize", "int8"],
                                    "--quantize int8 needs --calibration"),
    "export: unknown model": ([*EXPORT, "--model", "RegNetX999"], "Unknown model 'RegNetX999'"),
    "export: calibration count": ([*EXPORT, *INT8, ".", "--calibration-images", "0"],
                                  "--calibration-images must be a positive integer"),
    "export: eval transform": ([*EXPORT, "--eval-transform", "224"], "an eval transform is written"),
    "preset: unknown tag": (["preset", "--model", "RegNetX002", "--weights", "tv2_in1k", "--output", "out"],
                            "No weights 'tv2_in1k' for RegNetX002"),
    "convert: missing checkpoint": ([*CONVERT, "--checkpoint", "x.safetensors"],
                                    "checkpoint 'x.safetensors' does not exist"),
    "info: unknown model": (["info", "RegNetX-400GF"], "Unknown model 'RegNetX-400GF'"),
    "sweep train: missing file": (["sweep", "train", "x.jsonl"], "sweep file x.jsonl does not exist"),
}


@pytest.mark.parametrize("case", ARGUMENT_ERRORS)
def test_argument_errors_end_before_keras_loads_or_weights_download(case, tmp_path):
    """A command with a mistyped flag value: exit status 2 and one line, in a fresh process
    that never imports TensorFlow (no ~8 s of imports first, no weight download)."""
    import os
    import subprocess
    import sys

    argv, expected = ARGUMENT_ERRORS[case]
    result = subprocess.run([sys.executable, "-X", "importtime", _console_script(), *argv],
                            capture_output=True, text=True, timeout=60, cwd=tmp_path,
                            env=dict(os.environ, KERAS_HOME=str(tmp_path / "home")))
    assert expected in _one_line_before_keras(result, "keras-regnet: error: ")
    assert sorted(os.listdir(tmp_path)) == []  # no output, no weights cache


# The trainer's flag mistakes -> its one line: absl's parse, TrainConfig's checks, a positional.
TRAINER_ERRORS = {
    "strategy": (["--strategy", "bogus"], "flag --strategy=bogus: value should be one of <mirrored|"),
    "integer": (["--epochs", "x"], "flag --epochs=x: invalid literal for int()"),
    "unknown flag": (["--epoch", "3"], "Unknown command line flag 'epoch'"),
    "model": (["--model", "RegNetX04"], "did you mean RegNetX004"),
    "positional": (["extra"], "unexpected arguments ['extra']"),
}


@pytest.mark.parametrize("started_as", ["training/train.py", "keras-regnet train"])
@pytest.mark.parametrize("case", TRAINER_ERRORS)
def test_trainer_flag_mistakes_end_in_one_line_before_tensorflow_loads(case, started_as, tmp_path):
    """The trainer as a user starts it, with a mistyped flag: exit status 2 and one line, in a
    fresh process that never imports TensorFlow (they took ~7 s of imports first; the demo's
    data was written before a wrong model name was noticed) and writes nothing."""
    import os
    import subprocess
    import sys

    from conftest import TRAIN

    argv, expected = TRAINER_ERRORS[case]
    entry = [TRAIN] if started_as == "training/train.py" else [_console_script(), "train"]
    result = subprocess.run([sys.executable, "-X", "importtime", *entry, *argv], capture_output=True,
                            text=True, timeout=60, cwd=tmp_path)
    assert expected in _one_line_before_keras(result, "train: error: ")
    assert sorted(os.listdir(tmp_path)) == []


@pytest.mark.slow
def test_a_keras_command_of_the_cli_registers_what_import_keras_regnet_does():
    """Commands that need Keras load the same Keras side as `import keras_regnet` (its layers
    registered for load_model, KerasHub's classes), before they run."""
    import subprocess
    import sys

    probe = ("import sys; sys.modules['__main__'].__file__ = 'keras-regnet'\n"
             "import keras_regnet.cli as cli, keras\n"
             "assert keras.saving.get_registered_object('keras_regnet>GroupedConv2D') is None\n"
             "cli.main(['info', 'RegNetX002', '--size', '32', '--batch', '1'])\n"
             "assert keras.saving.get_registered_object('keras_regnet>GroupedConv2D') is not None\n"
             "assert keras.saving.get_registered_object('keras_regnet>RegNetBackbone') is not None\n")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
