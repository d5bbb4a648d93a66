"""The package's convolutions: the grouped one exact, differentiable and free of XLA on TensorFlow;
the 1x1 one training with matmul gradients that equal the convolution's."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
from keras.ops import convert_to_numpy as numpy

import keras_regnet
from keras_regnet.layers import GroupedConv2D

XLA_MARKERS = (b"XlaCallModule", b"_XlaMustCompile")
# Skip reasons on JAX and PyTorch (test_backends.py), where other_backends/ checks our
# convolutions against Keras's in values and gradients instead.
TF_GRADIENTS = "TensorFlow's kernels and tf.GradientTape (other_backends/ checks JAX's and PyTorch's)"
TF_GRAPH = "what TensorFlow's graphs and SavedModels hold"
ONEDNN = "TensorFlow's oneDNN kernels"


def split_concat_reference(x, kernel, groups, strides, padding):
    """Grouped conv as the definition: one ordinary conv per channel group, concatenated."""
    xs = keras.ops.split(x, groups, axis=-1)
    ks = keras.ops.split(kernel, groups, axis=-1)
    return keras.ops.concatenate(
        [keras.ops.conv(a, k, strides=strides, padding=padding) for a, k in zip(xs, ks)], axis=-1)


@pytest.mark.tensorflow_only(TF_GRADIENTS)
@pytest.mark.parametrize("groups", [2, 8])
@pytest.mark.parametrize("strides, padding", [(1, "same"), (2, "valid")])
def test_outputs_and_gradients_equal_split_concat(groups, strides, padding):
    import tensorflow as tf

    rng = np.random.default_rng(groups + strides)
    channels = 8 * groups
    layer = GroupedConv2D(channels, 3, strides=strides, padding=padding, groups=groups,
                          use_bias=False)
    x = tf.constant(rng.normal(size=(2, 13, 11, channels)).astype("float32"))
    layer.build(x.shape)
    kernel = layer.kernel
    target = tf.constant(rng.normal(size=layer.compute_output_shape(x.shape)).astype("float32"))

    def loss_and_grads(fn):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = fn()
            loss = tf.reduce_sum((y - target) ** 2)
        return (y, *tape.gradient(loss, [x, kernel.value]))

    ours = loss_and_grads(lambda: layer(x))
    ref = loss_and_grads(lambda: split_concat_reference(x, kernel.value, groups, strides, padding))
    for a, b in zip(ours, ref):
        # rtol 1e-5 relative to the tensor's scale: gradients are sums of thousands of float32
        # products, so single near-zero entries differ by summation order alone.
        scale = float(np.max(np.abs(b)))
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5 * scale)


@pytest.mark.tensorflow_only(TF_GRADIENTS)
@pytest.mark.parametrize("dtype", ["mixed_float16", "mixed_bfloat16"])
def test_mixed_precision_grouped_conv_trains(dtype):
    """Half-precision policies: output dtype kept, gradients close to float32's (TF's CPU
    float16 filter gradient ignores groups, so the layer must work around it)."""
    import tensorflow as tf

    rng = np.random.default_rng(0)
    x = tf.constant(rng.normal(size=(2, 9, 9, 32)).astype("float32"))
    full = GroupedConv2D(32, 3, padding="same", groups=4, use_bias=False)
    half = GroupedConv2D(32, 3, padding="same", groups=4, use_bias=False, dtype=dtype)
    full.build(x.shape)
    half.build(x.shape)
    half.kernel.assign(full.kernel)
    grads = []
    for layer in (full, half):
        with tf.GradientTape() as tape:
            y = layer(x)
            loss = tf.reduce_sum(tf.cast(y, "float32") ** 2)
        grads.append(tape.gradient(loss, layer.kernel.value).numpy())
    assert y.dtype == dtype.split("_")[1]
    scale = float(np.max(np.abs(grads[0])))
    np.testing.assert_allclose(grads[1], grads[0], atol=0.05 * scale)


@pytest.mark.tensorflow_only(TF_GRADIENTS)
@pytest.mark.parametrize("policy", ["float32", "mixed_bfloat16"])
@pytest.mark.parametrize("use_bias, activation", [(False, None), (True, "relu")])
def test_pointwise_conv_trains_like_keras_conv2d(policy, use_bias, activation):
    """The matmul gradients equal TensorFlow's convolution gradients (x, kernel, bias)."""
    import tensorflow as tf

    from keras_regnet.layers import PointwiseConv2D

    rng = np.random.default_rng(7)
    x = tf.constant(rng.normal(size=(3, 5, 7, 12)).astype("float32"))
    ours = PointwiseConv2D(10, 1, use_bias=use_bias, activation=activation, dtype=policy)
    stock = keras.layers.Conv2D(10, 1, use_bias=use_bias, activation=activation, dtype=policy)
    for layer in (ours, stock):
        layer.build(x.shape)
    stock.set_weights([rng.normal(size=w.shape).astype("float32") for w in stock.get_weights()])
    ours.set_weights(stock.get_weights())
    results = []
    for layer in (ours, stock):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = layer(x, training=True)
            loss = tf.reduce_sum(tf.cast(y, "float32") ** 2)
        results.append([y, *tape.gradient(loss, [x, *(w.value for w in layer.trainable_weights)])])
    assert results[0][0].dtype == results[1][0].dtype
    rtol = 1e-5 if policy == "float32" else 2e-2  # bfloat16 keeps 8 significant bits
    for a, b in zip(*results):
        a, b = np.asarray(a, "float32"), np.asarray(b, "float32")
        np.testing.assert_allclose(a, b, rtol=rtol, atol=rtol * float(np.max(np.abs(b))))


@pytest.mark.tensorflow_only(TF_GRAPH)
def test_pointwise_conv_custom_gradient_only_in_training():
    """Inference keeps the plain conv, which TensorFlow fuses with what follows; the custom
    gradient (an IdentityN in the graph) appears in training only, proving the check can fail."""
    import tensorflow as tf

    from keras_regnet.layers import PointwiseConv2D

    layer = PointwiseConv2D(4, 1)
    x = tf.ones((1, 3, 3, 2))
    layer.build(x.shape)

    def op_types(training: bool) -> set:
        graph = tf.function(lambda t: layer(t, training=training)).get_concrete_function(x).graph
        return {op.type for op in graph.get_operations()}

    assert "Conv2D" in op_types(False) and "IdentityN" not in op_types(False)
    assert "IdentityN" in op_types(True)


def _saved_model_bytes(model: keras.Model, path: pathlib.Path) -> bytes:
    model.export(str(path), format="tf_saved_model", verbose=False)
    return b"".join(p.read_bytes() for p in path.rglob("*.pb"))


@pytest.mark.tensorflow_only(TF_GRAPH)
@pytest.mark.slow
def test_exported_regnet_graph_has_no_xla(tmp_path):
    model = keras_regnet.RegNetY002(weights=None, input_shape=(64, 64, 3))
    graph = _saved_model_bytes(model, tmp_path / "ours")
    assert b"Conv2D" in graph
    assert not any(marker in graph for marker in XLA_MARKERS)


@pytest.mark.slow  # two SavedModels written: 12-19 s
@pytest.mark.tensorflow_only(TF_GRAPH)
def test_grouped_conv_fuses_with_its_batch_norm_only_in_keras_step_functions(tmp_path):
    """Keras's predict graph (never saved) lets grappler fuse each grouped conv with its batch
    norm and ReLU (no EnsureShape between them); Keras's export, a plain ``tf.function`` and
    ``tf.saved_model.save`` keep the EnsureShape that stops the fusion TF Serving without
    oneDNN cannot run."""
    import tensorflow as tf

    from keras_regnet.layers import _onednn_on

    assert _onednn_on()  # import keras_regnet turned the kernels on (conftest imports it first)
    model = keras_regnet.RegNetY002(weights=None, input_shape=(32, 32, 3))
    x = np.zeros((2, 32, 32, 3), "float32")
    grouped = sum(getattr(layer, "groups", 1) > 1 for layer in model.layers)

    def ensure_shapes(functions) -> int:
        return sum(op.type == "EnsureShape" for f in functions for op in f.graph.get_operations())

    model.predict_on_batch(x)
    assert ensure_shapes(model.predict_function._list_all_concrete_functions()) == 0
    user_function = tf.function(model)
    assert ensure_shapes([user_function.get_concrete_function(x)]) == grouped > 0
    model.export(str(tmp_path / "keras_export"), verbose=False)
    tf.saved_model.save(model, str(tmp_path / "tf_save"))
    for folder in ("keras_export", "tf_save"):  # each function of the file holds them all
        saved = (tmp_path / folder / "saved_model.pb").read_bytes()
        assert saved.count(b"EnsureShape") >= grouped, folder


@pytest.mark.parametrize("channels", [1, 3, 4])
def test_image_normalization_equals_keras_normalization(channels):
    """Our fixed-statistics layer (a 1x1 conv on TensorFlow) gives what Keras's own
    Normalization gives, eagerly and in a graph, for 1, 3 and 4 channels."""
    from keras_regnet.layers import ImageNormalization

    rng = np.random.default_rng(channels)
    mean, variance = rng.uniform(50, 200, channels), rng.uniform(30, 80, channels) ** 2
    x = rng.uniform(0, 255, (2, 9, 7, channels)).astype("float32")
    ours = ImageNormalization(mean=mean, variance=variance)
    theirs = keras.layers.Normalization(mean=mean, variance=variance)
    expected = numpy(theirs(x))
    np.testing.assert_allclose(numpy(ours(x)), expected, rtol=0, atol=1e-5)
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        graph = tf.function(ours).get_concrete_function(tf.TensorSpec((None, None, None, channels))).graph
        assert "Conv2D" in {op.type for op in graph.get_operations()}
        np.testing.assert_allclose(tf.function(ours)(x).numpy(), expected, rtol=0, atol=1e-5)


@pytest.mark.tensorflow_only(TF_GRAPH)
def test_stock_keras_grouped_conv_does_leave_xla(tmp_path):
    # Control for the test above: it can fail. Keras's own grouped Conv2D is jit-compiled.
    model = keras.Sequential([keras.Input((16, 16, 8)), keras.layers.Conv2D(8, 3, groups=4)])
    graph = _saved_model_bytes(model, tmp_path / "stock")
    assert any(marker in graph for marker in XLA_MARKERS)


@pytest.mark.parametrize("training", [False, True])
def test_fused_batchnorm_matches_reference_formula(training):
    from keras_regnet.layers import FusedBatchNorm

    rng = np.random.default_rng(3)
    x = rng.normal(2.0, 3.0, size=(4, 5, 6, 8)).astype("float32")
    bn = FusedBatchNorm(epsilon=1e-5, momentum=0.9)
    bn.build(x.shape)
    gamma, beta = rng.uniform(0.5, 1.5, 8), rng.normal(size=8)
    mean0, var0 = rng.normal(size=8), rng.uniform(0.5, 2.0, 8)
    bn.set_weights([w.astype("float32") for w in (gamma, beta, mean0, var0)])
    y = numpy(bn(x, training=training))

    flat = x.reshape(-1, 8).astype("float64")
    mean, var = (flat.mean(0), flat.var(0)) if training else (mean0, var0)
    np.testing.assert_allclose(y, (x - mean) / np.sqrt(var + 1e-5) * gamma + beta, rtol=1e-4, atol=1e-4)
    moving_mean, moving_var = (numpy(v) for v in bn.non_trainable_weights)
    if training:  # PyTorch's update: unbiased batch variance, momentum 0.1
        n = flat.shape[0]
        np.testing.assert_allclose(moving_mean, 0.9 * mean0 + 0.1 * mean, rtol=1e-5)
        np.testing.assert_allclose(moving_var, 0.9 * var0 + 0.1 * var * n / (n - 1), rtol=1e-5)
    else:
        np.testing.assert_allclose(moving_mean, mean0, rtol=1e-6)
        np.testing.assert_allclose(moving_var, var0, rtol=1e-6)


def _grouped_gradient_in_fresh_process(env: dict) -> subprocess.CompletedProcess:
    code = textwrap.dedent("""
        import warnings
        warnings.simplefilter("always")
        import keras_regnet, tensorflow as tf
        from tensorflow.python.util import _pywrap_util_port
        layer = keras_regnet.GroupedConv2D(16, 3, groups=4, padding="same")
        x = tf.random.normal([2, 8, 8, 16])
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = tf.reduce_sum(layer(x) ** 2)
        grads = tape.gradient(y, [x, layer.kernel])
        print("onednn", _pywrap_util_port.IsMklEnabled(), "grads", [tuple(g.shape) for g in grads])
        stock = keras_regnet.layers.keras.layers.Conv2D.convolution_op(layer, x, layer.kernel)
        difference = float(tf.reduce_max(tf.abs(layer(x) - layer.bias - stock)))
        print("difference from Keras's grouped conv", difference)
        """)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          env={k: v for k, v in os.environ.items() if k != "TF_ENABLE_ONEDNN_OPTS"} | env)


@pytest.mark.tensorflow_only(ONEDNN)
@pytest.mark.slow
def test_import_turns_on_the_kernels_grouped_gradients_need():
    # TensorFlow differentiates a grouped conv on a CPU only with oneDNN, which it enables by
    # default on some CPUs only: `import keras_regnet` enables it.
    out = _grouped_gradient_in_fresh_process({})
    assert out.returncode == 0, out.stderr[-2000:]
    assert "onednn True grads [(2, 8, 8, 16), (3, 3, 4, 16)]" in out.stdout


@pytest.mark.tensorflow_only(ONEDNN)
@pytest.mark.slow
def test_grouped_gradients_still_work_with_onednn_off():
    out = _grouped_gradient_in_fresh_process({"TF_ENABLE_ONEDNN_OPTS": "0"})
    assert out.returncode == 0, out.stderr[-2000:]
    assert "onednn False grads [(2, 8, 8, 16), (3, 3, 4, 16)]" in out.stdout
    assert "one group at a time" in out.stderr and "TF_ENABLE_ONEDNN_OPTS=1" in out.stderr
    difference = float(out.stdout.split("difference from Keras's grouped conv")[1])
    assert difference < 1e-5
