"""The flags every benchmark shares, with each script's own defaults.

Example:
    >>> parser = timing_parser("Serving latency.", models=["RegNetX004"], repeats=5)
    >>> parser.parse_args([]).repeats
    5
    >>> check_models(parser, ["RegNetX-400MF"])  # builder names out; an unknown one: parser.error
    ['RegNetX004']
"""

from __future__ import annotations

import argparse

_FLAGS = {  # flag -> (type, help)
    "batch": (int, "images per timed call"),
    "size": (int, "input height and width"),
    "warmup": (int, "untimed calls first"),
    "repeats": (int, "timed calls; the median is reported"),
    "rounds": (int, "alternating rounds of every contender, each in its own process"),
}


def timing_parser(description: str, *, model: str | None = None, models: list[str] | None = None,
                  **defaults: int) -> argparse.ArgumentParser:
    """An ArgumentParser with ``--model`` or ``--models`` and the timing flags given defaults
    for (``batch``, ``size``, ``warmup``, ``repeats``, ``rounds``)."""
    parser = argparse.ArgumentParser(description=description.split("\n")[0])
    if model is not None:
        parser.add_argument("--model", default=model)
    if models is not None:
        parser.add_argument("--models", nargs="+", default=models)
    for name, default in defaults.items():
        kind, help_text = _FLAGS[name]
        parser.add_argument(f"--{name}", type=kind, default=default, help=help_text)
    return parser


def check_models(parser: argparse.ArgumentParser, names: list[str]) -> list[str]:
    """The builder names (``RegNetX004``) of ``names``, which may also be paper names
    (``RegNetX-400MF``) in any case; ``parser.error`` (usage and one line, exit status 2) for
    the first one that is not in the variants table, before a script builds or starts
    anything. For each script's parent process only: workers must not import keras_regnet (it
    changes TensorFlow's settings for the contenders that do not use it), and they get the
    builder names. Unchecked where Keras cannot load (a JAX-only GPU host without
    KERAS_BACKEND): the workers then say what is missing."""
    try:
        from keras_regnet.variants import get_variant
    except ImportError:
        return list(names)
    try:
        return [get_variant(name).name for name in names]
    except ValueError as error:
        parser.error(str(error))
