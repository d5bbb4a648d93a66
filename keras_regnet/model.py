"""The architecture: any spec or named variant -> a Keras functional model. Loads no weights.

Weights (tags, files, state dicts) are loaded one level up, in :mod:`keras_regnet.weights`;
the public ``RegNet(spec, weights=...)`` and the named builders live in
:mod:`keras_regnet.applications`.
"""

from __future__ import annotations

from typing import Any

import keras

from keras_regnet import layers as regnet_layers
from keras_regnet.design.spec import AnyNetSpec, RegNetSpec
from keras_regnet.preprocessing import IMAGENET_MEAN, IMAGENET_STD
from keras_regnet.torch_graph import call_layers_directly
from keras_regnet.torch_inference import mark_fusions
from keras_regnet.variants import get_variant

MIN_SIZE = 32  # five stride-2 stages
POOLINGS = (None, "avg", "max")


def resolve_spec(spec: str | RegNetSpec | AnyNetSpec) -> tuple[AnyNetSpec, str | None]:
    """(the AnyNet to build, the variant's name or None for a custom spec)."""
    if isinstance(spec, str):
        variant = get_variant(spec)
        return variant.spec.to_anynet(), variant.name
    if isinstance(spec, (RegNetSpec, AnyNetSpec)):
        return spec.to_anynet(), None
    raise TypeError(
        f"spec must be a model name (see keras_regnet.list_models()), a RegNetSpec or an "
        f"AnyNetSpec; got {type(spec).__name__}."
    )


def channels_first() -> bool:
    """Whether models are built channels-first (``keras.config.image_data_format()``)."""
    return regnet_layers.channel_axis() == 1


def resolve_input_shape(input_shape, input_tensor, include_top: bool) -> tuple:
    """The checked input shape in ``keras.config.image_data_format()``'s layout,
    ``(height, width, channels)`` or ``(channels, height, width)``: 224x224 RGB with the top,
    any size without."""
    first = channels_first()
    if input_shape is None and input_tensor is not None:
        input_shape = tuple(input_tensor.shape[1:])
    if input_shape is None:
        size = (224, 224) if include_top else (None, None)
        input_shape = (3, *size) if first else (*size, 3)
    input_shape = tuple(input_shape)
    layout = "(channels, height, width)" if first else "(height, width, channels)"
    if len(input_shape) != 3:
        raise ValueError(
            f"input_shape must be {layout} (keras.config.image_data_format() is "
            f"{keras.config.image_data_format()!r}), got {input_shape}. Use "
            f"{(3, None, None) if first else (None, None, 3)} for any image size."
        )
    c, h, w = input_shape if first else (input_shape[2], *input_shape[:2])
    for label, size in (("height", h), ("width", w)):
        if size is not None and size < MIN_SIZE:
            raise ValueError(
                f"input_shape {label} must be at least {MIN_SIZE} (the network downsamples by "
                f"32), got input_shape={input_shape}."
            )
    if c is None or c < 1:
        raise ValueError(f"input_shape needs a known channel count, got {input_shape}.")
    return input_shape


def input_channels(shape: tuple) -> int:
    """The channel count of an input shape from :func:`resolve_input_shape`."""
    return shape[0] if channels_first() else shape[-1]


def _check_head(pooling, classes: int) -> None:
    if pooling not in POOLINGS:
        raise ValueError(f"pooling must be one of None, 'avg', 'max'; got {pooling!r}.")
    if not isinstance(classes, int) or classes < 1:
        raise ValueError(f"classes must be a positive integer, got {classes!r}.")


def normalization_statistics(channels: int) -> tuple[list[float], list[float]]:
    """Per-channel (mean, variance) of pixels in [0, 255] that ``include_preprocessing`` uses.

    RGB: ImageNet's. One channel (grey): the average of the three, the statistics of a grey
    image whose channels are equal. Any other count: channel i takes RGB channel i mod 3's,
    as the stem's adapted filters repeat the RGB ones
    (:func:`keras_regnet.weights.adapt_stem_kernel`).

    Example:
        >>> [round(m, 2) for m in normalization_statistics(1)[0]]
        [114.5]
    """
    means = [255.0 * m for m in IMAGENET_MEAN]
    stds = [255.0 * s for s in IMAGENET_STD]
    if channels == 1:
        means, stds = [sum(means) / 3], [sum(stds) / 3]
    else:
        means, stds = [means[i % 3] for i in range(channels)], [stds[i % 3] for i in range(channels)]
    return means, [s * s for s in stds]


def features(x, anynet: AnyNetSpec, dtype=None) -> tuple[Any, dict[str, Any]]:
    """The stem and every block applied to ``x``: (last feature map, pyramid ``{"P1": ...}``).

    The one definition of the network's body, shared by :func:`build` and
    :class:`keras_regnet.hub.RegNetBackbone`; ``dtype`` is the layers' dtype policy.
    """
    x = regnet_layers.stem(x, anynet.stem_width, dtype)
    pyramid = {"P1": x}
    for block in anynet.blocks():
        x = regnet_layers.bottleneck_block(x, block, dtype)
        pyramid[f"P{block.stage + 1}"] = x  # the last block of each stage wins
    return x, pyramid


def build(spec: str | RegNetSpec | AnyNetSpec, include_top: bool = True,
          include_preprocessing: bool = True, input_tensor: Any = None, input_shape=None,
          pooling: str | None = None, classes: int = 1000,
          classifier_activation: str | None = "softmax", name: str | None = None) -> keras.Model:
    """The randomly initialised network; the arguments are :func:`keras_regnet.RegNet`'s.

    Example:
        >>> build("RegNetX002", input_shape=(64, 64, 3)).output_shape
        (None, 1000)
    """
    anynet, variant = resolve_spec(spec)
    shape = resolve_input_shape(input_shape, input_tensor, include_top)
    _check_head(pooling, classes)

    if input_tensor is None:
        inputs = keras.Input(shape=shape, name="image")
    elif keras.backend.is_keras_tensor(input_tensor):
        inputs = input_tensor
    else:
        inputs = keras.Input(tensor=input_tensor, shape=shape, name="image")
    x = inputs
    if include_preprocessing:
        mean, variance = normalization_statistics(input_channels(shape))
        x = regnet_layers.ImageNormalization(mean=mean, variance=variance, axis=regnet_layers.channel_axis(),
                                             name="preprocessing")(x)

    x, pyramid = features(x, anynet)
    if include_top:
        x = keras.layers.GlobalAveragePooling2D(name="head_pool")(x)
        x = keras.layers.Dense(
            classes,
            activation=classifier_activation,
            kernel_initializer=keras.initializers.RandomNormal(stddev=0.01),
            bias_initializer="zeros",
            name="predictions",
        )(x)
    elif pooling == "avg":
        x = keras.layers.GlobalAveragePooling2D(name="head_pool")(x)
    elif pooling == "max":
        x = keras.layers.GlobalMaxPooling2D(name="head_pool")(x)

    model_inputs = keras.utils.get_source_inputs(input_tensor) if input_tensor is not None else inputs
    model = keras.Model(model_inputs, x, name=name or (variant or "regnet").lower())
    model.pyramid_outputs = pyramid
    if keras.backend.backend() == "torch":
        mark_fusions(model)  # conv, batch norm, ReLU ... fused while it infers (torch_inference.py)
        call_layers_directly(model)  # and its layers called without Keras's per-call work (torch_graph.py)
    return model


def pyramid_layer_names(model: keras.Model) -> dict[str, str]:
    """Maps ``P1`` .. ``P{n+1}`` to the names of the layers whose outputs form the pyramid.

    Derived from the stable layer names, so it also works on a model loaded from a file.
    """
    names = {"P1": "stem_relu"}
    for layer in model.layers:
        parts = layer.name.split("_")
        if len(parts) == 3 and parts[2] == "out" and parts[0].startswith("s"):
            stage = int(parts[0][1:])
            names[f"P{stage + 1}"] = layer.name  # blocks come in order: the last one stays
    if "P2" not in names or not any(layer.name == "stem_relu" for layer in model.layers):
        raise ValueError(f"{model.name} is not a keras_regnet model (no stem_relu / s*_b*_out layers).")
    return names


def feature_pyramid(model: keras.Model) -> keras.Model:
    """A multi-output model giving the pyramid features ``{"P1": ..., "P5": ...}``.

    Works on any keras_regnet model, built or loaded. The returned model has attributes
    ``channels`` and ``strides`` (dicts keyed like its outputs).

    Example:
        >>> backbone = build("RegNetX002", include_top=False)
        >>> fpn = feature_pyramid(backbone)
        >>> fpn.strides["P5"], fpn.channels["P5"]
        (32, 368)
    """
    names = pyramid_layer_names(model)
    outputs = {level: model.get_layer(layer).output for level, layer in names.items()}
    pyramid = keras.Model(model.inputs, outputs, name=f"{model.name}_pyramid")
    if keras.backend.backend() == "torch":
        call_layers_directly(pyramid)  # its layers called without Keras's per-call work (torch_graph.py)
    axis = regnet_layers.channel_axis()
    pyramid.channels = {level: int(t.shape[axis]) for level, t in outputs.items()}
    pyramid.strides = {level: 2 ** int(level[1:]) for level in outputs}
    return pyramid
