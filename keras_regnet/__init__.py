"""keras_regnet: RegNetX / RegNetY ("Designing Network Design Spaces") for Keras 3.

``import keras_regnet`` is all a user needs: it registers the package's layers (so
``keras.saving.load_model`` reads any saved keras_regnet model) and exposes the builders,
``RegNet``, the weights registry and the submodules (``conversion``, ``export``, ``weights``,
``layers``, ...). Without Keras/TensorFlow installed, the design core alone still imports
(specs, exact complexity, design-space sampling and analysis): ``keras_regnet.design``.

Example:
    >>> import keras_regnet
    >>> keras_regnet.complexity("RegNetX004")
    {'flops': 397678568, 'params': 5157512, 'acts': 3143272}
"""

from __future__ import annotations

import os as _os

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


# TensorFlow computes the gradient of a grouped convolution on a CPU only with its oneDNN
# kernels, which it turns on by default only on some CPUs (AVX-512 ones); on others (AVX2 AMD
# EPYCs, for one) training would fail. Turn them on unless the user decided otherwise. Too late
# when TensorFlow is already imported: GroupedConv2D then falls back (see its docstring).
_os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")

try:
    import keras as _keras
except ImportError:  # no Keras/TensorFlow: the pure design core above still works
    _keras = None

if _keras is not None:
    from keras_regnet import (  # noqa: F401 (public submodules)
        applications,
        conversion,
        downloads,
        export,
        folding,
        layers,
        model,
        preprocessing,
        references,
        weight_table,
        weights,
    )
    from keras_regnet.applications import RegNet
    from keras_regnet.layers import FusedBatchNorm, GroupedConv2D, PointwiseConv2D
    from keras_regnet.folding import fold_batch_norms
    from keras_regnet.model import feature_pyramid
    from keras_regnet.preprocessing import decode_predictions, preprocess_input
    from keras_regnet.weight_table import list_weights

    # BEGIN GENERATED: builder imports (python -m keras_regnet.tables --write)
    from keras_regnet.applications import (  # noqa: F401 (public API)
        RegNetX002,
        RegNetX004,
        RegNetX006,
        RegNetX008,
        RegNetX016,
        RegNetX032,
        RegNetX040,
        RegNetX064,
        RegNetX080,
        RegNetX120,
        RegNetX160,
        RegNetX320,
        RegNetY002,
        RegNetY004,
        RegNetY006,
        RegNetY008,
        RegNetY016,
        RegNetY032,
        RegNetY040,
        RegNetY064,
        RegNetY080,
        RegNetY120,
        RegNetY160,
        RegNetY320,
        RegNetX004TV,
        RegNetY008TV,
        RegNetY080TV,
    )
    # END GENERATED: builder imports

    # KerasHub finds classes by their registered names, so registering RegNetBackbone & co.
    # at import is what makes keras_hub's generic from_preset() load RegNet presets.
    try:
        import keras_hub as _keras_hub  # noqa: F401
    except ImportError:  # the [hub] extra is not installed
        pass
    else:
        from keras_regnet import hub  # noqa: F401 (public submodule)

__all__ = ["AnyNetSpec", "RegNetSpec", "complexity", "get_spec", "list_models", "RegNet",
           "FusedBatchNorm", "GroupedConv2D", "PointwiseConv2D",
           "feature_pyramid", "fold_batch_norms", "decode_predictions",
           "preprocess_input", "list_weights", *VARIANTS]
