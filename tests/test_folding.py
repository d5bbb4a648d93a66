"""Batch-norm folding: an inference copy without BN layers that computes the same function."""

from __future__ import annotations

import keras
import numpy as np
import pytest

import keras_regnet
from conftest import randomize_batch_norms, smallest_per_family


@pytest.mark.parametrize("name", smallest_per_family())
def test_folded_model_computes_the_same_logits_without_batch_norms(name):
    model = keras_regnet.RegNet(name, weights=None, classifier_activation=None, input_shape=(None, None, 3))
    randomize_batch_norms(model)
    folded = keras_regnet.fold_batch_norms(model)
    assert not any(isinstance(layer, keras.layers.BatchNormalization) for layer in folded.layers)
    convs = [layer.name for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]
    assert all(folded.get_layer(conv).use_bias for conv in convs)  # every conv took its BN in
    # The input normalisation's division went into the stem (at the borders too: 96x80 below).
    assert not any(isinstance(layer, keras.layers.Normalization) for layer in folded.layers)
    x = np.random.default_rng(1).uniform(0, 255, (2, 96, 80, 3)).astype("float32")
    np.testing.assert_allclose(folded(x), model(x, training=False), rtol=0, atol=1e-4)


def test_folding_refuses_a_layer_called_twice():
    conv = keras.layers.Conv2D(4, 3, padding="same")
    inputs = keras.Input((8, 8, 4))
    model = keras.Model(inputs, conv(conv(inputs)))
    with pytest.raises(ValueError, match="called 2 times"):
        keras_regnet.fold_batch_norms(model)


def test_folding_names_what_it_needs_when_given_a_model_name():
    with pytest.raises(TypeError, match="takes a Keras model"):
        keras_regnet.fold_batch_norms("RegNetX002")
