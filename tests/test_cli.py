"""The keras-regnet command line."""

from __future__ import annotations

from keras_regnet import cli
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
