"""Compiles a RegNet train step under Keras's ``DataParallel`` on 2 host CPU devices and
reports the collectives in XLA's optimised HLO, as one JSON line:
``{"all_gathers": [shapes...], "all_reduces": N}``.

    python jax_sharded_step.py keras_regnet|keras_conv [--shallow]

``keras_conv`` swaps our convolutions for Keras's own (``feature_group_count``), the anchor:
XLA's SPMD partitioner gathers the batch before each of its grouped convs.
"""

import dataclasses
import json
import os
import re
import sys

os.environ.update(KERAS_BACKEND="jax", JAX_PLATFORMS="cpu",
                  XLA_FLAGS="--xla_force_host_platform_device_count=2")

import jax  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402

import keras_regnet  # noqa: E402
from keras_regnet import layers  # noqa: E402

formulation, shallow = sys.argv[1], "--shallow" in sys.argv
if formulation == "keras_conv":
    layers.GroupedConv2D.convolution_op = keras.layers.Conv2D.convolution_op
    layers.PointwiseConv2D.convolution_op = keras.layers.Conv2D.convolution_op
distribution = keras.distribution.DataParallel(devices=jax.devices())
keras.distribution.set_distribution(distribution)
spec = keras_regnet.get_spec("RegNetY004").to_anynet()
if shallow:  # every stage at depth 1: the same layer kinds, a quarter of the compile time
    spec = dataclasses.replace(spec, depths=(1,) * len(spec.depths))
model = keras_regnet.RegNet(spec, weights=None, input_shape=(32, 32, 3))


def loss(trainable, non_trainable, x, y):
    probabilities, non_trainable = model.stateless_call(trainable, non_trainable, x, training=True)
    return keras.ops.mean(keras.losses.sparse_categorical_crossentropy(y, probabilities)), non_trainable


def sharded(array):
    return jax.device_put(array, distribution.get_data_layout(array.shape).backend_layout)


step = jax.jit(jax.value_and_grad(loss, has_aux=True))
x, y = sharded(np.zeros((8, 32, 32, 3), "float32")), sharded(np.zeros((8,), "int32"))
hlo = step.lower([v.value for v in model.trainable_variables],
                 [v.value for v in model.non_trainable_variables], x, y).compile().as_text()
print(json.dumps({"all_gathers": re.findall(r"= (\S+) all-gather\(", hlo),
                  "all_reduces": len(re.findall(r"= \S+ all-reduce\(", hlo))}))
