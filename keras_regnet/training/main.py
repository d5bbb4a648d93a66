"""The trainer's command line: ``training/train.py`` and ``keras-regnet train`` both run it.

Its flags are generated from :class:`~keras_regnet.training.config.TrainConfig`'s fields (type,
default, help and choices), so the command line and the library cannot drift apart. Without
``--data_dir`` / ``--tfds_name`` it trains on the embedded digits demo, whose defaults
(:data:`~keras_regnet.training.config.DEMO_DEFAULTS`) each flag's help names.
"""

from __future__ import annotations

import dataclasses
import logging as logging_lib
import os
import sys
import types
import typing

from absl import app, flags
from absl import logging as absl_logging

from keras_regnet.training.config import DEMO_DEFAULTS, TrainConfig

FLAGS = flags.FLAGS
_DEFINE = {int: flags.DEFINE_integer, float: flags.DEFINE_float, str: flags.DEFINE_string,
           bool: flags.DEFINE_bool}


def _flag_type(field: dataclasses.Field) -> type:
    hint = typing.get_type_hints(TrainConfig)[field.name]
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        hint = next(a for a in typing.get_args(hint) if a is not type(None))  # X | None -> X
    return hint


def _help(field: dataclasses.Field) -> str:
    text = field.metadata["help"]
    if field.default is not None:
        text += f" (default {field.default!r}"
        text += f"; demo {DEMO_DEFAULTS[field.name]!r})" if field.name in DEMO_DEFAULTS else ")"
    return text


def define_flags() -> None:
    """One flag per TrainConfig field. Every flag defaults to None, i.e. "not given", so that
    the demo's defaults and the library's can both apply."""
    if "model" in FLAGS:
        return
    for field in dataclasses.fields(TrainConfig):
        choices = field.metadata["choices"]
        if choices:
            flags.DEFINE_enum(field.name, None, list(choices), _help(field))
        else:
            _DEFINE[_flag_type(field)](field.name, None, _help(field))
    flags.DEFINE_bool("benchmark_input", False, "only measure the input pipeline's images/s")
    # absl's --help lists the main program's key flags: these are the trainer's.
    for name in [f.name for f in dataclasses.fields(TrainConfig)] + ["benchmark_input"]:
        FLAGS.register_key_flag_for_module(sys.argv[0], FLAGS[name])


def is_demo() -> bool:
    return FLAGS.data_dir is None and FLAGS.tfds_name is None


def config_from_flags() -> TrainConfig:
    """The flags given, over the demo's defaults (no data given) and TrainConfig's, checked in
    plain Python (a mistake is reported before TensorFlow loads). The demo's data folder is
    named here and written by :func:`_train`."""
    given = {f.name: FLAGS[f.name].value for f in dataclasses.fields(TrainConfig)
             if FLAGS[f.name].value is not None}
    if not is_demo():
        return TrainConfig(**given)
    config = DEMO_DEFAULTS | {"model_dir": os.path.join("runs", "demo")} | given
    return TrainConfig(**config, data_dir=os.path.join(config["model_dir"], "demo_data"))


def main(argv: list[str]) -> int:
    """Trains from the flags; a user's mistake ends in one line on stderr and exit status 2
    (1 when the loss diverges), never a traceback."""
    from keras_regnet.training.errors import NonFiniteLossError
    from keras_regnet.training.lock import DirectoryInUseError

    # The trainer's own lines (strategy, resume, label offset) at INFO; TensorFlow's INFO logs
    # (all-reduce plans, checkpoint sharding, SavedModel assets) stay off unless --verbosity 0
    # (absl's flag) asks for them.
    logging_lib.getLogger("keras_regnet").setLevel(logging_lib.INFO)
    if not FLAGS["verbosity"].present:
        absl_logging.set_verbosity(absl_logging.WARNING)
    try:
        return _train()
    except NonFiniteLossError as err:
        print(f"train: stopped: {err}", file=sys.stderr)
        return 1
    except (ValueError, OSError, ImportError, DirectoryInUseError) as err:
        print(f"train: error: {err}", file=sys.stderr)
        return 2


def _train() -> int:
    config = config_from_flags()
    from keras_regnet import keras_side

    keras_side.load()  # what `import keras_regnet` does; training/train.py defers it to here
    if config.cpu_replicas > 1 and config.strategy in ("mirrored", "multi_worker"):
        from keras_regnet.training.distribute import split_cpu

        split_cpu(config.cpu_replicas)  # before the demo data writer starts TensorFlow's devices
    if is_demo():
        from keras_regnet.training.demo import prepare

        prepare(config.data_dir)
    if FLAGS.benchmark_input:
        from keras_regnet.training.benchmark import benchmark_input

        benchmark_input(config)
        return 0
    import keras

    on_jax = config.strategy == "data_parallel"
    if (keras.backend.backend() == "jax") != on_jax:
        raise ValueError(f"--strategy {config.strategy} does not run on the {keras.backend.backend()} "
                         f"backend: "
                         f"KERAS_BACKEND=jax trains with --strategy data_parallel, KERAS_BACKEND=tensorflow "
                         f"with the tf.distribute strategies.")
    if on_jax:
        from keras_regnet.training.jax_loop import run
    else:
        from keras_regnet.training.loop import run

    run(config)
    return 0


def _help_alias_expanded(argv: list[str]) -> list[str]:
    """``argv`` with ``-h`` as ``--help`` (as argparse's CLIs take it) where it stands as an option,
    not where it is the value of the flag before it (``--model_dir -h``) or follows ``--``."""
    expanded = argv[:1]
    takes_value = False
    for position, arg in enumerate(argv[1:], start=1):
        if arg == "--":
            return expanded + argv[position:]
        expanded.append("--help" if arg == "-h" and not takes_value else arg)
        name = arg.lstrip("-")
        takes_value = (not takes_value and arg.startswith("-") and "=" not in arg
                       and name in FLAGS and not FLAGS[name].boolean)
    return expanded


def run_main(argv: list[str] | None = None) -> None:
    """Parses ``argv`` (default ``sys.argv``) and trains; exits with the run's status. A flag
    absl cannot parse (an unknown one, a value outside its choices or type) ends in one line
    and status 2, as the trainer's other mistakes do; ``--help`` (``-h``) and ``--helpfull``
    print the flags and exit 0."""
    define_flags()
    argv = argv if argv is not None else sys.argv
    argv = _help_alias_expanded(argv)
    app.define_help_flags()  # --help / --helpfull, which app.run would add, parse here too
    try:
        unparsed = FLAGS(argv)
    except flags.Error as err:
        print(f"train: error: {err}", file=sys.stderr)
        sys.exit(2)
    except SystemExit as exited:
        # Only absl's help flags exit while parsing: the usage printed, status 1. Help that was
        # asked for succeeded (0, as `keras-regnet --help`), for scripts that check it.
        sys.exit(0 if exited.code == 1 else exited.code)
    if len(unparsed) > 1:
        print(f"train: error: unexpected arguments {unparsed[1:]}; every option is a --flag.",
              file=sys.stderr)
        sys.exit(2)
    app.run(main, argv=argv)
