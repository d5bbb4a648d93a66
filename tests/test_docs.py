"""Generated documentation stays in sync with the variants table and the weights registry."""

from __future__ import annotations

import pathlib

import pytest

from keras_regnet.tables import GENERATED_DOCS, markers, render, replace_generated

ROOT = pathlib.Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("doc", GENERATED_DOCS)
def test_generated_tables_are_current(doc):
    text = (ROOT / doc).read_text(encoding="utf-8")
    assert render(text, GENERATED_DOCS[doc]) == text, (
        f"{doc} is stale: run `python -m keras_regnet.tables --write`")


def test_replace_generated_needs_markers():
    with pytest.raises(ValueError, match="markers"):
        replace_generated("no markers here", "model table", "table")
    begin, end = markers("model table")
    assert replace_generated(f"a {begin} old {end} b", "model table", "new\n") == f"a {begin}\nnew\n{end} b"
