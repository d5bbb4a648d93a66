"""The Keras side of the package: its layers, builders and KerasHub classes.

:func:`load` imports them, which registers the layers with Keras (``keras.saving.load_model``
finds them by name) and, with KerasHub installed, the RegNet classes its ``from_preset`` looks
up; it tunes glibc's malloc to reuse freed memory (:mod:`keras_regnet.allocator`) and, on JAX,
XLA's CPU convolutions (:mod:`keras_regnet.xla_cpu`). ``import
keras_regnet`` calls it at once; the ``keras-regnet`` command only for the
commands that need Keras, so that ``list`` and ``--help`` start without TensorFlow.
"""

from __future__ import annotations

import functools


@functools.cache
def load() -> dict[str, object]:
    """Imports the Keras side; returns its public names (builders, layers, submodules)."""
    from keras_regnet.allocator import keep_freed_memory, keep_xla_buffers

    tuned = keep_freed_memory()  # before any model runs: large activations reuse freed pages (allocator.py)
    import keras

    if keras.backend.backend() == "jax":
        from keras_regnet.xla_cpu import prefer_eigen_convolutions

        # Both before JAX opens its backend: its threads and flags are set then.
        if tuned:
            keep_xla_buffers()  # XLA's temporary buffers reused between calls (allocator.py)
        prefer_eigen_convolutions()  # XLA's CPU convolutions on Eigen (xla_cpu.py)
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
    from keras_regnet.applications import RegNet  # noqa: F401
    from keras_regnet.folding import fold_batch_norms  # noqa: F401
    from keras_regnet.layers import (  # noqa: F401
        DenseConv2D,
        FusedBatchNorm,
        FusibleAdd,
        FusibleReLU,
        FusibleZeroPadding2D,
        GroupedConv2D,
        PointwiseConv2D,
    )
    from keras_regnet.model import feature_pyramid  # noqa: F401
    from keras_regnet.preprocessing import decode_predictions, preprocess_input  # noqa: F401
    from keras_regnet.weight_table import list_weights  # noqa: F401

    # isort: split
    # BEGIN GENERATED: builder imports (python -m keras_regnet.tables --write)
    from keras_regnet.applications import (  # noqa: F401 (public API)
        RegNetX002,
        RegNetX004,
        RegNetX004TV,
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
        RegNetY008TV,
        RegNetY016,
        RegNetY032,
        RegNetY040,
        RegNetY064,
        RegNetY080,
        RegNetY080TV,
        RegNetY120,
        RegNetY160,
        RegNetY320,
    )
    # END GENERATED: builder imports

    names = dict(locals())
    try:
        import keras_hub  # noqa: F401
    except ImportError:  # the [hub] extra is not installed
        pass
    else:
        from keras_regnet import hub

        names["hub"] = hub
    return names
