"""The public builders: ``RegNet(spec, weights=...)`` and one function per named model.

``keras_regnet.RegNetX002`` ... ``RegNetY320`` follow the ``keras.applications`` keyword
contract. Each is a real definition in this file (an IDE's "go to definition" lands on it),
generated from :mod:`keras_regnet.variants` by ``python -m keras_regnet.tables --write``; a
test fails when the generated block and the table disagree.
"""

from __future__ import annotations

import functools
import inspect
import os
from typing import Any, Callable, Concatenate, ParamSpec

import keras

from keras_regnet import model as architecture
from keras_regnet import weights as weight_loading
from keras_regnet.design.complexity import count
from keras_regnet.design.spec import AnyNetSpec, RegNetSpec
from keras_regnet.variants import get_variant
from keras_regnet.weight_choice import ResolvedWeights, resolve_weights

_P = ParamSpec("_P")


def RegNet(
    spec: str | RegNetSpec | AnyNetSpec,
    include_top: bool = True,
    include_preprocessing: bool = True,
    weights: str | os.PathLike | ResolvedWeights | None = None,
    input_tensor: Any = None,
    input_shape: tuple | None = None,
    pooling: str | None = None,
    classes: int = 1000,
    classifier_activation: str | None = "softmax",
    name: str | None = None,
) -> keras.Model:
    """Builds a RegNet (or any AnyNet) as a Keras functional model, optionally pretrained.

    Args:
        spec: a model name (``"RegNetY032"``), a :class:`RegNetSpec` or an :class:`AnyNetSpec`.
        include_top: whether to end with global pooling and the classification layer.
        include_preprocessing: whether the model takes RGB in [0, 255] and normalises it with
            the ImageNet mean/std itself. With ``False``, feed
            ``keras_regnet.preprocess_input(images)``.
        weights: ``None`` (random init), a weight tag of a named model (``"imagenet"``,
            ``"tv2_in1k"``, ...: ``keras_regnet.list_weights()``), or a path to a
            ``.weights.h5``, ``.safetensors``, ``.pyth`` or ``.pth`` file (pycls, timm and
            torchvision checkpoints are converted on the fly), or what
            ``keras_regnet.weight_choice.resolve_weights`` returned for it.
        input_tensor: optional Keras tensor to use as the model's input.
        input_shape: ``(height, width, channels)``, or ``(channels, height, width)`` when
            ``keras.config.image_data_format()`` is ``"channels_first"``; defaults to 224x224
            RGB with the top and to any size without. Sizes must be at least 32. Pretrained
            weights take any channel count: the stem's RGB filters are summed for one channel,
            repeated and scaled by 3 / N for N (``keras_regnet.weights.adapt_stem_kernel``).
        pooling: without the top, ``None`` (4D features), ``"avg"`` or ``"max"``.
        classes: number of classes of the top (1000 with pretrained weights and the top).
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
    _, variant = architecture.resolve_spec(spec)
    shape = architecture.resolve_input_shape(input_shape, input_tensor, include_top)
    # Every argument is checked before anything is built or downloaded.
    resolved = resolve_weights(weights, variant)
    weight_loading.check_weights_argument(resolved, include_top, classes)
    model = architecture.build(spec, include_top, include_preprocessing, input_tensor, shape,
                               pooling, classes, classifier_activation, name)
    if resolved.pretrained and architecture.input_channels(shape) != 3:
        rgb_shape = (3, *shape[1:]) if architecture.channels_first() else (*shape[:2], 3)
        rgb_model = architecture.build(spec, include_top, include_preprocessing, None, rgb_shape,
                                       pooling, classes, classifier_activation)
        weight_loading.load_weights_adapting_stem(model, resolved, rgb_model)
    else:
        weight_loading.load_weights(model, resolved)
    return model


_BUILDER_DOC = """Builds {paper_name}: {flops:.2f} GFLOPs (multiply-adds), {params:.1f}M \
parameters at 224x224.

Design-space point: w0={spec.w0}, wa={spec.wa}, wm={spec.wm}, depth={spec.depth}, \
group width={spec.group_width}, SE ratio={spec.se_ratio}, rounding={spec.rounding!r}.
Stage widths {widths}, depths {depths}.

Arguments are :func:`keras_regnet.RegNet`'s without ``spec``; ``weights`` defaults to
``"imagenet"`` (pass ``None`` for a random init).

Example:
    >>> model = keras_regnet.{name}(include_top=False, weights=None)  # doctest: +SKIP
"""


def _named_builder(regnet: Callable[Concatenate[Any, _P], keras.Model],
                   variant_name: str) -> Callable[_P, keras.Model]:
    """``RegNet`` bound to one variant, with ``weights="imagenet"`` as default (typed as
    ``RegNet`` without its first argument, so IDEs show the real keywords)."""
    variant = get_variant(variant_name)
    signature = inspect.signature(regnet)
    parameters = [p.replace(default="imagenet") if p.name == "weights" else p
                  for p in list(signature.parameters.values())[1:]]
    signature = signature.replace(parameters=parameters)

    @functools.wraps(regnet)
    def builder(*args: _P.args, **kwargs: _P.kwargs) -> keras.Model:
        bound = signature.bind(*args, **kwargs)
        bound.apply_defaults()
        return regnet(variant.name, **bound.arguments)

    cx = count(variant.spec)
    builder.__name__ = builder.__qualname__ = variant.name
    builder.__signature__ = signature
    builder.__doc__ = _BUILDER_DOC.format(
        name=variant.name, paper_name=variant.paper_name, flops=cx["flops"] / 1e9,
        params=cx["params"] / 1e6, spec=variant.spec, widths=list(variant.spec.widths),
        depths=list(variant.spec.depths))
    return builder


# BEGIN GENERATED: builders (python -m keras_regnet.tables --write)
RegNetX002 = _named_builder(RegNet, "RegNetX002")
RegNetX004 = _named_builder(RegNet, "RegNetX004")
RegNetX006 = _named_builder(RegNet, "RegNetX006")
RegNetX008 = _named_builder(RegNet, "RegNetX008")
RegNetX016 = _named_builder(RegNet, "RegNetX016")
RegNetX032 = _named_builder(RegNet, "RegNetX032")
RegNetX040 = _named_builder(RegNet, "RegNetX040")
RegNetX064 = _named_builder(RegNet, "RegNetX064")
RegNetX080 = _named_builder(RegNet, "RegNetX080")
RegNetX120 = _named_builder(RegNet, "RegNetX120")
RegNetX160 = _named_builder(RegNet, "RegNetX160")
RegNetX320 = _named_builder(RegNet, "RegNetX320")
RegNetY002 = _named_builder(RegNet, "RegNetY002")
RegNetY004 = _named_builder(RegNet, "RegNetY004")
RegNetY006 = _named_builder(RegNet, "RegNetY006")
RegNetY008 = _named_builder(RegNet, "RegNetY008")
RegNetY016 = _named_builder(RegNet, "RegNetY016")
RegNetY032 = _named_builder(RegNet, "RegNetY032")
RegNetY040 = _named_builder(RegNet, "RegNetY040")
RegNetY064 = _named_builder(RegNet, "RegNetY064")
RegNetY080 = _named_builder(RegNet, "RegNetY080")
RegNetY120 = _named_builder(RegNet, "RegNetY120")
RegNetY160 = _named_builder(RegNet, "RegNetY160")
RegNetY320 = _named_builder(RegNet, "RegNetY320")
RegNetX004TV = _named_builder(RegNet, "RegNetX004TV")
RegNetY008TV = _named_builder(RegNet, "RegNetY008TV")
RegNetY080TV = _named_builder(RegNet, "RegNetY080TV")
# END GENERATED: builders
