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


def _random_bn(layer: keras.layers.BatchNormalization, rng) -> None:
    layer.set_weights([rng.uniform(0.5, 1.5, w.shape) if "variance" in w.path or "gamma" in w.path
                       else rng.normal(0, 0.3, w.shape) for w in layer.weights])


def _assert_same_function(model, folded, size=(40, 36, 3)):
    x = np.random.default_rng(3).uniform(0, 255, (3, *size)).astype("float32")
    # float32 rounds relatively: outputs near 600 (raw 0-255 pixels through one conv) differ by
    # a few ulps (6e-5 each there) once the BN's scale moves into the kernel.
    np.testing.assert_allclose(folded(x), model(x, training=False), rtol=1e-6, atol=2e-4)


def _bn_names(model):
    return {layer.name for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)}


def test_only_a_bn_that_a_linear_conv_alone_feeds_is_folded():
    rng = np.random.default_rng(0)
    inputs = keras.Input((None, None, 3))
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="relu_conv")(inputs)
    x = keras.layers.BatchNormalization(name="after_relu")(x)  # an activation between: kept
    y = keras.layers.Conv2D(8, 1, name="branching_conv")(x)
    z = keras.layers.BatchNormalization(name="after_branching", epsilon=0.3)(y)
    x = keras.layers.Add()([y, z])  # the conv's output is also read here: kept
    x = keras.layers.Conv2D(6, 3, name="plain_conv")(x)
    x = keras.layers.BatchNormalization(scale=False, name="no_scale", epsilon=0.01)(x)
    x = keras.layers.Conv2D(6, 3, use_bias=False, name="plain_conv2")(x)
    x = keras.layers.BatchNormalization(center=False, name="no_center")(x)
    model = keras.Model(inputs, keras.layers.GlobalAveragePooling2D()(x))
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            _random_bn(layer, rng)
    folded = keras_regnet.fold_batch_norms(model)
    assert _bn_names(folded) == {"after_relu", "after_branching"}
    _assert_same_function(model, folded)


def test_a_shared_layer_stays_shared_and_unfolded(caplog):
    rng = np.random.default_rng(1)
    conv, bn = keras.layers.Conv2D(4, 3, padding="same", name="shared_conv"), \
        keras.layers.BatchNormalization(name="shared_bn")
    inputs = keras.Input((16, 16, 4))
    x = bn(conv(bn(conv(inputs))))
    x = keras.layers.Conv2D(4, 1, name="single_conv")(x)
    x = keras.layers.BatchNormalization(name="single_bn")(x)
    model = keras.Model(inputs, x)
    model(np.zeros((1, 16, 16, 4), "float32"))
    _random_bn(bn, rng)
    _random_bn(model.get_layer("single_bn"), rng)
    with caplog.at_level("WARNING"):
        folded = keras_regnet.fold_batch_norms(model)
    assert "shared_bn (a shared layer" in caplog.text
    assert _bn_names(folded) == {"shared_bn"}
    assert sum(layer.name == "shared_conv" for layer in folded.layers) == 1  # still one layer
    _assert_same_function(model, folded, (16, 16, 4))


def test_a_fine_tuned_classifier_folds_inside_its_backbone():
    backbone = keras_regnet.RegNetY002(weights=None, include_top=False, input_shape=(None, None, 3))
    randomize_batch_norms(backbone)
    inputs = keras.Input((None, None, 3))
    x = backbone(inputs)
    x = keras.layers.Conv2D(16, 1, activation="relu", name="head_conv")(x)
    x = keras.layers.BatchNormalization(name="head_bn")(x)
    outputs = keras.layers.Dense(5, name="head")(keras.layers.GlobalAveragePooling2D()(x))
    model = keras.Model(inputs, outputs)
    _random_bn(model.get_layer("head_bn"), np.random.default_rng(2))
    folded = keras_regnet.fold_batch_norms(model)
    inner = folded.get_layer(backbone.name)
    assert not _bn_names(inner) and _bn_names(folded) == {"head_bn"}
    _assert_same_function(model, folded, (64, 48, 3))


def test_a_sequential_model_folds():
    model = keras.Sequential([keras.Input((12, 12, 3)), keras.layers.Conv2D(4, 3, name="c"),
                              keras.layers.BatchNormalization(name="b"), keras.layers.ReLU()])
    _random_bn(model.get_layer("b"), np.random.default_rng(4))
    folded = keras_regnet.fold_batch_norms(model)
    assert not _bn_names(folded)
    _assert_same_function(model, folded, (12, 12, 3))


def test_a_kerashub_backbone_folds_and_a_subclassed_model_is_refused_in_one_line():
    """KerasHub's RegNetBackbone (a functional subclass whose config holds its spec, not its
    layers) folds like the builders' models; a model with a ``call`` of its own has no graph to
    fold and is named as such."""
    from keras_regnet.hub import RegNetBackbone

    backbone = RegNetBackbone("RegNetY002", image_shape=(None, None, 3))
    randomize_batch_norms(backbone)
    folded = keras_regnet.fold_batch_norms(backbone)
    assert not _bn_names(folded) and _bn_names(backbone)
    _assert_same_function(backbone, folded, (64, 48, 3))

    class Subclassed(keras.Model):
        def __init__(self):
            super().__init__(name="subclassed")
            self.conv, self.bn = keras.layers.Conv2D(4, 3), keras.layers.BatchNormalization()

        def call(self, x):
            return self.bn(self.conv(x))

    model = Subclassed()
    model(np.zeros((1, 8, 8, 3), "float32"))
    with pytest.raises(ValueError, match=r"functional or Sequential model; subclassed \(Subclassed\)"):
        keras_regnet.fold_batch_norms(model)


def test_folding_names_what_it_needs_when_given_a_model_name():
    with pytest.raises(TypeError, match="takes a Keras model"):
        keras_regnet.fold_batch_norms("RegNetX002")
