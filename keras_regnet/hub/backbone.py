"""``RegNetBackbone``: the RegNet body as a KerasHub ``FeaturePyramidBackbone``.

The graph is :func:`keras_regnet.model.features`, the same function the builders use, so the
layer names, and with them the weights, are the builders' (``stem_conv``, ``s1_b1_conv1``, ...).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import keras
from keras_hub.models import FeaturePyramidBackbone

from keras_regnet import model as architecture
from keras_regnet.design.spec import AnyNetSpec, RegNetSpec

SpecLike = str | RegNetSpec | AnyNetSpec | dict


def spec_to_config(spec: SpecLike) -> str | dict:
    """A JSON-able form of a spec: a variant's name, or ``{"RegNetSpec": {fields}}``.

    Example:
        >>> spec_to_config(RegNetSpec(w0=24, wa=24.48, wm=2.54, depth=22, group_width=16))["RegNetSpec"]["w0"]
        24
    """
    if isinstance(spec, (str, dict)):
        return spec
    if isinstance(spec, (RegNetSpec, AnyNetSpec)):
        fields = {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(spec).items()}
        return {type(spec).__name__: fields}
    raise TypeError(f"spec must be a model name, a RegNetSpec or an AnyNetSpec; got {type(spec).__name__}.")


def spec_from_config(config: SpecLike) -> str | RegNetSpec | AnyNetSpec:
    """The inverse of :func:`spec_to_config` (specs and names pass through)."""
    if not isinstance(config, dict):
        return config
    kinds = {"RegNetSpec": RegNetSpec, "AnyNetSpec": AnyNetSpec}
    if len(config) != 1 or next(iter(config)) not in kinds:
        raise ValueError(f"a spec config is {{'RegNetSpec': {{...}}}} or {{'AnyNetSpec': {{...}}}}; "
                         f"got {config!r}.")
    (kind, fields), = config.items()
    return kinds[kind](**fields)


@keras.saving.register_keras_serializable(package="keras_regnet")
class RegNetBackbone(FeaturePyramidBackbone):
    """RegNetX / RegNetY (or any AnyNet) without its head, for KerasHub.

    Takes ImageNet-normalised images (the preprocessor's :class:`RegNetImageConverter` does
    that) of any size of at least 32x32 and returns the stride-32 feature map.
    ``pyramid_outputs`` holds ``"P1"`` (stride 2, the stem) .. ``"P5"`` (stride 32).

    Args:
        spec: a model name (``"RegNetX004"``), a :class:`RegNetSpec`, an :class:`AnyNetSpec`,
            or the dict form ``get_config()`` stores for a custom spec.
        image_shape: ``(height, width, 3)``; ``None`` sizes accept any size.
        dtype: the dtype policy of every layer (``"mixed_float16"``, ``"bfloat16"``, ...).

    Example:
        >>> backbone = RegNetBackbone("RegNetX002")
        >>> backbone.pyramid_outputs["P5"].shape
        (None, None, None, 368)
    """

    def __init__(self, spec: SpecLike = "RegNetX002", image_shape: tuple = (None, None, 3),
                 dtype: Any = None, **kwargs):
        anynet, _ = architecture.resolve_spec(spec_from_config(spec))
        image_shape = architecture.resolve_input_shape(image_shape, None, include_top=False)
        # === Functional model ===
        inputs = keras.layers.Input(shape=image_shape, name="image")
        outputs, pyramid = architecture.features(inputs, anynet, dtype=dtype)
        super().__init__(inputs=inputs, outputs=outputs, dtype=dtype, **kwargs)
        # === Config ===
        self.spec = spec_to_config(spec)
        self.image_shape = tuple(image_shape)
        self.pyramid_outputs = pyramid

    def get_config(self) -> dict:
        config = super().get_config()
        config.update({"spec": self.spec, "image_shape": self.image_shape})
        return config
