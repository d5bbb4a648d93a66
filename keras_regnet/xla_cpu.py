"""Run JAX's CPU convolutions on XLA's Eigen kernels rather than YNNPACK's.

jaxlib 0.10 hands convolutions on a CPU to YNNPACK, which runs a RegNet's per-group
convolutions (:func:`keras_regnet.conv_ops.grouped_conv`) and their gradients slower than
XLA's own Eigen kernels. Measured on a 2-core AMD EPYC (AVX2), batch 32 at 224x224, each
setting in its own process: RegNetY032's grouped 3x3 convs, forward + backward summed over the
model, 2817 -> 1960 ms; whole model, Keras on JAX, inference 11.5 -> 15.3 images/s and training
3.06 -> 3.85; RegNetX004 training 18.9 -> 23.0 (inference unchanged within noise). YNNPACK
keeps the matmuls (our 1x1 convs), where it is fast.

:func:`prefer_eigen_convolutions` appends ``--xla_cpu_experimental_ynn_fusion_type=
-individual_convolution`` to ``XLA_FLAGS``. XLA reads that variable once, when JAX first
opens a backend, and aborts on a flag it does not know, so this is done only before that, only
for the jaxlib versions it was measured on, and never over a YNNPACK setting of the user's own.
``import keras_regnet`` calls it on the JAX backend; ``KERAS_REGNET_XLA_CONVOLUTIONS=ynnpack``
before the import keeps jaxlib's default.
"""

from __future__ import annotations

import os
import sys

from keras_regnet.environment import environment_choice

ENVIRONMENT_VARIABLE = "KERAS_REGNET_XLA_CONVOLUTIONS"
FLAG = "--xla_cpu_experimental_ynn_fusion_type=-individual_convolution"
# jaxlib releases that know the flag and were measured with it (major.minor).
MEASURED_JAXLIB = ("0.10",)


def prefer_eigen_convolutions() -> bool:
    """Adds :data:`FLAG` to ``XLA_FLAGS`` where that is safe (module docstring); True if it did.
    An unknown ``KERAS_REGNET_XLA_CONVOLUTIONS`` value warns and leaves the flags alone.

    Example:
        >>> isinstance(prefer_eigen_convolutions(), bool)
        True
    """
    if environment_choice(ENVIRONMENT_VARIABLE, ("eigen", "ynnpack")) != "eigen":  # ynnpack, or a typo
        return False
    flags = os.environ.get("XLA_FLAGS", "")
    if "ynn_fusion_type" in flags or not _jaxlib_measured() or _jax_backend_started():
        return False
    os.environ["XLA_FLAGS"] = f"{flags} {FLAG}".strip()
    return True


def _jaxlib_measured() -> bool:
    from importlib import metadata

    try:
        version = metadata.version("jaxlib")
    except metadata.PackageNotFoundError:
        return False
    return ".".join(version.split(".")[:2]) in MEASURED_JAXLIB


def _jax_backend_started() -> bool:
    """Whether JAX has opened a backend (XLA has read its flags): then setting them is too late."""
    if "jax" not in sys.modules:
        return False
    try:
        from jax._src import xla_bridge
    except ImportError:  # a JAX without that module: assume the worst
        return True
    started = getattr(xla_bridge, "backends_are_initialized", None)
    return True if started is None else bool(started())
