"""Models are backend-agnostic: the same weights give the same outputs on JAX."""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import keras_regnet
from conftest import smallest_per_family

# Fresh processes and real runtimes throughout: part of the full suite, not the quick pass.
pytestmark = pytest.mark.slow


@pytest.mark.parametrize("name", smallest_per_family())
def test_jax_backend_matches_tensorflow(name, tmp_path):
    model = getattr(keras_regnet, name)(weights=None, input_shape=(64, 64, 3))
    weights = tmp_path / "w.weights.h5"
    model.save_weights(weights)
    x = np.random.default_rng(1).uniform(0, 255, (2, 64, 64, 3)).astype("float32")
    np.save(tmp_path / "x.npy", x)
    code = textwrap.dedent(
        f"""
        import keras, numpy as np, keras_regnet
        assert keras.backend.backend() == "jax"
        m = keras_regnet.{name}(weights={str(weights)!r}, input_shape=(64, 64, 3))
        np.save({str(tmp_path / "y.npy")!r}, np.asarray(m(np.load({str(tmp_path / "x.npy")!r}))))
        """
    )
    env = dict(os.environ, KERAS_BACKEND="jax", JAX_PLATFORMS="cpu")
    subprocess.run([sys.executable, "-c", code], env=env, check=True, timeout=300)
    np.testing.assert_allclose(np.load(tmp_path / "y.npy"), model(x), rtol=1e-4, atol=1e-6)


CLIENTS = pathlib.Path(__file__).parent / "clients"


def _client_json(script: str, *args: str, env: dict | None = None) -> dict:
    out = subprocess.run([sys.executable, str(CLIENTS / script), *args], env={**os.environ, **(env or {})},
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_our_convolutions_equal_keras_in_values_and_gradients(backend):
    """JAX runs grouped convs as per-group convs and 1x1 convs as matmuls, PyTorch without
    Keras's layout copies (keras_regnet.conv_ops); each must equal Keras's own convolution."""
    result = _client_json("backend_convs.py", env={"KERAS_BACKEND": backend, "JAX_PLATFORMS": "cpu"})
    assert result["fallbacks"] == []  # our code ran in every case, or the comparison proves nothing
    assert len(result["errors"]) == 8
    for case, error in result["errors"].items():
        assert error <= 1e-5, (case, error)


@pytest.mark.parametrize("formulation", ["keras_conv", "keras_regnet"])
def test_data_parallel_jax_train_step_gathers_no_activations(formulation):
    """Under keras.distribution.DataParallel on 2 devices, XLA gathers the whole batch before
    each of Keras's grouped convs (the anchor: RegNetY004 compiled to 32 all-gathers); ours
    keep the batch sharded: only reductions (gradients, batch statistics) cross devices."""
    result = _client_json("jax_sharded_step.py", formulation, "--shallow")
    assert result["all_reduces"] > 0
    if formulation == "keras_conv":
        assert len(result["all_gathers"]) >= 4  # one per stage's grouped conv at least
    else:
        assert result["all_gathers"] == []


@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_channels_first_predicts_what_channels_last_does(backend):
    """keras.config.image_data_format() = "channels_first" builds the same network in NCHW
    (SE, grouped convs, batch norms on axis 1): with the same weights, the same logits."""
    name = smallest_per_family()[1]  # the Y model: every layer kind
    result = _client_json("channels_first.py", name, env={"KERAS_BACKEND": backend, "JAX_PLATFORMS": "cpu"})
    assert result["scale"] > 0.05  # logits, not near-uniform probabilities
    assert result["max_difference"] <= 1e-5 * max(1.0, result["scale"])
