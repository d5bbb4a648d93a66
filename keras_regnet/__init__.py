"""keras_regnet: RegNetX / RegNetY ("Designing Network Design Spaces") for Keras 3.

The design core (specs, complexity, model table) imports without TensorFlow or Keras; the
Keras builders load on first use.

Example:
    >>> import keras_regnet
    >>> keras_regnet.complexity("RegNetX004")
    {'flops': 397678568, 'params': 5157512, 'acts': 3143272}
"""

from __future__ import annotations

import importlib
from typing import Any

from keras_regnet.design.complexity import count as _count
from keras_regnet.design.spec import AnyNetSpec, RegNetSpec
from keras_regnet.variants import VARIANTS, get_spec, list_models

__version__ = "0.1.0"


def complexity(spec_or_name: str | RegNetSpec | AnyNetSpec, resolution: int | tuple[int, int] = 224,
               classes: int = 1000, include_top: bool = True) -> dict[str, int]:
    """Exact flops (multiply-adds), params and activations by pycls's rules.

    Args:
        spec_or_name: a model name from ``list_models()`` or a spec.
        resolution: input size, an int or ``(height, width)``.
        classes: classes of the head.
        include_top: count the classifier head.

    Example:
        >>> complexity("RegNetX002")["flops"]
        199040872
    """
    spec = get_spec(spec_or_name) if isinstance(spec_or_name, str) else spec_or_name
    return _count(spec, resolution=resolution, classes=classes, include_top=include_top)


# Public names served lazily so that `import keras_regnet` (and keras_regnet.design) work
# without TensorFlow/Keras; the Keras side loads on first access.
_LAZY = {
    "RegNet": "keras_regnet.model",
    "feature_pyramid": "keras_regnet.model",
    "preprocess_input": "keras_regnet.applications",
    "decode_predictions": "keras_regnet.applications",
    "GroupedConv2D": "keras_regnet.layers",
    "list_weights": "keras_regnet.weights",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    if name in VARIANTS:
        return importlib.import_module("keras_regnet.applications").BUILDERS[name]
    raise AttributeError(f"module 'keras_regnet' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY) | set(VARIANTS))


__all__ = ["AnyNetSpec", "RegNetSpec", "complexity", "get_spec", "list_models",
           *_LAZY, *VARIANTS]
