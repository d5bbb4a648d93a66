"""Keras building blocks of RegNet: the grouped conv, stem, SE and bottleneck blocks.

Backend-agnostic (``keras.layers`` / ``keras.ops``), except the TensorFlow fast path of
:class:`GroupedConv2D`. Layer names are stable: they derive from the block's position only.
"""

from __future__ import annotations

import functools
import warnings

import keras
import numpy as np

from keras_regnet import conv_ops, torch_inference
from keras_regnet.design.spec import Block

BN_EPSILON = 1e-5  # PyTorch's default, which the reference weights were trained with.
BN_MOMENTUM = 0.9  # = PyTorch momentum 0.1.


@keras.saving.register_keras_serializable(package="keras_regnet")
class ConvInitializer(keras.initializers.VarianceScaling):
    """The reference init: N(0, sqrt(2 / fan_out)), fan_out = k * k * out_channels.

    On JAX, Keras draws each kernel with a ``jax.random`` call compiled for that kernel's
    shape: building a RegNet compiled ~90 of them (RegNetY016: 12.8 s on a 2-core CPU). With
    an integer seed (Keras's default: each initializer takes one from Python's ``random`` when
    made, which ``keras.utils.set_random_seed`` seeds), JAX kernels are drawn with NumPy from
    that seed instead: the same distribution, reproducible, and RegNetY016 builds in 1.7 s.
    Other backends draw as Keras does.

    Example:
        >>> kernel = ConvInitializer(seed=1)((3, 3, 16, 32))
        >>> round(float(np.std(keras.ops.convert_to_numpy(kernel)) / np.sqrt(2 / (9 * 32))), 1)
        1.0
    """

    def __init__(self, seed: int | None = None):
        super().__init__(2.0, mode="fan_out", distribution="untruncated_normal", seed=seed)

    def __call__(self, shape, dtype=None):
        if keras.backend.backend() != "jax" or not isinstance(self.seed, int):
            return super().__call__(shape, dtype)
        fan_out = shape[-1] * int(np.prod(shape[:-2]))
        values = np.random.default_rng(self.seed).standard_normal(shape) * np.sqrt(2.0 / max(1, fan_out))
        return keras.ops.convert_to_tensor(values, dtype=dtype or keras.config.floatx())

    def get_config(self) -> dict:  # scale, mode and distribution are fixed
        return {"seed": keras.saving.serialize_keras_object(self._init_seed)}


def conv_initializer() -> keras.initializers.Initializer:
    """The reference init for every conv kernel (:class:`ConvInitializer`)."""
    return ConvInitializer()


@keras.saving.register_keras_serializable(package="keras_regnet")
class GroupedConv2D(keras.layers.Conv2D):
    """Conv2D whose grouped case avoids XLA on the TensorFlow backend.

    Keras 3's TensorFlow backend wraps every grouped convolution in
    ``tf.function(jit_compile=True)``: on a CPU that is many times slower than TensorFlow's
    native grouped ``Conv2D`` kernel, and it leaves XLA functions inside exported SavedModels.
    ``tf.nn.conv2d`` accepts grouped kernels directly (input channels = groups x kernel
    input channels), with gradients, so this layer calls it. On JAX it runs one convolution
    per group on a CPU or across devices (XLA's own on one GPU or TPU) and on PyTorch one
    native grouped convolution without Keras's layout copies (:mod:`keras_regnet.conv_ops` says
    why). The weights have the standard Conv2D layout
    ``[kh, kw, in / groups, out]``.

    On a CPU, TensorFlow has grouped-convolution GRADIENTS only in its oneDNN kernels;
    ``import keras_regnet`` turns them on (``TF_ENABLE_ONEDNN_OPTS=1``) unless TensorFlow was
    imported first (``import keras_hub`` before ``keras_regnet`` does that) or the variable
    says otherwise. Without them, this layer convolves one group at a time with the native
    kernel (differentiable; RegNetX002 trained at 372 against 451 images/s with oneDNN, where
    Keras's XLA grouped conv gave 44) and warns once.

    Example:
        >>> layer = GroupedConv2D(64, 3, groups=4, padding="same", use_bias=False)
        >>> tuple(layer(keras.ops.ones((1, 8, 8, 64))).shape)
        (1, 8, 8, 64)
    """

    def call(self, inputs):
        if keras.backend.backend() != "tensorflow" or self.groups == 1:
            return super().call(inputs)
        import tensorflow as tf

        # What follows the grouped conv must never be fused into it by TensorFlow's graph
        # optimiser (grappler's remapper) in a graph that may run elsewhere: its _FusedConv2D
        # (conv + BiasAdd / FusedBatchNorm / ReLU) has no grouped kernel without oneDNN, so a
        # SavedModel written where oneDNN is on would fail where it is off (TF Serving, AVX2
        # CPUs). The remapper takes a bias given as AddV2 (not BiasAdd) only when oneDNN is on,
        # whose fused kernel handles groups; a conv with no bias is followed by an EnsureShape,
        # which nothing fuses with, except in Keras's own step functions here (see
        # _graph_runs_only_in_this_process): there the conv, its batch norm and ReLU fuse.
        outputs = self.convolution_op(inputs, self.kernel)
        if self.use_bias:
            bias = self.bias if self.data_format == "channels_last" else tf.reshape(
                self.bias, [1, self.filters, 1, 1])
            outputs = tf.math.add(outputs, tf.cast(bias, outputs.dtype))
        elif not (_onednn_on() and _graph_runs_only_in_this_process()):
            outputs = tf.ensure_shape(outputs, outputs.shape)
        return self.activation(outputs) if self.activation is not None else outputs

    def convolution_op(self, inputs, kernel):
        outputs = _jax_or_torch_convolution(self, inputs, kernel)
        if outputs is not None:
            return outputs
        if keras.backend.backend() != "tensorflow" or self.groups == 1:
            return super().convolution_op(inputs, kernel)
        import tensorflow as tf

        data_format = "NHWC" if self.data_format == "channels_last" else "NCHW"
        dtype = inputs.dtype
        if dtype != tf.float32 and not tf.config.list_logical_devices("GPU"):
            # On a CPU, TensorFlow's grouped-conv gradients exist for float32 only (float16's
            # filter gradient ignores groups; bfloat16 has none without AVX512-BF16 oneDNN
            # kernels), and half precision gains nothing there: compute this conv in float32.
            inputs, kernel = tf.cast(inputs, tf.float32), tf.cast(kernel, tf.float32)

        def conv(x, k):
            return tf.nn.conv2d(x, k, strides=self.strides, padding=self.padding.upper(),
                                data_format=data_format, dilations=self.dilation_rate)

        if _native_grouped_conv():
            outputs = conv(inputs, kernel)
        else:  # no grouped gradient here: one plain (differentiable) conv per group
            axis = -1 if data_format == "NHWC" else 1
            outputs = tf.concat([conv(x, k) for x, k in zip(tf.split(inputs, self.groups, axis=axis),
                                                             tf.split(kernel, self.groups, axis=-1))],
                                axis=axis)
        return tf.cast(outputs, dtype)


@keras.saving.register_keras_serializable(package="keras_regnet")
class DenseConv2D(keras.layers.Conv2D):
    """A k x k Conv2D without groups (the stem) that is faster on JAX and PyTorch.

    TensorFlow runs Keras's convolution as it is. On JAX a conv over few input channels (the
    stem's three) runs as one matmul over image patches, where XLA's CPU convolution is slowest;
    on PyTorch every one runs without Keras's layout copies (:mod:`keras_regnet.conv_ops`).
    Same weights and outputs as ``keras.layers.Conv2D``.

    Example:
        >>> layer = DenseConv2D(8, 3, strides=2, use_bias=False)
        >>> tuple(layer(keras.ops.ones((1, 9, 9, 3))).shape)
        (1, 4, 4, 8)
    """

    def convolution_op(self, inputs, kernel):
        outputs = _jax_or_torch_convolution(self, inputs, kernel)
        return super().convolution_op(inputs, kernel) if outputs is None else outputs


@keras.saving.register_keras_serializable(package="keras_regnet")
class PointwiseConv2D(keras.layers.Conv2D):
    """1x1 Conv2D that trains faster on TensorFlow (stride 1: its gradients are matmuls).

    A 1x1 convolution is a matrix product over the pixels, ``[N*H*W, in] @ [in, out]``, and
    so are its two gradients. TensorFlow's CPU convolution-gradient kernels run them well
    below its matmul rate (a profile of a RegNetX004 train step: the 1x1 convs took 288 ms
    forward, 397 + 273 ms in the filter and input gradients), so in training this layer keeps
    the forward convolution and computes the gradients with ``tf.matmul`` (RegNetX004 and
    RegNetY032 train steps ~6-8% faster). Inference runs the plain convolution, which
    TensorFlow fuses with the bias, batch norm and activation that follow. Same weights and
    outputs as ``keras.layers.Conv2D``. On JAX every 1x1 conv (strided too) is a matmul, on
    PyTorch a convolution without layout copies (:mod:`keras_regnet.conv_ops`).

    Example:
        >>> layer = PointwiseConv2D(8, 1, use_bias=False)
        >>> tuple(layer(keras.ops.ones((2, 5, 5, 4)), training=True).shape)
        (2, 5, 5, 8)
    """

    def call(self, inputs, training=None):
        if not (training and self._is_matmul_shaped() and keras.backend.backend() == "tensorflow"):
            return super().call(inputs)
        outputs = _pointwise_conv_with_matmul_gradients(inputs, self.kernel)
        if self.use_bias:
            outputs = outputs + self.bias
        return self.activation(outputs) if self.activation is not None else outputs

    def convolution_op(self, inputs, kernel):
        outputs = _jax_or_torch_convolution(self, inputs, kernel)
        return super().convolution_op(inputs, kernel) if outputs is None else outputs

    def _is_matmul_shaped(self) -> bool:
        return (self.kernel_size == (1, 1) and self.strides == (1, 1) and self.groups == 1
                and self.dilation_rate == (1, 1) and self.data_format == "channels_last")


def _pointwise_conv_with_matmul_gradients(x, kernel):
    import tensorflow as tf

    @tf.custom_gradient
    def conv(x, kernel):
        def gradients(dy):
            in_channels, out_channels = kernel.shape[2], kernel.shape[3]
            dy_rows = tf.reshape(dy, [-1, out_channels])
            weights = tf.reshape(kernel, [in_channels, out_channels])
            dx = tf.matmul(dy_rows, weights, transpose_b=True)
            dkernel = tf.matmul(tf.reshape(x, [-1, in_channels]), dy_rows, transpose_a=True)
            return tf.reshape(dx, tf.shape(x)), tf.reshape(dkernel, kernel.shape)

        return tf.nn.conv2d(x, kernel, strides=1, padding="VALID"), gradients

    return conv(x, tf.convert_to_tensor(kernel))


def _jax_or_torch_convolution(layer: keras.layers.Conv2D, inputs, kernel):
    """The layer's convolution in :mod:`keras_regnet.conv_ops` on JAX and PyTorch, where
    Keras's own is slow (XLA's CPU grouped convs and conv gradients, PyTorch's layout copies);
    None elsewhere (TensorFlow; JAX on a GPU or TPU, but for grouped convs across devices; or a
    configuration those functions do not cover)."""
    backend = keras.backend.backend()
    if backend == "jax" and layer.groups > 1 and conv_ops.jax_grouped_conv_per_group():
        return conv_ops.grouped_conv(inputs, kernel, layer.groups, layer.strides, layer.padding,
                                     layer.dilation_rate, layer.data_format)
    if backend == "jax" and not conv_ops.jax_compiles_for_cpu():
        return None  # XLA's own convolutions on a GPU or TPU (conv_ops.jax_compiles_for_cpu)
    if backend == "jax" and layer.kernel_size == (1, 1) and layer.dilation_rate == (1, 1):
        return conv_ops.pointwise_conv(inputs, kernel, layer.strides, layer.data_format)
    if (backend == "jax" and layer.dilation_rate == (1, 1)
            and kernel.shape[2] <= conv_ops.PATCH_CONV_MAX_CHANNELS):
        return conv_ops.patch_conv(inputs, kernel, layer.strides, layer.padding, layer.data_format)
    if backend == "torch":
        if "_torch_kernel_cache" not in layer.__dict__:  # plain attribute: no Keras/Module tracking
            object.__setattr__(layer, "_torch_kernel_cache", {})
        fusion = torch_inference.conv_fusion(layer, kernel, inputs)  # inference: see torch_inference.py
        if fusion is None:
            return conv_ops.torch_conv(inputs, kernel, layer.groups, layer.strides, layer.padding,
                                       layer.dilation_rate, layer.data_format, layer._torch_kernel_cache)
        cache = layer._torch_kernel_cache
        if fusion.fused:  # the folded kernel: cached apart from the layer's own
            cache = cache.setdefault("fused", {})
        outputs = conv_ops.torch_conv(inputs, fusion.kernel, layer.groups, layer.strides,
                                      fusion.padding or layer.padding, layer.dilation_rate,
                                      layer.data_format, cache, bias=fusion.bias, relu=fusion.relu)
        torch_inference.mark_fused(outputs, *fusion.fused)
        return outputs
    return None


# Keras's predict / evaluate / train step functions (keras/src/backend/tensorflow/trainer.py).
# Keras leaves them out of SavedModels, so their graphs run only in the process that traced them.
KERAS_STEP_FUNCTIONS = frozenset({"one_step_on_data", "one_step_on_data_distributed", "multi_step_on_data",
                                  "one_step_on_iterator", "multi_step_on_iterator"})


def _graph_runs_only_in_this_process() -> bool:
    """Whether the graph being traced belongs to one of Keras's step functions.

    Those graphs never leave the process, so the oneDNN state they run under is this process's;
    any other graph (``model.export``, ``tf.saved_model.save``, a user's ``tf.function``) may be
    served elsewhere and keeps the grouped conv unfusable. If Keras renames its functions, this
    only turns the fusion off again (the RegNetY032 predict of 2026-12-03 ran ~10% slower so).
    """
    import tensorflow as tf

    graph = tf.compat.v1.get_default_graph()
    while graph is not None:
        if getattr(graph, "name", None) in KERAS_STEP_FUNCTIONS:
            return True
        graph = getattr(graph, "outer_graph", None)
    return False


@functools.lru_cache(maxsize=1)
def _onednn_on() -> bool:
    """Whether TensorFlow runs its oneDNN CPU kernels in this process (fixed once it loaded)."""
    from tensorflow.python.util import _pywrap_util_port

    return bool(_pywrap_util_port.IsMklEnabled())


@functools.lru_cache(maxsize=1)
def _native_grouped_conv() -> bool:
    """Whether TensorFlow's native grouped convolution has gradients here (GPU or oneDNN)."""
    import tensorflow as tf

    if tf.config.list_logical_devices("GPU") or _onednn_on():
        return True
    warnings.warn(
        "TensorFlow's oneDNN CPU kernels are off (TF_ENABLE_ONEDNN_OPTS=0, or TensorFlow was "
        "imported before keras_regnet, e.g. by `import keras` or keras_hub, on a CPU where they are "
        "off by default), and without them TensorFlow cannot differentiate a grouped convolution: "
        "keras_regnet convolves one group at a time instead, and every other op runs on Eigen "
        "kernels too (RegNetX004 trained at 0.61x, inferred at 0.93x on an AVX2 EPYC). Import "
        "keras_regnet first, or set TF_ENABLE_ONEDNN_OPTS=1 before TensorFlow loads.",
        RuntimeWarning, stacklevel=3)
    return False


def _conv(filters: int, kernel_size: int, name: str, strides: int = 1, groups: int = 1,
          use_bias: bool = False, activation: str | None = None, dtype=None) -> keras.layers.Layer:
    # Stride-2 3x3 convs get explicit symmetric padding from the caller ("valid" here);
    # "same" with stride 1 is already symmetric.
    padding = "valid" if strides > 1 or kernel_size == 1 else "same"
    if groups > 1:
        cls = GroupedConv2D
    elif kernel_size == 1:
        cls = PointwiseConv2D
    else:
        cls = DenseConv2D
    return cls(
        filters,
        kernel_size,
        strides=strides,
        padding=padding,
        groups=groups,
        use_bias=use_bias,
        activation=activation,
        kernel_initializer=conv_initializer(),
        bias_initializer="zeros",
        dtype=dtype,
        name=name,
    )


@keras.saving.register_keras_serializable(package="keras_regnet")
class FusedBatchNorm(keras.layers.BatchNormalization):
    """BatchNormalization that uses TensorFlow's fused kernel on the TensorFlow backend.

    Keras 3 composes batch norm from elementwise ops; TensorFlow's ``FusedBatchNormV3`` does
    the normalisation (and, in training, the statistics and moving-average update) in one
    kernel, which grappler can also fold into the preceding convolution at inference. The
    moving variance is updated with the unbiased batch variance, as PyTorch (and so the
    reference) does, on every backend (Keras's own layer takes the biased one), and under a
    distribution strategy the updated statistics are averaged over replicas so that every
    replica holds the same model. On PyTorch, training and inference run PyTorch's fused
    kernels (:func:`_torch_batch_norm`). Other backends and layouts use Keras's computation
    with that update; masked inputs use Keras's layer as it is.

    Example:
        >>> bn = FusedBatchNorm(epsilon=1e-5, momentum=0.9)
        >>> tuple(bn(keras.ops.ones((2, 4, 4, 8)), training=False).shape)
        (2, 4, 4, 8)
    """

    def call(self, inputs, training=None, mask=None):
        if torch_inference.fused_for(inputs, self):  # PyTorch inference: the conv did the work
            if training and self.trainable:
                raise RuntimeError(f"{self.name}: a batch norm folded for inference was called in training")
            return inputs
        if keras.backend.backend() == "torch" and self._torch_fusable(inputs, training, mask):
            return _torch_batch_norm(self, inputs, training)
        if (keras.backend.backend() != "tensorflow" or mask is not None or len(inputs.shape) != 4
                or self.axis not in (-1, 3) or not (self.center and self.scale) or self.renorm):
            return self._keras_call_with_unbiased_update(inputs, training, mask)
        import tensorflow as tf

        x = inputs if inputs.dtype in (tf.float16, tf.bfloat16, tf.float32) else tf.cast(inputs, "float32")
        train = bool(training) and self.trainable
        outputs, mean, variance, *_ = tf.compat.v1.nn.fused_batch_norm(
            x,
            tf.cast(self.gamma, "float32"),
            tf.cast(self.beta, "float32"),
            mean=tf.cast(self.moving_mean, "float32"),
            variance=tf.cast(self.moving_variance, "float32"),
            epsilon=self.epsilon,
            is_training=train,
            # With is_training, the op returns the updated moving averages directly.
            exponential_avg_factor=1.0 - self.momentum if train else 1.0,
        )
        if train:
            replica = tf.distribute.get_replica_context()
            if replica is not None and replica.num_replicas_in_sync > 1:
                # Average the updated statistics over replicas (and workers): otherwise each
                # keeps its own moving averages and the replicas' models drift apart.
                mean, variance = replica.all_reduce(tf.distribute.ReduceOp.MEAN, [mean, variance])
            self.moving_mean.assign(tf.cast(mean, self.moving_mean.dtype))
            self.moving_variance.assign(tf.cast(variance, self.moving_variance.dtype))
        return tf.cast(outputs, self.compute_dtype)

    def _torch_fusable(self, inputs, training, mask) -> bool:
        """Whether PyTorch's fused kernels compute this call: float32 NHWC or NCHW, both affine
        parameters, no mask, no renormalisation (the rest: Keras's computation)."""
        float32 = keras.backend.standardize_dtype(inputs.dtype) == self.variable_dtype == "float32"
        return (mask is None and len(inputs.shape) == 4 and self.axis in (-1, 1, 3) and self.center
                and self.scale and not self.renorm and float32)

    def _update_moving_averages(self, mean, unbiased_variance) -> None:
        """moving = momentum * moving + (1 - momentum) * batch statistic (off TensorFlow, whose
        fused kernel returns the updated averages itself)."""
        momentum = self.momentum
        for moving, batch in ((self.moving_mean, mean), (self.moving_variance, unbiased_variance)):
            moving.assign(keras.ops.cast(moving, batch.dtype) * momentum + batch * (1.0 - momentum))

    def _keras_call_with_unbiased_update(self, inputs, training, mask):
        """Keras's batch norm, its moving variance updated with the unbiased batch variance."""
        if not (training and self.trainable) or mask is not None or self.renorm:
            return super().call(inputs, training=training, mask=mask)
        ops = keras.ops
        x = ops.cast(inputs, keras.backend.result_type(inputs.dtype, "float32"))  # as Keras: no half
        mean, variance = self._moments(x, None)
        axis = self.axis % len(x.shape)
        # Static in training on JAX (traced shapes) and PyTorch: the values per channel.
        count = int(np.prod([size for i, size in enumerate(x.shape) if i != axis]))
        self._update_moving_averages(mean, variance * (count / max(count - 1, 1)))
        gamma = ops.cast(self.gamma, x.dtype) if self.scale else None
        beta = ops.cast(self.beta, x.dtype) if self.center else None
        outputs = ops.batch_normalization(x, mean, variance, axis=self.axis, offset=beta, scale=gamma,
                                          epsilon=self.epsilon)
        return ops.cast(outputs, self.compute_dtype)


def _torch_batch_norm(layer: FusedBatchNorm, inputs, training):
    """``layer``'s batch norm as PyTorch's fused kernels, where Keras composes it from
    elementwise ops (in training, each saved for the backward pass).

    Training: one forward and one backward kernel, which also update the moving averages with
    the unbiased batch variance (PyTorch's rule, :meth:`FusedBatchNorm.call`'s too) on copies
    that are then assigned, so a stateless call records them like any update. Computing the
    statistics apart (``torch.var_mean`` over a channels-last tensor) took 29% of a RegNetX004
    train step. Inference: one pass where Keras's form makes three (a subtraction into a new
    tensor, then a product and a sum in place). A channels-last input is handed over as a
    permuted view (PyTorch's channels-last memory format: no copy).
    """
    import torch.nn.functional as F  # noqa: N812 (PyTorch's convention)

    train = bool(training) and layer.trainable  # a frozen layer normalises as at inference
    channels_last = layer.axis in (-1, 3)
    x = inputs.permute(0, 3, 1, 2) if channels_last else inputs
    moving = [keras.ops.convert_to_tensor(v) for v in (layer.moving_mean, layer.moving_variance)]
    if train:
        moving = [v.detach().clone() for v in moving]
    y = F.batch_norm(x, moving[0], moving[1], keras.ops.convert_to_tensor(layer.gamma),
                     keras.ops.convert_to_tensor(layer.beta), training=train, momentum=1.0 - layer.momentum,
                     eps=layer.epsilon)
    if train:
        layer.moving_mean.assign(moving[0])
        layer.moving_variance.assign(moving[1])
    return y.permute(0, 2, 3, 1) if channels_last else y


@keras.saving.register_keras_serializable(package="keras_regnet")
class ImageNormalization(keras.layers.Normalization):
    """``keras.layers.Normalization`` with fixed statistics that exports as constants.

    Keras's layer keeps the mean and variance given to it as tensors that a traced function
    captures: ONNX export (tf2onnx) then turns them into graph inputs a runtime asks the
    caller for. This layer computes with NumPy constants instead, so every exporter writes
    them into the graph; the result is the same, ``(x - mean) / max(sqrt(variance), eps)``.

    Example:
        >>> norm = ImageNormalization(mean=[127.5] * 3, variance=[127.5**2] * 3)
        >>> [float(v) for v in norm(np.full((1, 1, 1, 3), 255.0, "float32"))[0, 0, 0]]
        [1.0, 1.0, 1.0]
    """

    def __init__(self, mean, variance, axis=-1, **kwargs):
        if mean is None or variance is None or kwargs.get("invert"):
            raise ValueError("ImageNormalization needs fixed mean and variance (and no invert); "
                             "use keras.layers.Normalization to adapt() statistics.")
        super().__init__(axis=axis, mean=mean, variance=variance, **kwargs)

    def call(self, inputs):
        ndim = len(inputs.shape)
        kept = [inputs.shape[d] for d in self._keep_axis]  # build() made the axes positive
        shape = [inputs.shape[d] if d in self._keep_axis else 1 for d in range(ndim)]
        mean = np.broadcast_to(np.asarray(self.input_mean, "float32"), kept).reshape(shape)
        variance = np.broadcast_to(np.asarray(self.input_variance, "float32"), kept).reshape(shape)
        std = np.maximum(np.sqrt(variance), np.float32(keras.backend.epsilon()))
        x = keras.ops.cast(inputs, self.compute_dtype)
        if self._as_pointwise_conv(ndim, kept):
            return _normalize_with_pointwise_conv(x, mean.reshape(-1), std.reshape(-1))
        if keras.backend.backend() == "torch" and self.compute_dtype == "float32":
            import torch

            # One pass, x * (1 / std) - mean / std, where subtract then divide made two (4% of
            # a RegNetX004 predict); the same rounding as TensorFlow's 1x1 conv above.
            scale, offset = (torch.as_tensor(v.astype("float32"), device=x.device)
                             for v in (1.0 / std, -mean / std))
            return torch.addcmul(offset, x, scale)
        return keras.ops.divide(keras.ops.subtract(x, mean.astype(self.compute_dtype)),
                                std.astype(self.compute_dtype))

    def _as_pointwise_conv(self, ndim: int, kept: list) -> bool:
        # TensorFlow broadcasts a 3-vector over the last axis slowly (a RegNetX004 batch of 32
        # at 224x224 spent ~6% of its predict in this layer's Sub and Mul); as a 1x1 conv with
        # a diagonal kernel and a BiasAdd, the same x / std - mean / std is one fused kernel.
        return (keras.backend.backend() == "tensorflow" and ndim == 4 and self.compute_dtype == "float32"
                and tuple(self._keep_axis) == (3,) and kept[0] is not None and kept[0] <= 4)


def _normalize_with_pointwise_conv(x, mean: np.ndarray, std: np.ndarray):
    """(x - mean) / std over the last axis of a float32 NHWC tensor, as x * (1 / std) - mean / std
    in TensorFlow's 1x1 conv + BiasAdd (within float32 rounding of the division)."""
    import tensorflow as tf

    kernel = np.diag((1.0 / std).astype("float32"))[None, None]
    bias = (-mean / std).astype("float32")
    return tf.nn.bias_add(tf.nn.conv2d(x, kernel, strides=1, padding="VALID"), bias)


def channel_axis() -> int:
    """The channel axis of the layers built now: 1 under ``keras.config.image_data_format()``
    ``"channels_first"``, else -1."""
    return 1 if keras.config.image_data_format() == "channels_first" else -1


def _bn(name: str, dtype=None) -> keras.layers.Layer:
    return FusedBatchNorm(axis=channel_axis(), epsilon=BN_EPSILON, momentum=BN_MOMENTUM, dtype=dtype,
                          name=name)


@keras.saving.register_keras_serializable(package="keras_regnet")
class FusibleReLU(keras.layers.ReLU):
    """``keras.layers.ReLU`` that the layer before it may compute, on PyTorch at inference.

    While a model of our builders infers on PyTorch, a conv -> batch norm -> ReLU runs as one
    oneDNN convolution with the batch norm folded in and the ReLU as its post-op, and a
    residual add with the ReLU after it as one pass (:mod:`keras_regnet.torch_inference`); this
    layer then hands that output on. Everywhere else it is Keras's ReLU.

    Example:
        >>> [float(v) for v in FusibleReLU()(np.array([-1.0, 2.0], "float32"))]
        [0.0, 2.0]
    """

    @property
    def computes_plain_relu(self) -> bool:
        """No slope, cap or threshold: what a fused kernel's ReLU computes."""
        return not self.negative_slope and self.max_value is None and not self.threshold

    def call(self, inputs):
        if torch_inference.fused_for(inputs, self):
            return inputs
        return super().call(inputs)


@keras.saving.register_keras_serializable(package="keras_regnet")
class FusibleAdd(keras.layers.Add):
    """``keras.layers.Add`` that, on PyTorch at inference, also computes the ReLU after it (one
    pass over the activations instead of two; :mod:`keras_regnet.torch_inference`). Everywhere
    else it is Keras's layer.

    Example:
        >>> [float(v) for v in FusibleAdd()([np.array([1.0, -3.0], "float32"), np.ones(2, "float32")])]
        [2.0, -2.0]
    """

    fusible_with_relu = True

    def call(self, inputs):
        fused = torch_inference.add_with_relu(self, inputs)
        return super().call(inputs) if fused is None else fused


@keras.saving.register_keras_serializable(package="keras_regnet")
class FusibleZeroPadding2D(keras.layers.ZeroPadding2D):
    """``keras.layers.ZeroPadding2D`` that the convolution after it may take into its kernel, on
    PyTorch at inference (:mod:`keras_regnet.torch_inference`): the input goes on unpadded,
    and the conv pads as it convolves instead of reading a padded copy. Everywhere else it is
    Keras's layer.

    Example:
        >>> tuple(FusibleZeroPadding2D(1)(np.ones((1, 4, 4, 2), "float32")).shape)
        (1, 6, 6, 2)
    """

    @property
    def fusible_into_conv(self) -> bool:
        """Even on both sides, as a convolution's own padding is."""
        (top, bottom), (left, right) = self.padding
        return top == bottom and left == right

    def call(self, inputs):
        deferred = torch_inference.deferred_padding(self, inputs)
        return super().call(inputs) if deferred is None else deferred


def _symmetric_pad(x, name: str, dtype=None):
    # PyTorch pads 1 pixel on every side; Keras "same" with stride 2 on even inputs pads only
    # bottom/right, which would shift every feature map against the reference weights.
    return FusibleZeroPadding2D(1, dtype=dtype, name=name)(x)


def stem(x, width: int, dtype=None):
    """3x3 stride-2 conv -> BN -> ReLU (no max-pool). ``dtype``: the layers' dtype policy."""
    x = _symmetric_pad(x, "stem_pad", dtype)
    x = _conv(width, 3, "stem_conv", strides=2, dtype=dtype)(x)
    x = _bn("stem_bn", dtype)(x)
    return FusibleReLU(dtype=dtype, name="stem_relu")(x)


def squeeze_excite(x, block: Block, dtype=None):
    """SE with biases: pool -> 1x1 reduce + ReLU -> 1x1 expand + sigmoid -> scale."""
    p = block.prefix
    s = keras.layers.GlobalAveragePooling2D(keepdims=True, dtype=dtype, name=f"{p}_se_pool")(x)
    s = _conv(block.se_width, 1, f"{p}_se_reduce", use_bias=True, activation="relu", dtype=dtype)(s)
    s = _conv(block.bottleneck_width, 1, f"{p}_se_expand", use_bias=True, activation="sigmoid",
              dtype=dtype)(s)
    return keras.layers.Multiply(dtype=dtype, name=f"{p}_se_scale")([x, s])


def bottleneck_block(x, block: Block, dtype=None):
    """The X block (Y with SE): 1x1 -> grouped 3x3 (strided) -> [SE] -> 1x1, residual ReLU."""
    p = block.prefix
    shortcut = x
    if block.has_projection:
        shortcut = _conv(block.out_width, 1, f"{p}_shortcut_conv", strides=block.stride, dtype=dtype)(x)
        shortcut = _bn(f"{p}_shortcut_bn", dtype)(shortcut)

    y = _conv(block.bottleneck_width, 1, f"{p}_conv1", dtype=dtype)(x)
    y = _bn(f"{p}_conv1_bn", dtype)(y)
    y = FusibleReLU(dtype=dtype, name=f"{p}_conv1_relu")(y)
    if block.stride > 1:
        y = _symmetric_pad(y, f"{p}_conv2_pad", dtype)
    y = _conv(block.bottleneck_width, 3, f"{p}_conv2", strides=block.stride, groups=block.groups,
              dtype=dtype)(y)
    y = _bn(f"{p}_conv2_bn", dtype)(y)
    y = FusibleReLU(dtype=dtype, name=f"{p}_conv2_relu")(y)
    if block.se_width:
        y = squeeze_excite(y, block, dtype)
    y = _conv(block.out_width, 1, f"{p}_conv3", dtype=dtype)(y)
    y = _bn(f"{p}_conv3_bn", dtype)(y)

    y = FusibleAdd(dtype=dtype, name=f"{p}_add")([shortcut, y])
    return FusibleReLU(dtype=dtype, name=f"{p}_out")(y)
