"""Models are backend-agnostic: the same weights give the same outputs on JAX."""

from __future__ import annotations

import os
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
