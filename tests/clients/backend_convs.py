"""Checks our convolution layers against Keras's own convolution on the current backend
(set KERAS_BACKEND): outputs and gradients (input and kernel) of GroupedConv2D and
PointwiseConv2D in both data formats. Prints one JSON line: the worst relative difference
per case, and the cases where our code fell back to Keras's, ``{"errors": {...}, "fallbacks": [...]}``.

    KERAS_BACKEND=jax python backend_convs.py
"""

import functools
import json

import keras
import numpy as np

from keras_regnet.layers import GroupedConv2D, PointwiseConv2D, _jax_or_torch_convolution

CASES = [  # (layer class, filters, kernel, strides, padding, groups)
    (GroupedConv2D, 32, 3, 1, "same", 4),
    (GroupedConv2D, 48, 3, 2, "valid", 3),
    (PointwiseConv2D, 24, 1, 1, "valid", 1),
    (PointwiseConv2D, 24, 1, 2, "valid", 1),
]


def value_and_gradients(fn, x, kernel):
    """fn(x, kernel), and the gradients of sum(fn(x, kernel) * weights) for fixed weights."""
    backend = keras.backend.backend()
    y = np.asarray(keras.ops.convert_to_numpy(fn(x, kernel)))
    weights = np.random.default_rng(5).normal(size=y.shape).astype("float32")
    if backend == "jax":
        import jax

        grads = jax.grad(lambda a, b: (fn(a, b) * weights).sum(), argnums=(0, 1))(x, kernel)
        return [y, *(np.asarray(g) for g in grads)]
    if backend == "torch":
        import torch

        a = torch.tensor(x, requires_grad=True)
        b = torch.tensor(kernel, requires_grad=True)
        (fn(a, b) * torch.tensor(weights)).sum().backward()
        return [y, a.grad.numpy(), b.grad.numpy()]
    import tensorflow as tf

    a, b = tf.constant(x), tf.constant(kernel)
    with tf.GradientTape() as tape:
        tape.watch([a, b])
        loss = tf.reduce_sum(fn(a, b) * weights)
    return [y, *(g.numpy() for g in tape.gradient(loss, [a, b]))]


errors, fallbacks = {}, []
rng = np.random.default_rng(0)
for cls, filters, size, strides, padding, groups in CASES:
    for data_format in ("channels_last", "channels_first"):
        channels = 4 * groups if groups > 1 else 12
        shape = (2, 13, 11, channels) if data_format == "channels_last" else (2, channels, 13, 11)
        layer = cls(filters, size, strides=strides, padding=padding, groups=groups,
                    data_format=data_format, use_bias=False)
        layer.build(shape)
        x = rng.normal(size=shape).astype("float32")
        kernel = rng.normal(size=tuple(layer.kernel.shape)).astype("float32")
        ours = value_and_gradients(layer.convolution_op, x, kernel)
        theirs = value_and_gradients(functools.partial(keras.layers.Conv2D.convolution_op, layer), x, kernel)
        case = f"{cls.__name__}-s{strides}-{padding}-g{groups}-{data_format}"
        if _jax_or_torch_convolution(layer, keras.ops.convert_to_tensor(x), kernel) is None:
            fallbacks.append(case)
        errors[case] = max(float(np.max(np.abs(a - b)) / np.max(np.abs(b))) for a, b in zip(ours, theirs))
print(json.dumps({"errors": errors, "fallbacks": fallbacks}))
