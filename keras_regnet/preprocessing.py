"""ImageNet constants, input normalisation, class names, and THE eval transform.

The eval transform (decode, resize the short side, center-crop) is one function,
:func:`eval_crop`, used by the trainer's evaluation and by the exported ``serving_bytes``
signature alike: the top-1 the trainer reports is the top-1 of the model it exports, image for
image.

It is computed as ONE antialiased ``scale_and_translate`` straight into the crop: exactly
"resize the short side to ``resize`` (antialiased), then take the center ``crop``", but without
materialising the resized image, so an extreme aspect ratio (a 1x3000 strip) costs no more than
the crop itself.
"""

from __future__ import annotations

import functools
import json
import os

import keras
import numpy as np

from keras_regnet.transforms import (  # noqa: F401 (re-exported: the public home)
    IMAGENET_MEAN,
    IMAGENET_STD,
    INTERPOLATIONS,
    EvalTransform,
)

# tf.image.resize(..., antialias=True) uses these scale_and_translate kernels.
_KERNELS = {"bilinear": "triangle", "bicubic": "keyscubic"}


IMAGE_FORMATS = ("JPEG", "PNG", "GIF", "BMP", "WebP")
_HEADER_BYTES = 30  # enough for every format's size fields (WebP's VP8 frame header: 30)


def decode_rgb(encoded, max_pixels: int | None = None, index=None):
    """Encoded JPEG/PNG/GIF/BMP/WebP bytes -> uint8 ``[height, width, 3]`` (TensorFlow).

    With ``max_pixels``, the size is read from the file's header first and the decoder runs
    only after that check passed: a larger image, or bytes that are none of those formats, are
    refused (``InvalidArgumentError`` naming the limit, and ``index`` if given, e.g. the
    image's position in a batch) before a pixel is decoded. A few hundred bytes of PNG can
    otherwise claim gigabytes.

    Example:
        >>> import tensorflow as tf
        >>> png = tf.io.encode_png(tf.zeros([300, 400, 3], tf.uint8))
        >>> decode_rgb(png, max_pixels=200_000).shape
        TensorShape([300, 400, 3])
    """
    import tensorflow as tf

    checks = []
    if max_pixels is not None:
        height, width = encoded_image_size(encoded)
        where = ["image", index] if index is not None else ["image"]
        checks = [
            tf.debugging.Assert(height * width > 0, [
                *where, f"is not a {', '.join(IMAGE_FORMATS)} file (or its header is cut short)"]),
            tf.debugging.Assert(height * width <= max_pixels, [
                *where, "is too large:", height, "x", width, f"pixels (read from its header); "
                f"this model accepts at most {max_pixels:,} pixels per image"]),
        ]
    with tf.control_dependencies(checks):  # decode only what passed the checks
        return tf.io.decode_image(encoded, channels=3, expand_animations=False)


def _bytes_to_int(head, start: int, count: int, big_endian: bool):
    import tensorflow as tf

    order = range(start, start + count) if big_endian else reversed(range(start, start + count))
    value = tf.constant(0, tf.int64)
    for i in order:
        value = value * 256 + tf.cast(head[i], tf.int64)
    return value


def encoded_image_size(encoded):
    """(height, width) of an encoded JPEG/PNG/GIF/BMP/WebP from its header alone, as int64.

    Unknown formats give (0, 0).

    Example:
        >>> import tensorflow as tf
        >>> [int(v) for v in encoded_image_size(tf.io.encode_png(tf.zeros([3, 5, 1], tf.uint8)))]
        [3, 5]
    """
    import tensorflow as tf

    head = tf.io.decode_raw(tf.strings.substr(encoded, 0, _HEADER_BYTES), tf.uint8)
    head = tf.pad(head, [[0, _HEADER_BYTES - tf.shape(head)[0]]])  # short files read as zeros
    at = lambda start, magic: tf.strings.substr(encoded, start, len(magic)) == magic  # noqa: E731

    def jpeg():
        shape = tf.io.extract_jpeg_shape(encoded, output_type=tf.int32)
        return tf.cast(shape[0], tf.int64), tf.cast(shape[1], tf.int64)

    def png():  # IHDR: width, height as big-endian uint32 at bytes 16 and 20
        return _bytes_to_int(head, 20, 4, True), _bytes_to_int(head, 16, 4, True)

    def gif():  # logical screen: width, height as little-endian uint16 at bytes 6 and 8
        return _bytes_to_int(head, 8, 2, False), _bytes_to_int(head, 6, 2, False)

    def bmp():  # width, height as little-endian int32 at 18 and 22 (height < 0: top-down)
        height = _bytes_to_int(head, 22, 4, False)
        return tf.where(height >= 2**31, 2**32 - height, height), _bytes_to_int(head, 18, 4, False)

    def webp_extended():  # VP8X: canvas width - 1, height - 1 as 24-bit little-endian at 24, 27
        return _bytes_to_int(head, 27, 3, False) + 1, _bytes_to_int(head, 24, 3, False) + 1

    def webp_lossy():  # VP8 key frame: 14-bit little-endian width, height at 26 and 28
        return (_bytes_to_int(head, 28, 2, False) % 16384,
                _bytes_to_int(head, 26, 2, False) % 16384)

    def webp_lossless():  # VP8L: after the 0x2f signature, 14 bits width - 1, 14 bits height - 1
        bits = _bytes_to_int(head, 21, 4, False)
        return (bits // 16384) % 16384 + 1, bits % 16384 + 1

    def unknown():
        return tf.constant(0, tf.int64), tf.constant(0, tf.int64)

    webp = at(0, b"RIFF") & at(8, b"WEBP")
    return tf.case([(at(0, b"\xff\xd8\xff"), jpeg), (at(0, b"\x89PNG"), png), (at(0, b"GIF8"), gif),
                    (at(0, b"BM"), bmp), (webp & at(12, b"VP8X"), webp_extended),
                    (webp & at(12, b"VP8 ") & at(23, b"\x9d\x01\x2a"), webp_lossy),
                    (webp & at(12, b"VP8L") & at(20, b"\x2f"), webp_lossless)],
                   default=unknown, exclusive=False)


def eval_crop(image, transform: EvalTransform):
    """An image ``[height, width, 3]`` (any dtype, [0, 255]) -> float32 ``[crop, crop, 3]``;
    a batch of same-sized images ``[n, height, width, 3]`` -> ``[n, crop, crop, 3]``.

    Equal to ``tf.image.resize(image, short side -> resize, antialias=True)`` followed by the
    center crop, computed for the crop's pixels only.

    Example:
        >>> import tensorflow as tf
        >>> eval_crop(tf.zeros([300, 500, 3], tf.uint8), EvalTransform(256, 224)).shape
        TensorShape([224, 224, 3])
    """
    import tensorflow as tf

    image = tf.convert_to_tensor(image)
    if image.dtype not in (tf.uint8, tf.float32):
        image = tf.cast(image, tf.float32)
    # uint8 goes into the resampler as it is: a float32 copy of a 40-megapixel photo would
    # cost 480 MB, and the kernel converts each pixel it reads anyway.
    single = image.shape.rank == 3
    images = image[None] if single else image
    shape = tf.cast(tf.shape(images)[1:3], tf.float32)
    size = tf.round(shape * (transform.resize / tf.reduce_min(shape)))  # the resized image's size
    offset = tf.cast((tf.cast(size, tf.int32) - transform.crop) // 2, tf.float32)  # crop's top-left
    out = tf.raw_ops.ScaleAndTranslate(
        images=images, size=tf.constant([transform.crop, transform.crop], tf.int32),
        scale=size / shape, translation=-offset, kernel_type=_KERNELS[transform.interpolation],
        antialias=True)
    out = tf.clip_by_value(out, 0.0, 255.0)  # bicubic overshoots
    return out[0] if single else out


def preprocess_input(x, data_format: str | None = None):
    """Normalises RGB images in [0, 255] with the ImageNet mean/std.

    For models built with ``include_preprocessing=False``; models built with the default
    ``True`` do this themselves, so do not apply it twice.

    Example:
        >>> [round(float(v), 3) for v in preprocess_input(np.full((1, 2, 2, 3), 255.0))[0, 0, 0]]
        [2.249, 2.429, 2.64]
    """
    data_format = data_format or keras.config.image_data_format()
    shape = (1, 1, 3) if data_format == "channels_last" else (3, 1, 1)
    mean = np.reshape(np.array(IMAGENET_MEAN, "float32") * 255.0, shape)
    std = np.reshape(np.array(IMAGENET_STD, "float32") * 255.0, shape)
    if isinstance(x, np.ndarray):
        return (x.astype("float32") - mean) / std
    x = keras.ops.cast(x, "float32")
    return (x - mean) / std


@functools.lru_cache(maxsize=1)
def imagenet_classes() -> list[tuple[str, str]]:
    """The 1000 ImageNet-1k classes as ``(wordnet_id, name)``, index = 0-based class id.

    Example:
        >>> imagenet_classes()[1]
        ('n01443537', 'goldfish')
    """
    path = os.path.join(os.path.dirname(__file__), "data", "imagenet_classes.json")
    with open(path, encoding="utf-8") as f:
        return [(wnid, name) for wnid, name, _ in json.load(f)]


def default_class_names(classes: int) -> list[str]:
    """ImageNet's names for 1000 classes, ``class_0`` ... otherwise (what exports label with
    when given no names).

    Example:
        >>> default_class_names(2), default_class_names(1000)[1]
        (['class_0', 'class_1'], 'goldfish')
    """
    if classes == 1000:
        return [name for _, name in imagenet_classes()]
    return [f"class_{i}" for i in range(classes)]


def decode_predictions(preds, top: int = 5) -> list[list[tuple[str, str, float]]]:
    """Turns a batch of 1000-way predictions into ``(wordnet_id, name, score)`` lists.

    Classes are 0-based (TFDS order = sorted WordNet ids); the class index ships with the
    package, nothing is downloaded.

    Example:
        >>> p = np.zeros((1, 1000)); p[0, 1] = 1.0
        >>> decode_predictions(p, top=1)
        [[('n01443537', 'goldfish', 1.0)]]
    """
    preds = keras.ops.convert_to_numpy(preds)
    if preds.ndim != 2 or preds.shape[1] != 1000:
        raise ValueError(
            f"decode_predictions expects a batch of 1000-class predictions, shape (samples, "
            f"1000); got {preds.shape}."
        )
    classes = imagenet_classes()
    results = []
    for row in preds:
        best = np.argsort(row)[::-1][:top]
        results.append([(*classes[i], float(row[i])) for i in best])
    return results
