"""Generated documentation stays in sync with the variants table."""

from __future__ import annotations

import pathlib

import pytest

from keras_regnet.tables import BEGIN, END, GENERATED_DOCS, model_table, replace_generated

ROOT = pathlib.Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("doc", GENERATED_DOCS)
def test_generated_model_table_is_current(doc):
    text = (ROOT / doc).read_text(encoding="utf-8")
    assert replace_generated(text, model_table()) == text, (
        f"{doc} is stale: run `python -m keras_regnet.tables --write`")


def test_replace_generated_needs_markers():
    with pytest.raises(ValueError, match="markers"):
        replace_generated("no markers here", "table")
    assert replace_generated(f"a {BEGIN} old {END} b", "new\n") == f"a {BEGIN}\nnew\n{END} b"
