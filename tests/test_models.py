"""Keras builders: structure, shapes, serialization and input validation."""

from __future__ import annotations

import warnings

import keras
import numpy as np
import pytest
from keras.ops import convert_to_numpy as numpy

import keras_regnet
from conftest import (
    initial_weights_skipped,
    randomize_batch_norms,
    reference_rows,
    smallest_per_family,
    variant_params,
)
from keras_regnet.variants import VARIANTS

REFERENCE = reference_rows()
SMALL = smallest_per_family()


def trainable_params(model: keras.Model) -> int:
    return sum(int(np.prod(w.shape)) for w in model.trainable_weights)


def images(shape=(2, 64, 64), seed=0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0, 255, (*shape, 3)).astype("float32")


@pytest.mark.parametrize("name", variant_params())
def test_every_variant_builds_with_exact_parameter_count(name, built_model):
    model = built_model(name)
    expected = keras_regnet.complexity(name)["params"]
    assert trainable_params(model) == expected
    paper_row = REFERENCE.get(VARIANTS[name].paper_name)
    if paper_row:  # the TV variants are checked against torchvision in test_design
        assert trainable_params(model) == int(paper_row["params"])
    # Headless, on a non-square input: stride 32 feature map with the last stage's width (shapes
    # only: its kernels need not be drawn).
    with initial_weights_skipped():
        features = getattr(keras_regnet, name)(weights=None, include_top=False, input_shape=(64, 96, 3))
    assert features.output_shape == (None, 2, 3, VARIANTS[name].spec.widths[-1])
    assert features(images((1, 64, 96))).shape == (1, 2, 3, VARIANTS[name].spec.widths[-1])


@pytest.mark.parametrize("name", SMALL)
@pytest.mark.parametrize(
    "kwargs, input_shape, expected",
    [
        (dict(include_top=True), (224, 224, 3), (None, 1000)),
        (dict(include_top=True, classes=10), (160, 224, 3), (None, 10)),
        (dict(include_top=False), (160, 224, 3), (None, 5, 7, "C")),
        (dict(include_top=False, pooling="avg"), (160, 224, 3), (None, "C")),
        (dict(include_top=False, pooling="max"), (None, None, 3), (None, "C")),
        (dict(include_top=False), (None, None, 3), (None, None, None, "C")),
        (dict(include_top=False, include_preprocessing=False), (None, None, 1), (None, None, None, "C")),
    ],
)
def test_output_shapes(name, kwargs, input_shape, expected):
    from keras_regnet import torch_inference

    width = VARIANTS[name].spec.widths[-1]
    model = getattr(keras_regnet, name)(weights=None, input_shape=input_shape, **kwargs)
    assert model.output_shape == tuple(width if e == "C" else e for e in expected)
    # Every head's layers are ones PyTorch's adoption of loaded models knows (a builder that
    # adds a Keras layer must add it to that list, or its loaded models run unfused).
    assert torch_inference.holds_only_builders_layers(model), {type(layer) for layer in model.layers}


@pytest.mark.parametrize("name", SMALL)
def test_any_size_from_32_runs_headless(name):
    model = getattr(keras_regnet, name)(weights=None, include_top=False)
    for h, w in [(32, 32), (33, 47), (100, 64)]:
        out = model(images((1, h, w)))
        assert out.shape[1:3] == ((h - 1) // 32 + 1, (w - 1) // 32 + 1)


@pytest.mark.parametrize("name", SMALL)
def test_softmax_sums_to_one_and_none_gives_logits(name):
    x = images((3, 64, 64))
    probs_model = getattr(keras_regnet, name)(weights=None, input_shape=(64, 64, 3))
    logits_model = getattr(keras_regnet, name)(weights=None, input_shape=(64, 64, 3),
                                               classifier_activation=None)
    logits_model.set_weights(probs_model.get_weights())
    # Make the logits spread out so that softmax is far from the identity.
    for model in (probs_model, logits_model):
        kernel, bias = model.get_layer("predictions").get_weights()
        model.get_layer("predictions").set_weights([kernel * 50, bias])
    probs = numpy(probs_model(x))
    logits = numpy(logits_model(x))
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)
    assert (logits < 0).any() and (np.abs(logits.sum(axis=1) - 1) > 1e-2).all()
    np.testing.assert_allclose(numpy(keras.ops.softmax(logits)), probs, rtol=1e-5, atol=1e-7)


def test_layer_names_are_stable_and_prefix_free():
    a = keras_regnet.RegNetY002(weights=None, name="first")
    b = keras_regnet.RegNetY002(weights=None, name="second")
    names = [layer.name for layer in a.layers]
    assert names == [layer.name for layer in b.layers]
    for expected in ("stem_conv", "stem_bn", "s1_b1_conv1", "s1_b1_conv1_bn", "s1_b1_conv2",
                     "s1_b1_se_reduce", "s1_b1_se_expand", "s1_b1_conv3", "s1_b1_conv3_bn",
                     "s1_b1_shortcut_conv", "s1_b1_shortcut_bn", "head_pool", "predictions"):
        assert expected in names
    assert not any("first" in n for n in names)
    spec = VARIANTS["RegNetY002"].spec
    last = f"s4_b{spec.depths[-1]}_conv3"
    assert last in names and f"s4_b{spec.depths[-1] + 1}_conv3" not in names


def test_symmetric_padding_on_stride_two_convs():
    # A single bright pixel in the top-left corner: with PyTorch's symmetric padding the
    # stem's output at (0, 0) sees it through the kernel tap (1, 1); Keras "same" padding
    # (bottom/right only) would use tap (0, 0) instead.
    model = keras_regnet.RegNetX002(weights=None, include_top=False, include_preprocessing=False,
                                    input_shape=(32, 32, 3))
    stem = keras.Model(model.inputs, model.get_layer("stem_conv").output)
    kernel = np.zeros((3, 3, 3, 32), "float32")
    kernel[1, 1, 0, 0] = 1.0
    model.get_layer("stem_conv").set_weights([kernel])
    x = np.zeros((1, 32, 32, 3), "float32")
    x[0, 0, 0, 0] = 1.0
    assert float(stem(x)[0, 0, 0, 0]) == 1.0


def test_batchnorm_matches_reference_settings():
    model = keras_regnet.RegNetX002(weights=None)
    bns = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    assert bns and all(bn.epsilon == 1e-5 and bn.momentum == 0.9 for bn in bns)


def test_preprocess_input_equals_builtin_preprocessing():
    x = images((2, 64, 64))
    with_pre = keras_regnet.RegNetY002(weights=None, input_shape=(64, 64, 3))
    without = keras_regnet.RegNetY002(weights=None, input_shape=(64, 64, 3),
                                      include_preprocessing=False)
    without.set_weights(with_pre.get_weights())
    np.testing.assert_allclose(numpy(without(keras_regnet.preprocess_input(x))), numpy(with_pre(x)),
                               rtol=1e-5, atol=1e-6)
    mean = np.array([0.485, 0.456, 0.406]) * 255
    np.testing.assert_allclose(numpy(keras_regnet.preprocess_input(np.broadcast_to(mean, (1, 1, 1, 3)))),
                               0.0, atol=1e-5)


def test_decode_predictions_uses_zero_based_imagenet_classes():
    preds = np.zeros((2, 1000), "float32")
    preds[0, 0], preds[1, 999], preds[1, 1] = 0.9, 0.7, 0.2
    decoded = keras_regnet.decode_predictions(preds, top=2)
    assert decoded[0][0][:2] == ("n01440764", "tench")
    assert decoded[1][0][:2] == ("n15075141", "toilet_tissue")
    assert decoded[1][1][:2] == ("n01443537", "goldfish")
    with pytest.raises(ValueError, match="1000-class"):
        keras_regnet.decode_predictions(np.zeros((1, 10)))


@pytest.mark.parametrize("name", SMALL)
def test_config_and_keras_file_round_trips(name, tmp_path):
    model = getattr(keras_regnet, name)(weights=None, input_shape=(64, 64, 3))
    x = images((2, 64, 64))
    expected = numpy(model(x))
    clone = keras.Model.from_config(model.get_config())
    clone.set_weights(model.get_weights())
    np.testing.assert_array_equal(numpy(clone(x)), expected)
    path = tmp_path / "model.keras"
    model.save(path)
    np.testing.assert_array_equal(numpy(keras.saving.load_model(path)(x)), expected)


@pytest.mark.slow  # over ~5 s on 2 cores (the quick pass stays under 3 minutes)
def test_weights_file_round_trip(tmp_path):
    model = keras_regnet.RegNetY002(weights=None, input_shape=(64, 64, 3))
    path = tmp_path / "y002.weights.h5"
    model.save_weights(path)
    loaded = keras_regnet.RegNetY002(weights=path, input_shape=(64, 64, 3))
    x = images((1, 64, 64))
    np.testing.assert_array_equal(numpy(loaded(x)), numpy(model(x)))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(ValueError, match="does not match this architecture"):
            keras_regnet.RegNetX002(weights=path)
    # One clear error instead of a flood of Keras "Skipping nested container" warnings.
    assert not [w for w in caught if "Skipping" in str(w.message)]


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        (dict(weights=None, input_shape=(31, 64, 3), include_top=False), ValueError, "at least 32"),
        (dict(weights=None, input_shape=(64, 64)), ValueError, r"\(height, width, channels\)"),
        (dict(weights=None, include_top=False, pooling="mean"), ValueError, "pooling must be one of"),
        (dict(weights="imagenet", classes=10), ValueError, "classes=10"),
        (dict(weights=None, classes=0), ValueError, "classes must be a positive integer"),
        (dict(weights="model.h5"), ValueError, "a weight tag"),
        (dict(weights="missing.weights.h5"), FileNotFoundError, "does not exist"),
        (dict(weights="swag_lc_in1k"), ValueError, "No weights 'swag_lc_in1k' for RegNetX002"),
    ],
)
def test_bad_arguments_raise_clear_errors(kwargs, error, message):
    with pytest.raises(error, match=message):
        keras_regnet.RegNetX002(**kwargs)


@pytest.mark.parametrize("channels", [1, 4])
def test_any_channel_count_without_weights(channels):
    model = keras_regnet.RegNetX002(weights=None, input_shape=(32, 32, channels), classes=10)
    assert model(np.zeros((1, 32, 32, channels), "float32")).shape == (1, 10)
    mean = model.get_layer("preprocessing").input_mean
    assert np.asarray(mean).size == channels


def test_pretrained_weights_adapt_the_stem_to_one_and_four_channels(tmp_path):
    """A grey image through the 1-channel model (RGB filters summed) gives what its RGB copy
    gives through the RGB model; 4 channels get the RGB filters repeated, scaled by 3/4."""
    from keras_regnet.weights import adapt_stem_kernel

    rgb = keras_regnet.RegNetX002(weights=None, include_preprocessing=False, input_shape=(32, 32, 3))
    randomize_batch_norms(rgb)
    path = str(tmp_path / "rgb.weights.h5")
    rgb.save_weights(path)
    grey = keras_regnet.RegNetX002(weights=path, include_preprocessing=False, input_shape=(32, 32, 1))
    image = np.random.default_rng(0).normal(size=(2, 32, 32, 1)).astype("float32")
    expected = numpy(rgb(np.repeat(image, 3, axis=-1)))
    scale = float(np.max(np.abs(expected)))
    np.testing.assert_allclose(numpy(grey(image)), expected, rtol=1e-5, atol=1e-5 * scale)
    four = keras_regnet.RegNetX002(weights=path, include_top=False, input_shape=(None, None, 4))
    stem = numpy(rgb.get_layer("stem_conv").kernel)
    four_stem = numpy(four.get_layer("stem_conv").kernel)
    np.testing.assert_array_equal(four_stem[:, :, 3], stem[:, :, 0] * 0.75)
    np.testing.assert_array_equal(adapt_stem_kernel(stem, 1)[:, :, 0], stem.sum(axis=2))
    for layer in ("s4_b1_conv2", "s4_b1_conv2_bn"):  # everything else as loaded
        for ours, theirs in zip(four.get_layer(layer).get_weights(), rgb.get_layer(layer).get_weights()):
            np.testing.assert_array_equal(ours, theirs)


def test_generic_builder_takes_specs_and_refuses_imagenet_for_them():
    spec = keras_regnet.RegNetSpec(w0=24, wa=36.44, wm=2.49, depth=13, group_width=8)
    model = keras_regnet.RegNet(spec, input_shape=(64, 64, 3), classes=5)
    assert trainable_params(model) == keras_regnet.complexity(spec, classes=5)["params"]
    with pytest.raises(ValueError, match="needs a named model"):
        keras_regnet.RegNet(spec, weights="imagenet")
    with pytest.raises(TypeError, match="RegNetSpec"):
        keras_regnet.RegNet(42)


def test_input_tensor_is_used_as_model_input():
    inputs = keras.Input((64, 64, 3))
    model = keras_regnet.RegNetX002(weights=None, input_tensor=inputs, include_top=False)
    assert model.inputs[0] is inputs


def test_builders_carry_generated_docstrings():
    for name, variant in VARIANTS.items():
        builder = getattr(keras_regnet, name)
        assert builder.__name__ == name and variant.paper_name in builder.__doc__
    assert set(VARIANTS) <= set(dir(keras_regnet))
