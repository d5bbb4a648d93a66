"""The package's own environment variables, read one way: a fixed set of choices, the first
one the default; anything else warns, naming the choices, and the caller then changes nothing.

Example:
    >>> import os
    >>> os.environ.pop("KERAS_REGNET_EXAMPLE", None)
    >>> environment_choice("KERAS_REGNET_EXAMPLE", ("on", "off"))
    'on'
"""

from __future__ import annotations

import os
import warnings


def environment_choice(variable: str, choices: tuple[str, ...]) -> str | None:
    """``variable``'s value among ``choices`` (case and spaces ignored); unset: ``choices[0]``;
    anything else warns and gives None (a typo of an opt-out must not opt in)."""
    value = os.environ.get(variable, choices[0]).strip().lower()
    if value in choices:
        return value
    listed = " or ".join(repr(choice) for choice in choices)
    warnings.warn(f"{variable}={value!r} is not a choice: use {listed}; leaving the setting as it was.",
                  stacklevel=3)
    return None
