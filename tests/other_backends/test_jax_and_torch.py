"""What only JAX and PyTorch have to show: our convolutions equal Keras's, channels-first equals
channels-last, every variant's logits equal TensorFlow's, and (JAX) a data-parallel train step
keeps its batch sharded.

Not collected by the TensorFlow run: ``test_backends.py::test_suite_on_jax_and_torch`` runs this
folder, with the model, layer, pyramid and KerasHub tests and Keras's own applications suite,
in one fresh pytest per backend (KERAS_BACKEND=jax / torch). That parent also writes the
TensorFlow logits the variant test compares with (``KERAS_REGNET_TF_LOGITS``).
"""

from __future__ import annotations

import functools
import os
import re

import keras
import numpy as np
import pytest

import keras_regnet
from conftest import (
    CONV_CASES,
    deterministic_variant,
    shallow,
    smallest_per_family,
)
from keras_regnet.deterministic import set_deterministic_weights
from keras_regnet.layers import DenseConv2D, GroupedConv2D, PointwiseConv2D, _jax_or_torch_convolution
from keras_regnet.variants import VARIANTS

BACKEND = keras.backend.backend()
if BACKEND == "tensorflow":  # conftest ignores this folder there; say so if run by hand
    pytest.skip("JAX / PyTorch checks: run through test_backends.py", allow_module_level=True)


def _value_and_gradients(fn, x, kernel):
    """fn(x, kernel), and the gradients of sum(fn(x, kernel) * weights) for fixed weights."""
    y = np.asarray(keras.ops.convert_to_numpy(fn(x, kernel)))
    weights = np.random.default_rng(5).normal(size=y.shape).astype("float32")
    if BACKEND == "jax":
        import jax

        grads = jax.grad(lambda a, b: (fn(a, b) * weights).sum(), argnums=(0, 1))(x, kernel)
        return [y, *(np.asarray(g) for g in grads)]
    import torch

    a, b = torch.tensor(x, requires_grad=True), torch.tensor(kernel, requires_grad=True)
    (fn(a, b) * torch.tensor(weights)).sum().backward()
    return [y, a.grad.numpy(), b.grad.numpy()]


@pytest.mark.parametrize("data_format", ["channels_last", "channels_first"])
@pytest.mark.parametrize("cls, filters, size, strides, padding, groups", CONV_CASES,
                         ids=[f"{c[0].__name__}-s{c[3]}-{c[4]}-g{c[5]}" for c in CONV_CASES])
def test_our_convolution_equals_keras_in_values_and_gradients(cls, filters, size, strides, padding, groups,
                                                               data_format):
    """JAX runs grouped convs as per-group convs, 1x1 convs as matmuls and the stem's as a
    matmul over patches, PyTorch all of them without Keras's layout copies
    (keras_regnet.conv_ops): each must equal Keras's own convolution."""
    channels = 4 * groups if groups > 1 else 3 if cls is DenseConv2D else 12
    shape = (2, 13, 11, channels) if data_format == "channels_last" else (2, channels, 13, 11)
    layer = cls(filters, size, strides=strides, padding=padding, groups=groups, data_format=data_format,
                use_bias=False)
    layer.build(shape)
    rng = np.random.default_rng(0)
    x = rng.normal(size=shape).astype("float32")
    kernel = rng.normal(size=tuple(layer.kernel.shape)).astype("float32")
    # Our code must run (no fallback to Keras's conv), or the comparison proves nothing.
    assert _jax_or_torch_convolution(layer, keras.ops.convert_to_tensor(x), kernel) is not None
    ours = _value_and_gradients(layer.convolution_op, x, kernel)
    theirs = _value_and_gradients(functools.partial(keras.layers.Conv2D.convolution_op, layer), x, kernel)
    for a, b in zip(ours, theirs):
        assert float(np.max(np.abs(a - b)) / np.max(np.abs(b))) <= 1e-5


def test_channels_first_predicts_what_channels_last_does(tmp_path):
    """keras.config.image_data_format() = "channels_first" builds the same network in NCHW
    (SE, grouped convs, batch norms on axis 1): with the same weights, the same logits."""
    name = smallest_per_family()[1]  # the Y model: every layer kind
    x = np.random.default_rng(0).uniform(0, 255, (2, 64, 64, 3)).astype("float32")
    last = getattr(keras_regnet, name)(weights=None, input_shape=(64, 64, 3), classifier_activation=None)
    set_deterministic_weights(last)
    path = str(tmp_path / "w.weights.h5")
    last.save_weights(path)
    expected = keras.ops.convert_to_numpy(last.predict(x, verbose=0))
    keras.config.set_image_data_format("channels_first")
    try:
        first = getattr(keras_regnet, name)(weights=path, input_shape=(3, 64, 64), classifier_activation=None)
        got = keras.ops.convert_to_numpy(first.predict(np.transpose(x, (0, 3, 1, 2)), verbose=0))
    finally:
        keras.config.set_image_data_format("channels_last")
    scale = float(np.max(np.abs(expected)))
    assert scale > 0.05  # logits, not near-uniform probabilities
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5 * max(1.0, scale))


@pytest.mark.skipif(BACKEND != "torch", reason="PyTorch's fused batch norm: the PyTorch backend only")
@pytest.mark.parametrize("mode", ["training", "inference", "frozen"])
@pytest.mark.parametrize("axis", [-1, 1], ids=["channels_last", "channels_first"])
def test_torch_fused_batch_norm_equals_keras_composition(axis, mode):
    """FusedBatchNorm on PyTorch runs PyTorch's fused kernels: the same outputs, gradients
    (input; gamma and beta where trainable) and moving averages (in training: updated with the
    unbiased variance; at inference and when frozen, i.e. training a model whose layer is not
    trainable: untouched) as Keras's composition of it."""
    import torch

    from keras_regnet.layers import FusedBatchNorm

    shape = (4, 7, 5, 6) if axis == -1 else (4, 6, 7, 5)
    rng = np.random.default_rng(0)
    x = rng.normal(2, 3, size=shape).astype("float32")
    weights = rng.normal(size=shape).astype("float32")
    statistics = [rng.uniform(0.5, 1.5, 6), rng.normal(0, 0.5, 6), rng.normal(0, 0.3, 6),
                  rng.uniform(0.5, 2, 6)]  # gamma, beta, moving mean and variance
    training = mode != "inference"

    def run(fused: bool) -> list[np.ndarray]:
        bn = FusedBatchNorm(axis=axis, epsilon=1e-5, momentum=0.9)
        bn.build(shape)
        bn.set_weights([s.astype("float32") for s in statistics])
        bn.trainable = mode != "frozen"
        x_tensor = torch.tensor(x, requires_grad=True)
        assert bn._torch_fusable(x_tensor, training, None)  # the fused kernel runs, or this proves nothing
        if not fused:
            bn._torch_fusable = lambda *args: False
        y = bn(x_tensor, training=training)
        (y * torch.tensor(weights)).sum().backward()
        affine = [] if mode == "frozen" else [bn.gamma.value.grad.numpy(), bn.beta.value.grad.numpy()]
        return [y.detach().numpy(), x_tensor.grad.numpy(), *affine,
                *(keras.ops.convert_to_numpy(v) for v in (bn.moving_mean, bn.moving_variance))]

    fused, composed = run(True), run(False)
    for ours, theirs in zip(fused, composed):
        np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-5 * float(np.max(np.abs(theirs))))
    moved = not np.allclose(composed[-2], statistics[2]) and not np.allclose(composed[-1], statistics[3])
    assert moved == (mode == "training")  # the moving averages move in training only


@pytest.mark.skipif(BACKEND != "torch", reason="PyTorch's kernel cache: the PyTorch backend only")
@pytest.mark.parametrize("layer_class", [GroupedConv2D, PointwiseConv2D])
def test_torch_kernel_cache_follows_the_variable(layer_class):
    """Outside autograd the conv keeps its kernel in channels-last OIHW between calls; assigning
    the variable (as set_weights and an optimizer do) is seen at the next call, and in autograd
    the kernel's gradient still flows (no cached copy there)."""
    import torch

    rng = np.random.default_rng(0)
    groups = 4 if layer_class is GroupedConv2D else 1
    layer = layer_class(16, 3 if groups > 1 else 1, groups=groups, padding="same", use_bias=False)
    x = rng.normal(size=(2, 9, 9, 8)).astype("float32")
    layer.build(x.shape)

    def expected() -> np.ndarray:  # Keras's own convolution with the current kernel
        return keras.ops.convert_to_numpy(keras.ops.conv(x, layer.kernel, padding="same"))

    for _ in range(2):  # the second round reads the cache after an assignment
        with torch.no_grad():
            np.testing.assert_allclose(keras.ops.convert_to_numpy(layer(x)), expected(), atol=1e-5)
        cached = layer._torch_kernel_cache["weights"]
        assert cached.is_contiguous(memory_format=torch.channels_last)
        layer.kernel.assign(rng.normal(size=layer.kernel.shape).astype("float32"))
    x_tensor = torch.tensor(x)
    layer(x_tensor).sum().backward()
    assert layer.kernel.value.grad is not None and float(layer.kernel.value.grad.abs().sum()) > 0
    assert layer._torch_kernel_cache["weights"] is cached  # the autograd call left it alone


@pytest.mark.skipif(BACKEND != "torch", reason="PyTorch's kernel cache: the PyTorch backend only")
def test_torch_kernel_cache_never_takes_a_new_tensor_at_the_same_address_for_the_old():
    """A kernel passed per call (a cast under mixed precision) may land where the last one was,
    with the same version counter: two tensors over one NumPy buffer, rewritten in between."""
    import torch

    from keras_regnet.conv_ops import torch_conv

    rng = np.random.default_rng(1)
    x = torch.tensor(rng.normal(size=(1, 6, 6, 8)).astype("float32"))
    buffer = rng.normal(size=(3, 3, 2, 8)).astype("float32")
    cache: dict = {}
    with torch.no_grad():
        first = torch_conv(x, torch.from_numpy(buffer), groups=4, padding="same", kernel_cache=cache)
        buffer[...] = rng.normal(size=buffer.shape)
        second = torch_conv(x, torch.from_numpy(buffer), groups=4, padding="same", kernel_cache=cache)
        expected = torch_conv(x, torch.from_numpy(buffer), groups=4, padding="same")
    assert not torch.allclose(first, expected)
    np.testing.assert_allclose(second.numpy(), expected.numpy(), rtol=0, atol=1e-6)


@pytest.mark.skipif(BACKEND != "torch", reason="PyTorch's fused inference: the PyTorch backend only")
@pytest.mark.parametrize("name", smallest_per_family())
def test_torch_inference_fuses_every_batch_norm_relu_padding_and_add_and_only_where_exact(name, monkeypatch):
    """A built model's predict folds each batch norm into its conv, runs each ReLU after one as
    the conv's post-op, each zero padding inside the conv after it and each residual add with
    its ReLU (each of those layers named once by a fused tensor), with the logits of the
    unfused computation (a call in autograd, where nothing fuses), also as a layer of a model
    built around it; a model built on an inner conv's output gets that conv's raw output; training
    normalises with batch statistics and moves the moving averages (a batch norm handed a
    folded conv output in training raises)."""
    import torch

    from keras_regnet import torch_inference
    from keras_regnet.layers import FusedBatchNorm, FusibleAdd, FusibleReLU, FusibleZeroPadding2D

    fused = []
    mark = torch_inference.mark_fused
    monkeypatch.setattr(torch_inference, "mark_fused", lambda tensor, *layers: (
        fused.extend(layer.name for layer in layers), mark(tensor, *layers)))
    model = getattr(keras_regnet, name)(weights=None, input_shape=(64, 64, 3), classifier_activation=None)
    set_deterministic_weights(model)  # batch-norm statistics that are not the identity
    images = np.random.default_rng(3).uniform(0, 255, (2, 64, 64, 3)).astype("float32")
    got = model.predict_on_batch(images)

    def named(kind):
        return sorted(layer.name for layer in model.layers if isinstance(layer, kind))

    batch_norms, relus, paddings = named(FusedBatchNorm), named(FusibleReLU), named(FusibleZeroPadding2D)
    # every ReLU: after a batch norm (stem, conv1, conv2) or after a block's residual add
    assert len(relus) == 1 + 3 * len(named(FusibleAdd)) and paddings
    assert sorted(fused) == sorted(batch_norms + relus + paddings)
    expected = keras.ops.convert_to_numpy(model(images, training=False))  # autograd on: unfused
    assert len(fused) == len(batch_norms + relus + paddings)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5 * float(np.max(np.abs(expected))))
    # A PyTorch without its fused kernels: the same layers fuse, as plain ops in place.
    from keras_regnet import conv_ops

    monkeypatch.setattr(conv_ops, "torch_has_op", lambda namespace, name: False)
    np.testing.assert_allclose(model.predict_on_batch(images), expected, rtol=0,
                               atol=1e-5 * float(np.max(np.abs(expected))))
    assert len(fused) == 2 * len(batch_norms + relus + paddings)

    # Inside a model built around it (a fine-tuned classifier), the same fusions and logits.
    inputs = keras.Input((64, 64, 3))
    classifier = keras.Model(inputs, keras.layers.Identity()(model(inputs, training=False)))
    np.testing.assert_allclose(classifier.predict_on_batch(images), expected, rtol=0,
                               atol=1e-5 * float(np.max(np.abs(expected))))
    assert len(fused) == 3 * len(batch_norms + relus + paddings)

    conv = model.get_layer(next(n for n in batch_norms if n.endswith("_conv1_bn")).removesuffix("_bn"))
    inner = keras.Model(model.inputs, conv.output)
    with torch.no_grad():
        raw = keras.ops.convert_to_numpy(inner(images, training=False))
    np.testing.assert_allclose(inner.predict_on_batch(images), raw, rtol=1e-6, atol=1e-6)
    assert len(fused) == 3 * len(batch_norms + relus + paddings)  # the inner model fused nothing

    bn = model.get_layer(batch_norms[0])
    before = keras.ops.convert_to_numpy(bn.moving_mean)
    model.compile(optimizer=keras.optimizers.SGD(0.0), loss="mse")
    model.train_on_batch(images, np.zeros_like(got))  # a folded input in training would raise
    assert not np.allclose(keras.ops.convert_to_numpy(bn.moving_mean), before)


@pytest.mark.skipif(BACKEND != "torch", reason="Keras's per-layer call skipped: the PyTorch backend only")
def test_torch_calls_the_layers_directly_only_where_kerass_call_would_do_nothing(monkeypatch):
    """A built model's call (predict, a call with training=False in autograd as a frozen
    backbone is called, a train step) goes through Keras's ``Layer.__call__`` for the model
    alone and calls its layers' ``call`` directly (keras_regnet/torch_graph.py), giving Keras's
    own graph walk's logits, input gradients, loss and updated weights, also as a layer of a
    model built around it, and its feature pyramid's levels; a PyTorch hook on a layer, an
    activity regulariser and mixed precision go through Keras's walk, where what they do
    happens."""
    import torch

    from keras_regnet import torch_graph

    name = smallest_per_family()[1]  # the Y model: every layer kind
    model = getattr(keras_regnet, name)(weights=None, input_shape=(64, 64, 3), classifier_activation=None)
    set_deterministic_weights(model)
    images = np.random.default_rng(4).uniform(0, 255, (2, 64, 64, 3)).astype("float32")
    called = []
    keras_call = keras.layers.Layer.__call__

    def counted_call(self, *args, **kwargs):
        called.append(self.name)
        return keras_call(self, *args, **kwargs)

    monkeypatch.setattr(keras.layers.Layer, "__call__", counted_call)
    inner = {layer.name for layer in model.layers[1:]}

    def through(walk: str, run):
        """run() with the direct walk, or with Keras's (the model's plan set aside); the layers
        it called through ``Layer.__call__``."""
        plan = torch_graph._PLANS.pop(model) if walk == "keras" else None
        called.clear()
        try:
            return run(), set(called) - {model.name}
        finally:
            if plan is not None:
                torch_graph._PLANS[model] = plan

    def input_gradient():
        x = torch.tensor(images, requires_grad=True)
        model(x, training=False).square().sum().backward()
        return x.grad.numpy()

    for run in (lambda: model.predict_on_batch(images), input_gradient):
        (direct, direct_calls), (keras_walk, keras_calls) = through("direct", run), through("keras", run)
        assert direct_calls == set() and keras_calls == inner
        np.testing.assert_allclose(direct, keras_walk, rtol=1e-6, atol=1e-6 * float(np.abs(keras_walk).max()))

    seen = []
    hook = model.get_layer("stem_conv").register_forward_hook(lambda module, args, output: seen.append(1))
    assert through("direct", lambda: model.predict_on_batch(images))[1] == inner and seen == [1]
    hook.remove()
    layer = model.get_layer("head_pool")
    layer.activity_regularizer = keras.regularizers.L2(1.0)
    with torch.no_grad():
        assert through("direct", lambda: model(images, training=False))[1] == inner
    assert layer.losses
    layer.activity_regularizer = None
    assert through("direct", lambda: model.predict_on_batch(images))[1] == set()
    # Training too: from the same weights, Keras's walk's loss and updated weights.
    twin = getattr(keras_regnet, name)(weights=None, input_shape=(64, 64, 3), classifier_activation=None)
    twin.set_weights(model.get_weights())
    torch_graph._PLANS.pop(twin)
    targets = np.random.default_rng(5).normal(size=(2, 1000)).astype("float32")
    for each in (model, twin):
        each.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
        each.train_on_batch(images, targets)  # the first one also builds Keras's metrics symbolically
    loss, calls = through("direct", lambda: model.train_on_batch(images, targets))
    assert calls == set()
    np.testing.assert_allclose(loss, twin.train_on_batch(images, targets), rtol=1e-6)
    for ours, keras_walk in zip(model.get_weights(), twin.get_weights()):
        np.testing.assert_allclose(ours, keras_walk, rtol=1e-6, atol=1e-7)
    # Inside a model built around it (a fine-tuned classifier), ours still walks its own layers.
    inputs = keras.Input((64, 64, 3))
    classifier = keras.Model(inputs, keras.layers.Dense(3, name="head")(model(inputs, training=False)))
    assert through("direct", lambda: classifier.predict_on_batch(images))[1] == {classifier.name, "head"}
    # The feature pyramid (a dict of outputs) walks directly too, with Keras's walk's levels.
    pyramid = keras_regnet.feature_pyramid(model)
    called.clear()
    levels = pyramid.predict_on_batch(images)
    assert set(called) == {pyramid.name}
    with torch.no_grad():
        keras_levels = type(pyramid).call(pyramid, torch.as_tensor(images))
    assert sorted(levels) == sorted(keras_levels) == [f"P{i}" for i in range(1, 6)]
    for level, value in levels.items():
        np.testing.assert_array_equal(value, keras_levels[level].numpy())
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        mixed = getattr(keras_regnet, name)(weights=None, input_shape=(64, 64, 3))
    finally:
        keras.mixed_precision.set_global_policy("float32")
    called.clear()
    mixed.predict_on_batch(images)
    assert set(called) - {mixed.name} == {layer.name for layer in mixed.layers[1:]}


@pytest.mark.skipif(BACKEND != "torch", reason="PyTorch's fusions and direct walk: the PyTorch backend only")
def test_torch_speeds_up_loaded_and_kerashub_models_as_it_does_built_ones(tmp_path, monkeypatch):
    """What no builder of ours returned: a model loaded from a .keras file, KerasHub's backbone
    (built by its own class) and ours inside a loaded fine-tuned classifier fold every batch
    norm, ReLU, padding and add, and call their layers directly, from the call after their
    first (which marks them), with the logits of the unfused computation; a loaded model holding
    a layer our builders never use, and a subclassed model of our layers, go through Keras's
    walk and fuse nothing."""
    import torch

    from keras_regnet import torch_inference
    from keras_regnet.hub import RegNetBackbone
    from keras_regnet.layers import FusedBatchNorm, FusibleReLU, FusibleZeroPadding2D

    name = smallest_per_family()[1]  # the Y model: every layer kind
    images = np.random.default_rng(6).uniform(0, 255, (2, 64, 64, 3)).astype("float32")
    fused, called = [], []
    mark, keras_call = torch_inference.mark_fused, keras.layers.Layer.__call__
    monkeypatch.setattr(torch_inference, "mark_fused", lambda tensor, *layers: (
        fused.extend(layer.name for layer in layers), mark(tensor, *layers)))
    monkeypatch.setattr(keras.layers.Layer, "__call__", lambda self, *args, **kwargs: (
        called.append(self.name), keras_call(self, *args, **kwargs))[1])

    def fusible(model):
        return sorted(layer.name for layer in model.layers
                      if isinstance(layer, (FusedBatchNorm, FusibleReLU, FusibleZeroPadding2D)))

    def second_predict(model, expected):
        """The second predict's outputs against ``expected``; (fused layers, layers called
        through Keras's ``Layer.__call__``)."""
        model.predict_on_batch(images)  # the first: marks the model
        fused.clear(), called.clear()
        got = model.predict_on_batch(images)
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5 * float(np.abs(expected).max()))
        return sorted(fused), set(called) - {model.name}

    def unfused(model):
        return keras.ops.convert_to_numpy(model(images, training=False))  # autograd on: nothing fuses

    built = getattr(keras_regnet, name)(weights=None, input_shape=(64, 64, 3), classifier_activation=None)
    set_deterministic_weights(built)
    built.save(tmp_path / "model.keras")
    loaded = keras.saving.load_model(tmp_path / "model.keras")
    assert second_predict(loaded, unfused(built)) == (fusible(loaded), set())
    # A loaded model's feature pyramid walks directly (it was built so) but does not fold (it reads
    # inner outputs); the model itself, called after it, still folds.
    loaded = keras.saving.load_model(tmp_path / "model.keras")
    pyramid = keras_regnet.feature_pyramid(loaded)
    pyramid.predict_on_batch(images)
    fused.clear()
    levels = pyramid.predict_on_batch(images)
    with torch.no_grad():
        keras_levels = type(pyramid).call(pyramid, torch.as_tensor(images))
    assert fused == [] and sorted(levels) == sorted(keras_levels)
    for level, value in levels.items():
        np.testing.assert_array_equal(value, keras_levels[level].numpy())
    assert second_predict(loaded, unfused(built)) == (fusible(loaded), set())
    # A model a user built on a loaded model's inner output (here: its last block's, every conv)
    # and called first folds its part; the loaded model, called after it, takes its layers over
    # and folds whole; the first model still computes its features.
    loaded = keras.saving.load_model(tmp_path / "model.keras")
    features = keras.Model(loaded.inputs, loaded.layers[-3].output, name="user_features")
    expected_features = unfused(features)
    assert second_predict(features, expected_features) == (fusible(features), set())
    assert second_predict(loaded, unfused(built)) == (fusible(loaded), set())
    np.testing.assert_allclose(features.predict_on_batch(images), expected_features, rtol=0,
                               atol=1e-5 * float(np.abs(expected_features).max()))

    backbone = RegNetBackbone(name, image_shape=(64, 64, 3))
    set_deterministic_weights(backbone)
    assert second_predict(backbone, unfused(backbone)) == (fusible(backbone), set())

    inputs = keras.Input((64, 64, 3))
    features = built(inputs, training=False)
    head = keras.layers.Dense(3, name="head")(keras.layers.Dropout(0.5, name="dropout")(features))
    keras.Model(inputs, head, name="fine_tuned").save(tmp_path / "fine_tuned.keras")
    fine_tuned = keras.saving.load_model(tmp_path / "fine_tuned.keras")
    nested = fine_tuned.get_layer(built.name)
    assert second_predict(fine_tuned, unfused(fine_tuned)) == (
        fusible(nested), {nested.name, "dropout", "head"})

    scaled = keras.layers.Rescaling(1.0, name="user_scaling")(inputs)  # not a layer our builders use
    getattr(keras_regnet, name)(weights=None, input_tensor=scaled, classifier_activation=None).save(
        tmp_path / "user_layer.keras")
    with_user_layer = keras.saving.load_model(tmp_path / "user_layer.keras")
    assert second_predict(with_user_layer, unfused(with_user_layer)) == (
        [], {layer.name for layer in with_user_layer.layers[1:]})

    class Subclassed(keras.Model):  # our layers, but a call of its own: no graph to mark
        def __init__(self):
            super().__init__(name="subclassed")
            self.conv = PointwiseConv2D(8, 1, use_bias=False, name="conv")
            self.bn = FusedBatchNorm(name="conv_bn")

        def call(self, x):
            return self.bn(self.conv(x))

    subclassed = Subclassed()
    assert second_predict(subclassed, unfused(subclassed)) == ([], {"conv", "conv_bn"})


@pytest.fixture(scope="module")
def tensorflow_logits():
    """The parent's TensorFlow logits (test_backends.py writes them before this run starts)."""
    path = os.environ.get("KERAS_REGNET_TF_LOGITS")
    assert path, "KERAS_REGNET_TF_LOGITS is unset: run this folder through test_backends.py"
    return np.load(path)


@pytest.mark.parametrize("name", VARIANTS)
def test_logits_equal_tensorflows(name, tensorflow_logits):
    """The same weights (set_deterministic_weights) give TensorFlow's logits within 1e-4 of their
    scale, for every builder of the variants table, on a small input."""
    model = deterministic_variant(name)
    images = tensorflow_logits["images"]
    # JAX: the jitted predict (its eager calls compile op by op, slower); PyTorch: predict, where
    # the batch norms fold into their convolutions (keras_regnet/torch_inference.py).
    got = keras.ops.convert_to_numpy(model.predict(images, verbose=0))
    expected = tensorflow_logits[name]
    scale = float(np.max(np.abs(expected)))
    assert scale > 0.05
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-4 * max(1.0, scale))


@pytest.mark.skipif(BACKEND != "jax", reason="Keras's kernels drawn on the host: the JAX backend only")
def test_jax_conv_kernels_are_reproducible_and_he_scaled():
    """ConvInitializer draws JAX kernels with NumPy (no compile per kernel shape): N(0, 2 /
    fan_out) as the reference, the same after keras.utils.set_random_seed, distinct per layer."""
    def kernels():
        keras.utils.set_random_seed(7)
        model = keras_regnet.RegNetX002(weights=None, input_shape=(32, 32, 3))
        return {v.path: keras.ops.convert_to_numpy(v) for v in model.weights
                if v.path.endswith("conv2/kernel")}

    first, second = kernels(), kernels()
    assert first.keys() == second.keys() and len(first) > 4
    for path, kernel in first.items():
        np.testing.assert_array_equal(kernel, second[path])
        fan_out = kernel.shape[-1] * kernel.shape[0] * kernel.shape[1]
        assert abs(float(np.std(kernel)) / np.sqrt(2 / fan_out) - 1) < 0.1, path
    a, b = list(first.values())[:2]
    assert not np.array_equal(a.ravel()[:100], b.ravel()[:100])


@pytest.mark.skipif(BACKEND != "jax", reason="XLA's convolutions off the CPU: the JAX backend only")
def test_jax_off_the_cpu_runs_xlas_own_convolutions_but_grouped_ones_across_devices(monkeypatch):
    """The matmul and per-group forms are for XLA's CPU backend: on an H200, XLA's GPU compiler
    aborted the process on a strided 1x1 conv's matmul form (jaxlib 0.11.2). On a GPU every layer
    gets Keras's own convolution, a grouped one too; under DataParallel over 2 devices grouped
    convs stay per group (Keras's would gather the batch; test below), the others XLA's."""
    import jax

    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")

    def ours(cls, filters, size, strides, padding, groups):
        channels = 4 * groups if groups > 1 else 3 if cls is DenseConv2D else 12
        layer = cls(filters, size, strides=strides, padding=padding, groups=groups, use_bias=False)
        layer.build((2, 13, 11, channels))
        return _jax_or_torch_convolution(layer, keras.ops.ones((2, 13, 11, channels)), layer.kernel)

    assert [ours(*case) for case in CONV_CASES] == [None] * len(CONV_CASES)
    assert len(jax.devices()) == 2, "XLA_FLAGS=--xla_force_host_platform_device_count=2 is unset"
    keras.distribution.set_distribution(keras.distribution.DataParallel(devices=jax.devices()))
    try:
        across_devices = [ours(*case) is not None for case in CONV_CASES]
    finally:
        keras.distribution.set_distribution(None)
    assert across_devices == [case[-1] > 1 for case in CONV_CASES]
    assert any(across_devices) and not all(across_devices)


@pytest.mark.skipif(BACKEND != "jax", reason="XLA's SPMD partitioning: the JAX backend only")
@pytest.mark.parametrize("formulation", ["keras_conv", "keras_regnet"])
def test_data_parallel_train_step_gathers_no_activations(formulation, monkeypatch):
    """Under keras.distribution.DataParallel on 2 host devices (the parent sets XLA_FLAGS), XLA
    gathers the whole batch before each of Keras's grouped convs (the anchor: RegNetY004 compiled
    to 32 all-gathers); ours keep the batch sharded: only reductions cross devices."""
    import jax

    from keras_regnet import layers

    assert len(jax.devices()) == 2, "XLA_FLAGS=--xla_force_host_platform_device_count=2 is unset"
    if formulation == "keras_conv":
        for cls in (layers.GroupedConv2D, layers.PointwiseConv2D, layers.DenseConv2D):
            monkeypatch.setattr(cls, "convolution_op", keras.layers.Conv2D.convolution_op)
    distribution = keras.distribution.DataParallel(devices=jax.devices())
    keras.distribution.set_distribution(distribution)
    try:
        # Every stage at depth 1: the same layer kinds as RegNetY004, a quarter of the compile.
        model = keras_regnet.RegNet(shallow("RegNetY004"), weights=None, input_shape=(32, 32, 3))

        def loss(trainable, non_trainable, x, y):
            probabilities, non_trainable = model.stateless_call(trainable, non_trainable, x, training=True)
            loss = keras.ops.mean(keras.losses.sparse_categorical_crossentropy(y, probabilities))
            return loss, non_trainable

        def sharded(array):
            return jax.device_put(array, distribution.get_data_layout(array.shape).backend_layout)

        step = jax.jit(jax.value_and_grad(loss, has_aux=True))
        x, y = sharded(np.zeros((8, 32, 32, 3), "float32")), sharded(np.zeros((8,), "int32"))
        hlo = step.lower([v.value for v in model.trainable_variables],
                         [v.value for v in model.non_trainable_variables], x, y).compile().as_text()
    finally:
        keras.distribution.set_distribution(None)
    all_gathers = re.findall(r"= (\S+) all-gather\(", hlo)
    assert re.search(r"= \S+ all-reduce\(", hlo)  # the gradients and batch statistics
    if formulation == "keras_conv":
        assert len(all_gathers) >= 4  # one per stage's grouped conv at least
    else:
        assert all_gathers == []


def test_a_saved_logits_model_loads_for_serving_with_a_softmax(tmp_path):
    """load_deployable (what `keras-regnet export` and presets start from) probes the model on
    the backend: a logits model gets a softmax (it read outputs with NumPy and failed on
    PyTorch's tensors that require grad)."""
    from keras_regnet.deployable import load_deployable

    model = keras_regnet.RegNetX002(weights=None, input_shape=(64, 64, 3), classifier_activation=None)
    set_deterministic_weights(model)
    model.save(tmp_path / "logits.keras")
    served = load_deployable(str(tmp_path / "logits.keras")).model
    x = np.random.default_rng(1).uniform(0, 255, (2, 64, 64, 3)).astype("float32")
    logits = keras.ops.convert_to_numpy(model(x))
    expected = np.exp(logits - logits.max(-1, keepdims=True))
    expected /= expected.sum(-1, keepdims=True)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(served(x)), expected, rtol=1e-5, atol=1e-6)
