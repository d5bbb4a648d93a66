"""The trainer's errors its command line turns into one line: importable without TensorFlow, so
that the command line can name them before the training loop (and TensorFlow) loads."""

from __future__ import annotations


class NonFiniteLossError(FloatingPointError):
    """A training step's loss was NaN or infinite (exit status 1: the run diverged).

    Example:
        >>> raise NonFiniteLossError("loss nan at step 3 (epoch 1)")
        Traceback (most recent call last):
        ...
        keras_regnet.training.errors.NonFiniteLossError: loss nan at step 3 (epoch 1)
    """
