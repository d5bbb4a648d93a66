"""A grouped 2-D convolution on TensorFlow whose gradients need no grouped-gradient kernel.

TensorFlow's CPU build runs a grouped ``Conv2D`` forward with or without oneDNN, but has its
gradients (``Conv2DBackpropInput`` / ``Conv2DBackpropFilter`` with groups) only in the oneDNN
kernels, which TensorFlow turns on by itself only on AVX-512 CPUs. A process that imported
TensorFlow before keras_regnet on an AVX2 CPU has them off for good. This op keeps the native
grouped forward and computes both gradients from kernels every build has:

- input gradient: the transposed convolution, written as a grouped forward convolution of the
  stride-dilated output gradient with the spatially flipped, per-group transposed kernel;
- kernel gradient: the image patches times the output gradient, one batched matmul over the
  groups (``einsum``).

NHWC, dilation 1, "SAME" or "VALID" padding: what :class:`keras_regnet.GroupedConv2D` uses.
"""

from __future__ import annotations


def _same_padding(size, kernel: int, stride: int):
    """TensorFlow's SAME padding (before, after) for one spatial axis (size: a scalar tensor)."""
    import tensorflow as tf

    out = (size + stride - 1) // stride
    total = tf.maximum((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def grouped_conv2d(x, kernel, strides: tuple[int, int], padding: str):
    """``tf.nn.conv2d`` of a grouped kernel ``[kh, kw, in / groups, out]`` on NHWC input,
    differentiable on any CPU build of TensorFlow.

    Example:
        >>> import tensorflow as tf
        >>> x, k = tf.ones([1, 6, 6, 8]), tf.ones([3, 3, 2, 8])
        >>> with tf.GradientTape() as tape:
        ...     tape.watch(k)
        ...     y = grouped_conv2d(x, k, (1, 1), "SAME")
        >>> tuple(y.shape), tuple(tape.gradient(y, k).shape)
        ((1, 6, 6, 8), (3, 3, 2, 8))
    """
    import tensorflow as tf

    padding = padding.upper()
    sh, sw = strides

    @tf.custom_gradient
    def conv(x, kernel):
        y = tf.nn.conv2d(x, kernel, strides=[1, sh, sw, 1], padding=padding)

        def gradients(dy):
            kh, kw, in_per_group, out_channels = kernel.shape
            groups = x.shape[-1] // in_per_group
            out_per_group = out_channels // groups
            height, width = tf.shape(x)[1], tf.shape(x)[2]
            if padding == "SAME":
                (top, bottom), (left, right) = _same_padding(height, kh, sh), _same_padding(width, kw, sw)
            else:
                top = bottom = left = right = tf.constant(0)
            padded = tf.pad(x, [[0, 0], [top, bottom], [left, right], [0, 0]])
            padded_h, padded_w = height + top + bottom, width + left + right
            out_h, out_w = tf.shape(dy)[1], tf.shape(dy)[2]

            # Input gradient, over the padded input: spread dy to stride 1 (zeros between),
            # pad by the kernel size minus one (plus the rows/columns the strides never
            # reached), then a VALID grouped convolution with the flipped, transposed kernel.
            batch = tf.shape(dy)[0]
            spread = dy
            if sh > 1 or sw > 1:
                spread = tf.reshape(dy, [batch, out_h, 1, out_w, 1, out_channels])
                spread = tf.pad(spread, [[0, 0], [0, 0], [0, sh - 1], [0, 0], [0, sw - 1], [0, 0]])
                spread = tf.reshape(spread, [batch, out_h * sh, out_w * sw, out_channels])
                spread = spread[:, : (out_h - 1) * sh + 1, : (out_w - 1) * sw + 1]
            extra_h = padded_h - ((out_h - 1) * sh + kh)
            extra_w = padded_w - ((out_w - 1) * sw + kw)
            spread = tf.pad(spread, [[0, 0], [kh - 1, kh - 1 + extra_h], [kw - 1, kw - 1 + extra_w], [0, 0]])
            flipped = tf.reverse(kernel, axis=[0, 1])
            flipped = tf.reshape(flipped, [kh, kw, in_per_group, groups, out_per_group])
            flipped = tf.reshape(tf.transpose(flipped, [0, 1, 4, 3, 2]),
                                 [kh, kw, out_per_group, groups * in_per_group])
            dpadded = tf.nn.conv2d(spread, flipped, strides=1, padding="VALID")
            dx = dpadded[:, top: top + height, left: left + width]

            # Kernel gradient: patches [M, kh*kw, groups, in/g] against dy [M, groups, out/g].
            patches = tf.image.extract_patches(padded, sizes=[1, kh, kw, 1], strides=[1, sh, sw, 1],
                                               rates=[1, 1, 1, 1], padding="VALID")
            patches = tf.reshape(patches, [-1, kh * kw, groups, in_per_group])
            rows = tf.reshape(dy, [-1, groups, out_per_group])
            dkernel = tf.einsum("mkgc,mgo->kcgo", patches, rows)
            return dx, tf.reshape(dkernel, [kh, kw, in_per_group, out_channels])

        return y, gradients

    return conv(x, tf.convert_to_tensor(kernel))
