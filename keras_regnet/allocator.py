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
between steps, as TensorFlow's own allocator does.

On JAX, :func:`keep_xla_buffers` goes further. XLA's CPU runtime allocates an executable's
temporary buffer with ``malloc`` from its worker threads, once per call: 3.4 GB for a RegNetY032
train step at batch 32. glibc gives each thread an arena of its own, and an arena other than the
main one serves a request larger than its 64 MiB heaps with fresh ``mmap`` pages whatever
``M_MMAP_MAX`` says, unmapped again on ``free``: ~960,000 page faults per step. With every thread
on the main arena and no trimming, the step reuses the last step's buffer (0 faults). Measured on
a 2-core AMD EPYC, RegNetY032 training on JAX beside a TensorFlow and a PyTorch process (the
benchmark's interleaved run, where faults cost most): 2.0-2.4 -> 3.4 images/s.
"""

from __future__ import annotations

import ctypes
import platform

from keras_regnet.environment import environment_choice

ENVIRONMENT_VARIABLE = "KERAS_REGNET_ALLOCATOR"

# glibc's mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_M_ARENA_MAX = -8
_NEVER = -1  # M_TRIM_THRESHOLD -1: never trim
_KEPT_AT_TOP = 1 << 30  # bytes of freed memory at the heap's top kept before trimming


def keep_freed_memory() -> bool:
    """Tunes glibc's ``malloc`` to reuse freed memory (module docstring); True if it did.

    Does nothing (False) off glibc (macOS, musl, Windows) or with ``KERAS_REGNET_ALLOCATOR=system``
    (any other value than ``reuse``, the default, warns and also leaves glibc's defaults).

    Example:
        >>> isinstance(keep_freed_memory(), bool)
        True
    """
    libc = _tunable_glibc()
    # mallopt returns 1 on success. No mmap for large requests: from the heap, kept when freed.
    return libc is not None and bool(libc.mallopt(_M_MMAP_MAX, 0)) and bool(
        libc.mallopt(_M_TRIM_THRESHOLD, _KEPT_AT_TOP))


def keep_xla_buffers() -> bool:
    """After :func:`keep_freed_memory` (which stops large requests from being mapped): every
    thread allocates from glibc's main arena and the heap is never trimmed, so XLA's per-call
    temporary buffers reuse the last call's pages (module docstring); True if it did. Same
    conditions and opt-out as :func:`keep_freed_memory`. Only threads that have not yet
    allocated are moved: call it before JAX opens its backend.

    One arena means one lock for every thread's ``malloc``; XLA's CPU runtime allocates rarely
    (a few large buffers per call), TensorFlow and PyTorch often, so this is for JAX only.

    Example (opted out, so that the example leaves this process's malloc alone):
        >>> import os
        >>> os.environ[ENVIRONMENT_VARIABLE] = "system"
        >>> keep_xla_buffers()
        False
        >>> del os.environ[ENVIRONMENT_VARIABLE]
    """
    libc = _tunable_glibc()
    return libc is not None and bool(libc.mallopt(_M_ARENA_MAX, 1)) and bool(
        libc.mallopt(_M_TRIM_THRESHOLD, _NEVER))


def _tunable_glibc() -> ctypes.CDLL | None:
    """glibc, when it is this process's C library and the user has not opted out; else None."""
    if environment_choice(ENVIRONMENT_VARIABLE, ("reuse", "system")) != "reuse":
        return None
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    try:
        return ctypes.CDLL("libc.so.6")
    except OSError:
        return None
