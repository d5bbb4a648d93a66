"""Keras's own applications test suite, run on our builders on every backend.

The test file is the installed Keras's ``keras/src/applications/applications_test.py``, read
at test time (not copied) with its model list replaced by ours. Each backend runs it in a
fresh process: TensorFlow here, JAX and PyTorch inside test_backends.py's per-backend run.
``test_application_base`` is deselected: it downloads ImageNet weights and a
test image from the internet, which this suite never does (our pretrained weights are tested
against the reference libraries in test_conversion.py).
"""

from __future__ import annotations

import os
import pathlib
import re
import subprocess
import sys

import keras
import pytest

from conftest import smallest_per_family
from keras_regnet.variants import get_spec

pytestmark = pytest.mark.slow

KERAS_TEST = pathlib.Path(keras.__file__).parent / "src" / "applications" / "applications_test.py"
MODEL_LIST = re.compile(r"^MODEL_LIST = \[\n.*?^\]\n", re.M | re.S)


def keras_suite_on_our_builders() -> str:
    """The installed Keras's applications test, its MODEL_LIST (builder, last feature width,
    module with preprocess_input / decode_predictions) replaced by ours."""
    source = KERAS_TEST.read_text()
    ours = "".join(f"    (keras_regnet.{name}, {get_spec(name).widths[-1]}, keras_regnet),\n"
                   for name in smallest_per_family())
    replaced, count = MODEL_LIST.subn(lambda _: f"import keras_regnet\n\nMODEL_LIST = [\n{ours}]\n", source)
    assert count == 1, f"{KERAS_TEST} no longer has the MODEL_LIST this test replaces"
    return replaced


def expected_contract_tests() -> int:
    """Every test the file has, each run per data format and model, but the internet-only one."""
    tests = set(re.findall(r"^    def (test_\w+)\(", KERAS_TEST.read_text(), re.M))
    tests.discard("test_application_base")
    return len(tests) * 2 * len(smallest_per_family())


def test_keras_applications_suite_passes_on_our_builders(tmp_path):
    path = tmp_path / "test_regnet_applications.py"
    path.write_text(keras_suite_on_our_builders())
    env = {**os.environ, "KERAS_BACKEND": "tensorflow"}
    env.pop("SKIP_APPLICATIONS_TESTS", None)
    out = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:xdist",
                          str(path), "-k", "not test_application_base", "--rootdir", str(tmp_path),
                          "-W", "ignore::pytest.PytestUnknownMarkWarning"],
                         env=env, cwd=tmp_path, capture_output=True, text=True, timeout=900)
    summary = out.stdout.strip().splitlines()[-1] if out.stdout.strip() else ""
    assert out.returncode == 0, out.stdout[-5000:] + out.stderr[-2000:]
    # Every test, none skipped: a skip would hide a failure.
    expected = expected_contract_tests()
    assert re.search(rf"\b{expected} passed\b", summary) and "skipped" not in summary, summary
