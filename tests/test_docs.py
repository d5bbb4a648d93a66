"""Generated files stay in sync with the variants table and the weights table."""

from __future__ import annotations

import pathlib

import pytest

from keras_regnet.tables import GENERATED_FILES, markers, render, replace_generated

ROOT = pathlib.Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("name", GENERATED_FILES)
def test_generated_regions_are_current(name):
    text = (ROOT / name).read_text(encoding="utf-8")
    assert render(text, GENERATED_FILES[name], python=name.endswith(".py")) == text, (
        f"{name} is stale: run `python -m keras_regnet.tables --write`")


def test_replace_generated_needs_markers():
    with pytest.raises(ValueError, match="markers"):
        replace_generated("no markers here", "model table", "table")
    begin, end = markers("model table")
    assert replace_generated(f"a {begin} old {end} b", "model table", "new\n") == f"a {begin}\nnew\n{end} b"


def test_a_python_region_keeps_its_indentation():
    begin, end = markers("builders", python=True)
    text = f"if x:\n    {begin}\n    old\n    {end}\n"
    assert replace_generated(text, "builders", "a = 1\nb = 2\n", python=True) == (
        f"if x:\n    {begin}\n    a = 1\n    b = 2\n    {end}\n")
