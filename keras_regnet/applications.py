"""keras.applications-style builders, generated from the variants table, and I/O helpers."""

from __future__ import annotations

import functools
import json
import os
from typing import Any, Callable

import keras
import numpy as np

from keras_regnet.design.complexity import count
from keras_regnet.model import IMAGENET_MEAN, IMAGENET_STD, RegNet
from keras_regnet.variants import VARIANTS, Variant

_BUILDER_DOC = """Builds {paper_name} ({name}): {flops:.2f} GFLOPs (multiply-adds), {params:.1f}M \
parameters at 224x224.

Design-space point: w0={spec.w0}, wa={spec.wa}, wm={spec.wm}, depth={spec.depth}, \
group width={spec.group_width}, SE ratio={spec.se_ratio}, rounding={spec.rounding!r}.
Stage widths {widths}, depths {depths}.

Args:
    include_top: whether to end with global pooling and the 1000-way (or ``classes``) dense.
    include_preprocessing: the model takes RGB in [0, 255] and normalises it itself. With
        ``False`` feed ``keras_regnet.preprocess_input(images)``.
    weights: ``"imagenet"``, ``None`` (random init) or a path to a ``.weights.h5`` file.
    input_tensor: optional Keras tensor to use as input.
    input_shape: ``(height, width, 3)``, any size >= 32; ``(None, None, 3)`` without the top.
    pooling: without the top: ``None``, ``"avg"`` or ``"max"``.
    classes: number of classes (1000 with ImageNet weights and the top).
    classifier_activation: activation of the top layer; ``None`` returns logits.
    name: model name (layer names never depend on it).

Returns:
    A ``keras.Model`` with a ``pyramid_outputs`` dict (P1..P5).

Example:
    >>> model = keras_regnet.{name}(include_top=False, weights=None)
"""


def _make_builder(variant: Variant) -> Callable[..., keras.Model]:
    def builder(
        include_top: bool = True,
        include_preprocessing: bool = True,
        weights: Any = "imagenet",
        input_tensor: Any = None,
        input_shape: tuple | None = None,
        pooling: str | None = None,
        classes: int = 1000,
        classifier_activation: str | None = "softmax",
        name: str | None = None,
    ) -> keras.Model:
        return RegNet(
            variant.name,
            include_top=include_top,
            include_preprocessing=include_preprocessing,
            weights=weights,
            input_tensor=input_tensor,
            input_shape=input_shape,
            pooling=pooling,
            classes=classes,
            classifier_activation=classifier_activation,
            name=name,
        )

    cx = count(variant.spec)
    builder.__name__ = builder.__qualname__ = variant.name
    builder.__doc__ = _BUILDER_DOC.format(
        name=variant.name,
        paper_name=variant.paper_name,
        flops=cx["flops"] / 1e9,
        params=cx["params"] / 1e6,
        spec=variant.spec,
        widths=list(variant.spec.widths),
        depths=list(variant.spec.depths),
    )
    return builder


BUILDERS: dict[str, Callable[..., keras.Model]] = {n: _make_builder(v) for n, v in VARIANTS.items()}


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
    """The 1000 ImageNet-1k classes as ``(wordnet_id, name)``, index = 0-based class id."""
    path = os.path.join(os.path.dirname(__file__), "data", "imagenet_classes.json")
    with open(path, encoding="utf-8") as f:
        return [(wnid, name) for wnid, name, _ in json.load(f)]


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
