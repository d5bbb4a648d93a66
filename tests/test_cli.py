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


def test_verify_exits_nonzero_above_tolerance(tmp_path, capsys):
    reference = verify.calibrated_reference("RegNetY004", "torchvision")
    checkpoint = verify.save_native(reference, "torchvision", tmp_path)
    code = cli.main(["convert", "--source", "torchvision", "--checkpoint", checkpoint, "--model",
                     "RegNetY004", "--output", str(tmp_path / "y004.weights.h5"), "--verify",
                     "--tolerance", "1e-12"])
    assert code == 1 and "FAILED" in capsys.readouterr().out
