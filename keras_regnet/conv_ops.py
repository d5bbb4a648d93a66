"""Convolutions for the JAX and PyTorch backends, where Keras's own are slow.

XLA's CPU backend runs a grouped convolution (``feature_group_count``) as a slow generic
loop, and some convolution gradients well below its matmul rate: on a 2-core EPYC, one
RegNetX004 grouped 3x3 conv (16x40x40x64, 4 groups) took 123 ms forward and 2.2 s forward +
backward, one conv per group 19 / 69 ms; a 1x1 conv (16x40x40x64 -> 64) 21 / 503 ms, the
same product as a matmul 6 / 45 ms. Its SPMD partitioner also gathers the whole batch onto
every device before a grouped conv (openxla/xla#47945), which per-group plain convs avoid.

On a GPU or TPU, JAX runs XLA's own convolutions instead (:func:`jax_compiles_for_cpu` says
why), grouped ones per group only across devices (:func:`jax_grouped_conv_per_group`).

:func:`pointwise_conv`, :func:`patch_conv` and :func:`grouped_conv` (JAX) and
:func:`torch_conv` (PyTorch, see its docstring) compute what ``keras.ops.conv`` does, with its
weight layout ``[kh, kw, in / groups, out]``, and are differentiable.
"""

from __future__ import annotations

import functools
from typing import Sequence

import keras


def jax_compiles_for_cpu() -> bool:
    """Whether JAX's default backend is a CPU: the matmul forms below (:func:`pointwise_conv`,
    :func:`patch_conv`) are for XLA's CPU backend. On a GPU or TPU, XLA's own convolutions (cuDNN's on
    an NVIDIA GPU) run every layer, and the matmul forms would only get in their way: on an H200
    (jaxlib 0.11.2) XLA's GPU compiler aborted the process compiling RegNetX004's jitted predict
    (its Triton GEMM tiling check failed on a strided 1x1 conv's reshape to a matmul).

    Example:
        >>> jax_compiles_for_cpu()  # this suite runs JAX on the CPU
        True
    """
    import jax

    return jax.default_backend() == "cpu"


def jax_grouped_conv_per_group() -> bool:
    """Whether a grouped conv runs as one plain conv per group (:func:`grouped_conv`) on JAX: on a
    CPU (XLA's grouped conv is a slow loop there) and under a ``keras.distribution`` over more than
    one device (XLA's partitioner would gather the whole batch onto every device before a grouped
    conv, openxla/xla#47945); on one GPU or TPU, XLA's own grouped conv.

    Example:
        >>> jax_grouped_conv_per_group()
        True
    """
    if jax_compiles_for_cpu():
        return True
    distribution = keras.distribution.distribution()
    return distribution is not None and len(distribution.device_mesh.devices.flatten()) > 1


def pointwise_conv(inputs, kernel, strides: Sequence[int] = (1, 1), data_format: str = "channels_last"):
    """A 1x1 convolution as one matmul over the pixels (strides subsample first).

    Example:
        >>> x, k = keras.ops.ones((2, 4, 4, 3)), keras.ops.ones((1, 1, 3, 5))
        >>> tuple(pointwise_conv(x, k, strides=(2, 2)).shape)
        (2, 2, 2, 5)
    """
    sh, sw = strides
    weights = kernel[0, 0]  # [in, out]
    if data_format == "channels_last":
        if (sh, sw) != (1, 1):
            inputs = inputs[:, ::sh, ::sw, :]
        # As a 2-D matmul: the kernel's gradient of a 4-D one contracts three axes, which XLA's
        # CPU backend runs far below its matmul rate (RegNetX004 trained 1.35x faster this way).
        _, height, width, channels = keras.ops.shape(inputs)
        pixels = keras.ops.reshape(inputs, (-1, channels))
        return keras.ops.reshape(keras.ops.matmul(pixels, weights), (-1, height, width, weights.shape[-1]))
    if (sh, sw) != (1, 1):
        inputs = inputs[:, :, ::sh, ::sw]
    return keras.ops.einsum("nchw,co->nohw", inputs, weights)


# Up to this many input channels a dense conv runs as :func:`patch_conv` on JAX (measured there).
PATCH_CONV_MAX_CHANNELS = 4


def patch_conv(inputs, kernel, strides: Sequence[int] = (1, 1), padding: str = "valid",
               data_format: str = "channels_last"):
    """A dense convolution as one matmul over image patches: for few input channels (the stem's
    three), where XLA's CPU convolution is slowest.

    The patches are the kernel's taps as strided slices, concatenated tap by tap along the
    channels (the kernel's own ``[kh, kw, in]`` order), so the product with the kernel reshaped
    to ``[kh * kw * in, out]`` is the convolution. RegNetX004's stem (32 images of 226x226x3 ->
    112x112x32, stride 2) on a 2-core Xeon: 138 ms forward and 293 ms forward + backward as
    XLA's convolution, 71 and 94 ms this way. With 8 channels and more the convolution's forward
    is faster again (14 against 29 ms at 56x56x8). ``padding="same"`` pads as Keras does.

    Example:
        >>> x, k = keras.ops.ones((1, 8, 8, 3)), keras.ops.ones((3, 3, 3, 4))
        >>> tuple(patch_conv(x, k, strides=(2, 2), padding="same").shape)
        (1, 4, 4, 4)
    """
    kh, kw, channels, filters = kernel.shape
    sh, sw = strides
    last = data_format == "channels_last"
    h_axis, w_axis = (1, 2) if last else (2, 3)
    if padding == "same":
        rows = _same_padding(inputs.shape[h_axis], kh, sh)
        cols = _same_padding(inputs.shape[w_axis], kw, sw)
        inputs = keras.ops.pad(inputs, [(0, 0), rows, cols, (0, 0)] if last else [(0, 0), (0, 0), rows, cols])
    out_h, out_w = (inputs.shape[h_axis] - kh) // sh + 1, (inputs.shape[w_axis] - kw) // sw + 1
    taps = []
    for i in range(kh):
        for j in range(kw):
            rows, cols = slice(i, i + sh * (out_h - 1) + 1, sh), slice(j, j + sw * (out_w - 1) + 1, sw)
            taps.append(inputs[:, rows, cols, :] if last else inputs[:, :, rows, cols])
    weights = keras.ops.reshape(kernel, (kh * kw * channels, filters))
    if not last:
        return keras.ops.einsum("nkhw,ko->nohw", keras.ops.concatenate(taps, axis=1), weights)
    patches = keras.ops.reshape(keras.ops.concatenate(taps, axis=-1), (-1, kh * kw * channels))
    return keras.ops.reshape(keras.ops.matmul(patches, weights), (-1, out_h, out_w, filters))


def _same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """Keras's (TensorFlow's) "same" padding of one axis: the odd pixel goes after."""
    total = max((-(-size // stride) - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def grouped_conv(inputs, kernel, groups: int, strides: Sequence[int] = (1, 1), padding: str = "valid",
                 dilation_rate: Sequence[int] = (1, 1), data_format: str = "channels_last"):
    """A grouped convolution as one plain convolution per group, concatenated.

    Example:
        >>> x, k = keras.ops.ones((1, 6, 6, 8)), keras.ops.ones((3, 3, 2, 8))
        >>> tuple(grouped_conv(x, k, groups=4, padding="same").shape)
        (1, 6, 6, 8)
    """
    axis = -1 if data_format == "channels_last" else 1
    pieces = zip(keras.ops.split(inputs, groups, axis=axis), keras.ops.split(kernel, groups, axis=-1))
    return keras.ops.concatenate(
        [keras.ops.conv(x, k, strides=strides, padding=padding, dilation_rate=dilation_rate,
                        data_format=data_format) for x, k in pieces],
        axis=axis)


def torch_conv(inputs, kernel, groups: int, strides: Sequence[int] = (1, 1),
               padding: str | tuple[int, int] = "valid", dilation_rate: Sequence[int] = (1, 1),
               data_format: str = "channels_last", kernel_cache: dict | None = None, bias=None,
               relu: bool = False):
    """A convolution on PyTorch without Keras's layout copies (plus ``bias``, and a ReLU, if
    asked: in the same oneDNN kernel where PyTorch has it, outside autograd).

    Keras's PyTorch backend copies channels-last inputs to channels-first and back around every
    convolution. A channels-last tensor permuted to NCHW is a view in PyTorch's channels-last
    memory format, which its oneDNN kernels take as is, so this permutes views only (RegNetX004
    at 160x160, batch 16: inference 37 -> 48 images/s, training 15.5 -> 17.0 on a 2-core
    EPYC). "same" padding is Keras's: even on both sides where it can be, inside the
    convolution; otherwise (an even kernel, a stride) the odd pixel after, padded first. A pair
    ``(rows, cols)`` pads that many zeros on each side, inside the convolution.
    ``kernel_cache``, a dict the caller keeps (one per layer): outside
    autograd, the kernel in the layout PyTorch's kernel reads is kept there until the variable
    changes, instead of being copied into it at every call.

    Example:
        >>> import torch
        >>> x, k = torch.ones((1, 6, 6, 8)), torch.ones((3, 3, 2, 8))
        >>> tuple(torch_conv(x, k, groups=4, padding="same").shape)
        (1, 6, 6, 8)
    """
    import torch
    import torch.nn.functional as F  # noqa: N812 (PyTorch's convention)

    def tensor(value):  # a Keras variable on the PyTorch backend, or a tensor
        return value if isinstance(value, torch.Tensor) else keras.ops.convert_to_tensor(value)

    x = tensor(inputs)
    weights = _oihw_kernel(tensor(kernel), data_format, kernel_cache)
    if data_format == "channels_last":
        x = x.permute(0, 3, 1, 2)
    pad = padding if isinstance(padding, tuple) else (0, 0)
    if padding == "same":
        rows, cols = (_same_padding(x.shape[axis], dilation * (size - 1) + 1, stride) for axis, size, stride,
                      dilation in zip((2, 3), kernel.shape[:2], strides, dilation_rate))
        if rows[0] == rows[1] and cols[0] == cols[1]:
            pad = (rows[0], cols[0])
        else:  # uneven (an even kernel, or a stride): padded first, the odd pixel after
            x = F.pad(x, (*cols, *rows))
    if relu and _fused_relu_kernel(x, weights):
        y = torch.ops.mkldnn._convolution_pointwise(x, weights, bias, list(pad), list(strides),
                                                    list(dilation_rate), groups, "relu", [], "")
    else:
        y = F.conv2d(x, weights, bias, stride=tuple(strides), padding=pad, dilation=tuple(dilation_rate),
                     groups=groups)
        if relu:
            y = torch.relu(y) if torch.is_grad_enabled() else torch.relu_(y)
    return y.permute(0, 2, 3, 1) if data_format == "channels_last" else y


def _fused_relu_kernel(x, weights) -> bool:
    """Whether PyTorch's oneDNN conv with a ReLU post-op (what its compiler emits on CPUs) runs
    this call: float32 on the CPU, outside autograd (the op has no gradient)."""
    import torch

    return (not torch.is_grad_enabled() and x.device.type == "cpu"
            and x.dtype == weights.dtype == torch.float32 and torch.backends.mkldnn.is_available()
            and torch_has_op("mkldnn", "_convolution_pointwise"))


@functools.cache
def torch_has_op(namespace: str, name: str) -> bool:
    """Whether this PyTorch has the (internal) operator ``torch.ops.<namespace>.<name>``."""
    import torch

    return hasattr(getattr(torch.ops, namespace), name)


def _oihw_kernel(kernel, data_format: str, cache: dict | None):
    """The HWIO kernel as PyTorch's OIHW: a view in autograd; outside it, a copy in the memory
    format the convolution reads (channels-last for channels-last inputs), kept in ``cache``
    while the kernel is the same tensor object, unchanged (its version counter, which in-place
    assignment advances). The cache holds that tensor, so a new one (a variable's new value,
    a per-call cast under mixed precision) can never pass for it at a reused address. PyTorch's
    oneDNN convolution would otherwise copy the permuted view at every call: RegNetX004 copies
    its 5.2M weights per forward pass."""
    import torch

    view = kernel.permute(3, 2, 0, 1)
    if cache is None or torch.is_grad_enabled():
        return view
    if not (cache.get("source") is kernel and cache["version"] == kernel._version
            and cache["data_format"] == data_format):
        layout = torch.channels_last if data_format == "channels_last" else torch.contiguous_format
        cache.update(source=kernel, version=kernel._version, data_format=data_format,
                     weights=view.contiguous(memory_format=layout))
    return cache["weights"]
