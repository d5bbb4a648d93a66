"""Weights from fixed NumPy draws: the same network on every backend and device.

A model's own initialisers draw differently on TensorFlow, JAX and PyTorch, and leave batch
norms at the identity (statistics 0 / 1) and residual branches near zero, which would hide a
wrong kernel. The tests' cross-backend logits comparison and ``benchmarks/gpu.py``'s GPU-against-CPU
check set every weight with :func:`set_deterministic_weights` instead.
"""

from __future__ import annotations

import functools

import numpy as np

# set_deterministic_weights' values: windows into two fixed draws of a prime length (no weight's
# rows repeat in step with its columns), instead of a fresh draw per weight (RegNetY320's 145M
# weights took 3-4 s on every backend, for each logits comparison).
_DETERMINISTIC_POOL_SIZE = 1_048_573


@functools.cache
def _deterministic_pools(seed: int) -> dict:
    rng = np.random.default_rng(seed)
    return {"normal": rng.standard_normal(_DETERMINISTIC_POOL_SIZE, dtype=np.float32),
            "uniform": rng.random(_DETERMINISTIC_POOL_SIZE, dtype=np.float32)}


def set_deterministic_weights(model, seed: int = 0) -> None:
    """Sets every weight from fixed NumPy draws, in the model's weight order, so that processes
    on different backends hold the same network. Kernels are scaled by 1/sqrt(fan-in) (outputs
    stay finite through any depth); batch norms get statistics that are not the identity.

    Example:
        >>> import keras_regnet
        >>> model = keras_regnet.RegNetX002(weights=None, input_shape=(32, 32, 3), classes=10)
        >>> set_deterministic_weights(model)
        >>> float(model.weights[0].numpy().std()) > 0.01
        True
    """
    pools, size = _deterministic_pools(seed), _DETERMINISTIC_POOL_SIZE
    values = []
    for index, weight in enumerate(model.weights):
        shape, kind = tuple(weight.shape), weight.path.rsplit("/", 1)[-1]
        pool = pools["uniform" if kind in ("gamma", "moving_variance") else "normal"]
        start, n = (index * 7919) % size, int(np.prod(shape))
        window = pool[start:start + n] if start + n <= size else np.concatenate((pool[start:], pool[:start]))
        value = np.resize(window, shape)
        if kind == "kernel":
            value = value / np.float32(np.sqrt(np.prod(shape[:-1])))
        elif kind in ("gamma", "moving_variance"):
            value = value + np.float32(0.5)
        else:  # beta, moving_mean, bias
            value = value * np.float32(0.1)
        values.append(value)
    model.set_weights(values)
