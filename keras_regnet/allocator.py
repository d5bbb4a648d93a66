"""Keep freed memory in the process instead of handing it back to the OS at every step.

glibc's ``malloc`` serves every request over 32 MiB (and, after a free, whatever crosses its
trim threshold) with fresh ``mmap`` pages and unmaps them on ``free``. A RegNet's largest
activations are over that size (RegNetX004, batch 32 at 224x224: 51 MiB after the stem), so
every forward pass pays the kernel to map and zero them again, page by page. PyTorch's CPU
tensors and part of TensorFlow's come straight from ``malloc``. Measured on a 2-core AMD EPYC
(AVX2), ``predict_on_batch`` at batch 32, 224x224, same machine, each run its own process:
RegNetX004 on PyTorch 48.0 -> 66.9 images/s, RegNetY032 on PyTorch 9.1 -> 16.1, RegNetX004
on TensorFlow 82.9 -> 87.9 and 90.5 -> 99.2; JAX (XLA keeps its own buffers) unchanged.

:func:`keep_freed_memory` tells glibc to serve large requests from its heap and to keep up to
1 GiB of freed memory at the heap's top, so a step reuses the last step's pages. It is what
jemalloc or tcmalloc (preloaded) give a PyTorch process, without a preload. ``import
keras_regnet`` calls it (the Keras side's loading); ``KERAS_REGNET_ALLOCATOR=system`` before the
import leaves glibc's defaults. The cost: a process keeps its peak heap rather than shrinking
between steps, as TensorFlow's and JAX's own allocators do.
"""

from __future__ import annotations

import ctypes
import platform

from keras_regnet.environment import environment_choice

ENVIRONMENT_VARIABLE = "KERAS_REGNET_ALLOCATOR"

# glibc's mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_KEPT_AT_TOP = 1 << 30  # bytes of freed memory at the heap's top kept before trimming


def keep_freed_memory() -> bool:
    """Tunes glibc's ``malloc`` to reuse freed memory (module docstring); True if it did.

    Does nothing (False) off glibc (macOS, musl, Windows) or with ``KERAS_REGNET_ALLOCATOR=system``
    (any other value than ``reuse``, the default, warns and also leaves glibc's defaults).

    Example:
        >>> isinstance(keep_freed_memory(), bool)
        True
    """
    if environment_choice(ENVIRONMENT_VARIABLE, ("reuse", "system")) != "reuse":
        return False
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    # mallopt returns 1 on success. No mmap for large requests: from the heap, kept when freed.
    return bool(libc.mallopt(_M_MMAP_MAX, 0)) and bool(libc.mallopt(_M_TRIM_THRESHOLD, _KEPT_AT_TOP))
