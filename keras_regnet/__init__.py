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

import importlib.util as _importlib_util
import os as _os
import sys as _sys

from keras_regnet import keras_side as _keras_side
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

_keras_parts_loaded = False


def _load_keras_parts() -> None:
    """Binds the Keras side (:mod:`keras_regnet.keras_side`) as package attributes."""
    global _keras_parts_loaded
    if _keras_parts_loaded:
        return
    # Set first: importing the submodules looks their names up on the package (__getattr__).
    _keras_parts_loaded = True
    globals().update(_keras_side.load())


def _started_as_the_cli() -> bool:
    """True inside the ``keras-regnet`` command (or ``python -m keras_regnet.cli``) and this
    checkout's ``training/train.py``: ``list``, ``--help``, ``sweep sample`` and the trainer's
    flag checks need no Keras, and what does loads it itself (``cli.py``, the trainer)."""
    main = _sys.modules.get("__main__")
    main_file = getattr(main, "__file__", None) or ""
    if _os.path.basename(main_file).startswith("keras-regnet"):
        return True
    checkout = _os.path.dirname(_os.path.dirname(_os.path.abspath(__file__)))
    trainer = _os.path.join(checkout, "training", "train.py")
    if main_file and _os.path.abspath(main_file) == trainer:
        return True
    # `python [options] -m keras_regnet.cli`: the package is imported before __main__ is set.
    argv = getattr(_sys, "orig_argv", [])
    return any(a == "-m" and b == "keras_regnet.cli" for a, b in zip(argv, argv[1:]))


def _is_submodule(name: str) -> bool:
    here = _os.path.dirname(__file__)
    return _os.path.exists(_os.path.join(here, name + ".py")) or _os.path.isdir(_os.path.join(here, name))


def __getattr__(name: str):
    """The Keras side on first use, where the package was imported without it (the CLI).

    Not for submodule names: ``from keras_regnet import integrity`` asks for the attribute
    before importing the submodule, and must get just that module.
    """
    if not _keras_parts_loaded and _keras_installed and not name.startswith("__") and not _is_submodule(name):
        _load_keras_parts()
        if name in globals():
            return globals()[name]
    raise AttributeError(f"module 'keras_regnet' has no attribute {name!r}")


# Without Keras/TensorFlow installed, the pure design core above still works.
try:
    _keras_installed = _importlib_util.find_spec("keras") is not None
except ImportError:  # an import hook that refuses keras: as good as not installed
    _keras_installed = False
if _keras_installed and not _started_as_the_cli():
    _load_keras_parts()

__all__ = ["AnyNetSpec", "RegNetSpec", "complexity", "get_spec", "list_models", "RegNet",
           "DenseConv2D", "FusedBatchNorm", "FusibleAdd", "FusibleReLU", "FusibleZeroPadding2D",
           "GroupedConv2D", "PointwiseConv2D",
           "feature_pyramid", "fold_batch_norms", "decode_predictions",
           "preprocess_input", "list_weights", *VARIANTS]
