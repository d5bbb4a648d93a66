"""The suite on JAX and PyTorch: one fresh pytest per backend runs the model, layer, pyramid and
KerasHub tests, Keras's own applications suite on our builders and the JAX/PyTorch-only checks
(tests/other_backends: convolutions, channels-first, every variant's logits against
TensorFlow's, JAX's data-parallel step and kernel init). TensorFlow-only tests are skipped
there, each with its reason (``tensorflow_only``); any other skip or failure fails the test."""

from __future__ import annotations

import os
import pathlib
import re
import subprocess
import sys
import xml.etree.ElementTree as ElementTree

import numpy as np
import pytest
from test_keras_contract import expected_contract_tests, keras_suite_on_our_builders

from conftest import CONV_CASES, XLA_TEST_FLAGS, deterministic_variant
from keras_regnet.variants import VARIANTS

# Fresh processes throughout: part of the full suite, not the quick pass.
pytestmark = pytest.mark.slow

ROOT = pathlib.Path(__file__).resolve().parent.parent
BACKEND_FILES = ["tests/test_models.py", "tests/test_layers.py", "tests/test_pyramid.py", "tests/test_hub.py",
                 "tests/other_backends"]


# Deselected in the backend runs, each covered by another test:
LEFT_TO_OTHER_TESTS = {
    # ... the internet: Keras's ImageNet download (our weights: test_conversion.py);
    # ... the every-variant build and call: test_logits_equal_tensorflows builds and runs each
    #     variant on the backend (the parameter count does not depend on it; its kernels are
    #     set, not drawn: the initialisers run in every other model test there);
    # ... KerasHub's own routines on JAX (~2 min of compiles): its loading, fitting and
    #     saving of a preset run on JAX in test_hub's fresh-process test.
    "jax": ["test_application_base", "test_every_variant_builds", "RegNetKerasHubTest"],
    "torch": ["test_application_base", "test_every_variant_builds"],
}


def write_tensorflow_logits(path: pathlib.Path) -> None:
    """Every variant's logits on TensorFlow for 2 images of 64x64, with the weights
    ``set_deterministic_weights`` gives, as an .npz (written whole or not at all)."""
    images = np.random.default_rng(0).uniform(0, 255, (2, 64, 64, 3)).astype("float32")
    logits = {"images": images}
    for name in VARIANTS:
        logits[name] = np.asarray(deterministic_variant(name)(images))
    partial = path.with_suffix(".partial.npz")
    np.savez(partial, **logits)
    os.replace(partial, path)


def _outcomes(junit: pathlib.Path) -> dict[str, tuple[str, str]]:
    """{test id: (outcome, message)} from pytest's JUnit XML."""
    outcomes = {}
    for case in ElementTree.parse(junit).iter("testcase"):
        test_id = f"{case.get('classname')}::{case.get('name')}"
        outcome, message = "passed", ""
        for child in case:
            if child.tag in ("failure", "error", "skipped"):
                outcome, message = child.tag, child.get("message", "")
        outcomes[test_id] = (outcome, message)
    return outcomes


def _run_backend(backend: str, folder: pathlib.Path, logits: pathlib.Path) -> int:
    """The backend's pytest in a fresh process, its output in folder/out.txt; its exit code."""
    contract = folder / "test_keras_applications.py"
    contract.write_text(keras_suite_on_our_builders())
    env = {**os.environ, "KERAS_BACKEND": backend, "JAX_PLATFORMS": "cpu",
           "KERAS_REGNET_TF_LOGITS": str(logits),
           # Two host devices for the data-parallel check; one-device code is unaffected. The
           # suite's compile-time flags (conftest.XLA_TEST_FLAGS): XLA's compiles are most of the
           # JAX run (RegNetX002's predict: 15.5 s cold, 7.7 s at optimisation level 0, 3.9 s
           # with the loop emitters); the HLO passes, what the HLO test reads, still run.
           "XLA_FLAGS": f"--xla_force_host_platform_device_count=2 {XLA_TEST_FLAGS}"}
    env.pop("SKIP_APPLICATIONS_TESTS", None)
    deselected = " and ".join(f"not {test}" for test in LEFT_TO_OTHER_TESTS[backend])
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:xdist",
               "-c", str(ROOT / "pytest.ini"), "--rootdir", str(ROOT), f"--junitxml={folder / 'junit.xml'}",
               "-W", "ignore::pytest.PytestUnknownMarkWarning", *BACKEND_FILES, str(contract),
               "-k", deselected]
    with open(folder / "out.txt", "w") as out:
        return subprocess.run(command, env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
                              timeout=1200).returncode


def test_suite_on_jax_and_torch(tmp_path):
    """The TensorFlow logits first, then each backend's run, one process at a time: runs side by
    side made the suite's other tests 1.5-3x slower (the backends' thread pools compete)."""
    logits = tmp_path / "tensorflow_logits.npz"
    write_tensorflow_logits(logits)
    for backend in ("jax", "torch"):
        (tmp_path / backend).mkdir()
        _check_backend_run(backend, tmp_path / backend, _run_backend(backend, tmp_path / backend, logits))


def _check_backend_run(backend: str, folder: pathlib.Path, returncode: int) -> None:
    output = (folder / "out.txt").read_text()
    assert (folder / "junit.xml").exists(), output[-8000:]
    outcomes = _outcomes(folder / "junit.xml")
    failed = {t: m for t, (o, m) in outcomes.items() if o in ("failure", "error")}
    assert not failed and returncode == 0, f"{backend}: {failed}\n{output[-5000:]}"
    # A skip would hide a failure: only TensorFlow-only tests, and (on PyTorch) the JAX-only ones.
    allowed = ("TensorFlow only: ", "XLA's SPMD partitioning: the JAX backend only",
               "XLA's convolutions off the CPU: the JAX backend only",
               "Keras's kernels drawn on the host: the JAX backend only",
               "PyTorch's fused batch norm: the PyTorch backend only",
               "PyTorch's kernel cache: the PyTorch backend only",
               "PyTorch's fused inference: the PyTorch backend only",
               "Keras's per-layer call skipped: the PyTorch backend only",
               "PyTorch's fusions and direct walk: the PyTorch backend only")
    skipped = {t: m for t, (o, m) in outcomes.items() if o == "skipped" and not m.startswith(allowed)}
    assert not skipped, (backend, skipped)

    def passed(pattern: str) -> int:
        return sum(1 for t, (o, _) in outcomes.items() if o == "passed" and re.search(pattern, t))

    # Keras's applications suite whole (minus its internet-only test) ...
    assert passed(r"ApplicationsTest::") == expected_contract_tests(), backend
    # ... every variant's logits, and the backend-only checks.
    assert passed(r"test_logits_equal_tensorflows") == len(VARIANTS), backend
    assert passed(r"test_our_convolution_equals_keras") == 2 * len(CONV_CASES), backend  # 2 layouts
    assert passed(r"test_channels_first_predicts_what_channels_last_does") == 1, backend
    assert passed(r"test_a_saved_logits_model_loads_for_serving") == 1, backend
    # 2 data-parallel formulations, the kernel init, the convolutions' choice off the CPU
    jax_only = 4 if backend == "jax" else 0
    assert passed(r"test_data_parallel_train_step|test_jax_conv_kernels|test_jax_off_the_cpu") == jax_only, \
        backend
    assert passed(r"test_torch_fused_batch_norm") == (6 if backend == "torch" else 0), backend
    assert passed(r"test_torch_kernel_cache") == (3 if backend == "torch" else 0), backend
    assert passed(r"test_torch_inference_fuses") == (2 if backend == "torch" else 0), backend
    assert passed(r"test_torch_calls_the_layers_directly") == (1 if backend == "torch" else 0), backend
    assert passed(r"test_torch_speeds_up_loaded_and_kerashub") == (1 if backend == "torch" else 0), backend
