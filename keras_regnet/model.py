"""``RegNet(spec, ...)``: builds a Keras functional model from any spec or named variant."""

from __future__ import annotations

import os
from typing import Any

import keras

from keras_regnet import layers as regnet_layers
from keras_regnet.design.spec import AnyNetSpec, RegNetSpec
from keras_regnet.variants import get_variant

# ImageNet statistics of RGB images scaled to [0, 1] (what the reference weights expect).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
MIN_SIZE = 32  # five stride-2 stages
POOLINGS = (None, "avg", "max")
WEIGHT_FILE_SUFFIXES = (".weights.h5", ".safetensors", ".pyth", ".pth", ".pt")


def _resolve_spec(spec: str | RegNetSpec | AnyNetSpec) -> tuple[AnyNetSpec, str | None]:
    if isinstance(spec, str):
        variant = get_variant(spec)
        return variant.spec.to_anynet(), variant.name
    if isinstance(spec, (RegNetSpec, AnyNetSpec)):
        return spec.to_anynet(), None
    raise TypeError(
        f"spec must be a model name (see keras_regnet.list_models()), a RegNetSpec or an "
        f"AnyNetSpec; got {type(spec).__name__}."
    )


def _input_shape(input_shape, input_tensor, include_top: bool) -> tuple:
    if input_shape is None and input_tensor is not None:
        input_shape = tuple(input_tensor.shape[1:])
    if input_shape is None:
        input_shape = (224, 224, 3) if include_top else (None, None, 3)
    input_shape = tuple(input_shape)
    if len(input_shape) != 3:
        raise ValueError(
            f"input_shape must be (height, width, channels), got {input_shape}. "
            f"Use (None, None, 3) for any image size."
        )
    h, w, c = input_shape
    for label, size in (("height", h), ("width", w)):
        if size is not None and size < MIN_SIZE:
            raise ValueError(
                f"input_shape {label} must be at least {MIN_SIZE} (the network downsamples by "
                f"32), got input_shape={input_shape}."
            )
    if c is None or c < 1:
        raise ValueError(f"input_shape needs a known channel count, got {input_shape}.")
    return input_shape


def _validate(weights, include_preprocessing: bool, pooling, classes: int, include_top: bool,
              channels: int, variant: str | None) -> None:
    if pooling not in POOLINGS:
        raise ValueError(f"pooling must be one of None, 'avg', 'max'; got {pooling!r}.")
    if not isinstance(classes, int) or classes < 1:
        raise ValueError(f"classes must be a positive integer, got {classes!r}.")
    pretrained = _is_pretrained_tag(weights)
    if pretrained and include_top and classes != 1000:
        raise ValueError(
            f"weights={weights!r} with include_top=True has 1000 classes, got classes={classes}. "
            f"For another class count use include_top=False and add your own head, or "
            f"weights=None."
        )
    if weights is not None and channels != 3:
        raise ValueError(
            f"Pretrained weights need 3 input channels (RGB), got input_shape with {channels}. "
            f"Use weights=None to train a model with {channels} channels."
        )
    if include_preprocessing and channels != 3:
        raise ValueError(
            f"include_preprocessing=True normalises RGB images, but the input has {channels} "
            f"channels. Pass include_preprocessing=False and normalise the input yourself."
        )
    if pretrained and variant is None:
        raise ValueError(
            f"weights={weights!r} needs a named model (e.g. RegNet('RegNetX004') or "
            "keras_regnet.RegNetX004()); a custom spec has no pretrained weights. "
            "Use weights=None or a path to a weights file."
        )
    if pretrained:
        from keras_regnet.weights import get_weight_set

        get_weight_set(variant, weights)  # a clear error for a tag this model lacks
    elif weights is not None:
        path = os.fspath(weights)
        if not path.endswith(WEIGHT_FILE_SUFFIXES):
            raise ValueError(
                f"weights must be None, 'imagenet', a weight tag (keras_regnet.list_weights()) "
                f"or a path to a {', '.join(WEIGHT_FILE_SUFFIXES)} file; got {weights!r}."
            )
        if not os.path.exists(path):
            raise FileNotFoundError(f"weights file {path!r} does not exist.")


def _is_pretrained_tag(weights) -> bool:
    if not isinstance(weights, str) or weights.endswith(WEIGHT_FILE_SUFFIXES):
        return False
    from keras_regnet.weights import is_weight_tag

    return is_weight_tag(weights)


def load_weights_into(model: keras.Model, weights, variant: str | None) -> None:
    """Loads a weight tag (``variant`` names the model) or a weights/checkpoint file."""
    if weights is None:
        return
    from keras_regnet import weights as registry

    if _is_pretrained_tag(weights):
        registry.load_keras_weights(model, registry.fetch_converted(variant, weights))
        return
    path = os.fspath(weights)
    if path.endswith(".weights.h5"):
        registry.load_keras_weights(model, path)
        return
    from keras_regnet import conversion

    state = conversion.read_checkpoint(path)
    conversion.load_torch_state_dict(model, state, conversion.detect_source(state))


def RegNet(
    spec: str | RegNetSpec | AnyNetSpec,
    include_top: bool = True,
    include_preprocessing: bool = True,
    weights: str | os.PathLike | None = None,
    input_tensor: Any = None,
    input_shape: tuple | None = None,
    pooling: str | None = None,
    classes: int = 1000,
    classifier_activation: str | None = "softmax",
    name: str | None = None,
) -> keras.Model:
    """Builds a RegNet (or any AnyNet) as a Keras functional model.

    Args:
        spec: a model name (``"RegNetY032"``), a :class:`RegNetSpec` or an :class:`AnyNetSpec`.
        include_top: whether to end with global pooling and the classification layer.
        include_preprocessing: whether the model takes RGB in [0, 255] and normalises it with
            the ImageNet mean/std itself. With ``False``, feed
            ``keras_regnet.preprocess_input(images)``.
        weights: ``None``, ``"imagenet"`` (named models only) or a ``.weights.h5`` path.
        input_tensor: optional Keras tensor to use as the model's input.
        input_shape: ``(height, width, 3)``; defaults to 224x224 with the top and to
            ``(None, None, 3)`` without. Sizes must be at least 32.
        pooling: without the top, ``None`` (4D features), ``"avg"`` or ``"max"``.
        classes: number of classes of the top.
        classifier_activation: activation of the top (``None`` returns logits).
        name: model name; layer names never depend on it.

    Returns:
        A ``keras.Model``. ``model.pyramid_outputs`` maps ``"P1"`` (stride 2, the stem) ..
        ``"P5"`` (stride 32) to the feature tensors.

    Example:
        >>> model = RegNet("RegNetX002", weights=None, input_shape=(64, 64, 3))
        >>> model.output_shape
        (None, 1000)
    """
    anynet, variant = _resolve_spec(spec)
    shape = _input_shape(input_shape, input_tensor, include_top)
    _validate(weights, include_preprocessing, pooling, classes, include_top, shape[-1], variant)

    if input_tensor is None:
        inputs = keras.Input(shape=shape, name="image")
    elif keras.backend.is_keras_tensor(input_tensor):
        inputs = input_tensor
    else:
        inputs = keras.Input(tensor=input_tensor, shape=shape, name="image")
    x = inputs
    if include_preprocessing:
        x = keras.layers.Normalization(
            mean=[255.0 * m for m in IMAGENET_MEAN],
            variance=[(255.0 * s) ** 2 for s in IMAGENET_STD],
            name="preprocessing",
        )(x)

    x = regnet_layers.stem(x, anynet.stem_width)
    pyramid = {"P1": x}
    for block in anynet.blocks():
        x = regnet_layers.bottleneck_block(x, block)
        pyramid[f"P{block.stage + 1}"] = x  # the last block of each stage wins

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
    load_weights_into(model, weights, variant)
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
        >>> backbone = RegNet("RegNetX002", include_top=False, weights=None)
        >>> fpn = feature_pyramid(backbone)
        >>> fpn.strides["P5"], fpn.channels["P5"]
        (32, 368)
    """
    names = pyramid_layer_names(model)
    outputs = {level: model.get_layer(layer).output for level, layer in names.items()}
    pyramid = keras.Model(model.inputs, outputs, name=f"{model.name}_pyramid")
    pyramid.channels = {level: int(t.shape[-1]) for level, t in outputs.items()}
    pyramid.strides = {level: 2 ** int(level[1:]) for level in outputs}
    return pyramid
