"""Builds a model channels-last and channels-first with the same weights on the current
backend (KERAS_BACKEND) and prints the largest difference of their predictions, as JSON:
``{"max_difference": d, "scale": s}``.

    KERAS_BACKEND=jax python channels_first.py RegNetY002
"""

import json
import os
import sys
import tempfile

import keras
import numpy as np

import keras_regnet

name = sys.argv[1]
x = np.random.default_rng(0).uniform(0, 255, (2, 64, 64, 3)).astype("float32")
last = getattr(keras_regnet, name)(weights=None, input_shape=(64, 64, 3), classifier_activation=None)
# Batch-norm statistics that are not the identity, so a wrong axis would show.
for layer in last.layers:
    if isinstance(layer, keras.layers.BatchNormalization):
        rng = np.random.default_rng(len(layer.name))
        layer.set_weights([w + rng.uniform(0.1, 0.5, w.shape).astype("float32") for w in layer.get_weights()])
path = os.path.join(tempfile.mkdtemp(), "w.weights.h5")
last.save_weights(path)
keras.config.set_image_data_format("channels_first")
first = getattr(keras_regnet, name)(weights=path, input_shape=(3, 64, 64), classifier_activation=None)
expected = np.asarray(keras.ops.convert_to_numpy(last.predict(x, verbose=0)))
got = np.asarray(keras.ops.convert_to_numpy(first.predict(np.transpose(x, (0, 3, 1, 2)), verbose=0)))
print(json.dumps({"max_difference": float(np.max(np.abs(got - expected))),
                  "scale": float(np.max(np.abs(expected)))}))
