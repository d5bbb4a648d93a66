"""Every example in the package's docstrings runs and prints what it shows."""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import keras_regnet

MODULES = sorted(m.name for m in pkgutil.walk_packages(keras_regnet.__path__, "keras_regnet."))


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(name)
    # Examples are written as a user reads them: after `import keras_regnet`.
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE,
                             verbose=False, report=True, extraglobs={"keras_regnet": keras_regnet})
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples in {name} failed"


def test_the_public_api_shows_examples():
    """Builders, the design core and the CLI-facing helpers each carry a runnable example."""
    finder = doctest.DocTestFinder()
    examples = {name: sum(len(t.examples) for t in finder.find(importlib.import_module(name)))
                for name in MODULES}
    for name in ("keras_regnet.design.spec", "keras_regnet.design.complexity", "keras_regnet.layers",
                 "keras_regnet.applications", "keras_regnet.weights", "keras_regnet.weight_choice",
                 "keras_regnet.conversion",
                 "keras_regnet.weight_table", "keras_regnet.references", "keras_regnet.preprocessing"):
        assert examples[name] > 0, f"{name} has no docstring example"
