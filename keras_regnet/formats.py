"""ONNX, LiteRT (TFLite) and OpenVINO files through Keras's own ``model.export``.

Each file is written from the folded model (:func:`keras_regnet.fold_batch_norms`): the
grouped convolution becomes one ONNX ``Conv`` with ``group`` (one LiteRT ``CONV_2D``, one
OpenVINO ``GroupConvolution``), the input normalisation's constants are constants, and batch,
height and width stay dynamic. A file appears complete at its path or not at all.

:func:`run_artifact` runs a written file in its own runtime (onnxruntime, ai-edge-litert,
OpenVINO), as a deployment would; the CLI and the tests check every export with it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import tempfile
import warnings

import numpy as np

from keras_regnet.writers import staged_files

log = logging.getLogger(__name__)

SUFFIXES = {"onnx": ".onnx", "litert": ".tflite", "openvino": ".xml"}
EXTRAS = {"onnx": "onnx", "litert": "litert", "openvino": "openvino"}
_RUNTIME_MODULES = {"onnx": "onnxruntime", "litert": "ai_edge_litert", "openvino": "openvino"}
_EXPORT_MODULES = {"onnx": "tf2onnx", "litert": "tensorflow", "openvino": "openvino"}


def _need(module: str, fmt: str) -> None:
    try:
        __import__(module)
    except ImportError as err:
        raise ImportError(f"{fmt} export needs {module}: pip install 'keras-regnet[{EXTRAS[fmt]}]' "
                          f"({err})") from err


def artifact_path(output: str, name: str, fmt: str) -> str:
    """``output`` if it already ends with the format's suffix, else ``output/NAME.suffix``."""
    suffix = SUFFIXES[fmt]
    return output if output.endswith(suffix) else os.path.join(output, f"{name}{suffix}")


def export_keras_format(model, path: str, fmt: str, overwrite: bool = False) -> str:
    """Writes ``model`` (already folded or not) as ``fmt`` ("onnx", "litert", "openvino").

    OpenVINO writes ``NAME.xml`` and ``NAME.bin``; both appear together.

    Example:
        >>> model = keras_regnet.fold_batch_norms(keras_regnet.RegNetX002(weights=None))  # doctest: +SKIP
        >>> export_keras_format(model, "/tmp/regnetx002.onnx", "onnx")  # doctest: +SKIP
        '/tmp/regnetx002.onnx'
    """
    if fmt not in SUFFIXES:
        raise ValueError(f"format must be one of {tuple(SUFFIXES)}, got {fmt!r}.")
    if not path.endswith(SUFFIXES[fmt]):
        raise ValueError(f"a {fmt} file's name ends with {SUFFIXES[fmt]}, got {path!r}.")
    _need(_EXPORT_MODULES[fmt], fmt)
    companions = [path[: -len(".xml")] + ".bin"] if fmt == "openvino" else []
    _ensure_called(model)
    with staged_files(path, overwrite, companions) as staging:
        staged = os.path.join(staging, os.path.basename(path))
        with quiet_converters():
            model.export(staged, format=fmt, verbose=False)
        for target in companions + [path]:  # the .xml last: it names a whole model
            os.replace(os.path.join(staging, os.path.basename(target)), target)
    return path


def _ensure_called(model) -> None:
    """Keras's ONNX exporter refuses a model that was built but never called."""
    shape = [d if d is not None else 64 for d in model.input_shape[1:]]
    model(np.zeros((1, *shape), "float32"), training=False)


@contextlib.contextmanager
def quiet_converters():
    """The converters print hundreds of lines (tf2onnx, the TFLite/MLIR converter, from Python
    and from C++): keep them out of a CLI's output, and show them only if the conversion fails.
    """
    loggers = [logging.getLogger(name) for name in ("tf2onnx", "absl", "tensorflow")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    with tempfile.TemporaryFile() as captured:
        failed = True
        try:
            os.dup2(captured.fileno(), 1)
            os.dup2(captured.fileno(), 2)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                yield
            failed = False
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for fd in saved:
                os.close(fd)
            for lg, level in zip(loggers, levels):
                lg.setLevel(level)
            if failed:  # what the converter said is the user's best clue
                captured.seek(0)
                sys.stderr.write(captured.read().decode(errors="replace")[-20000:])


def _quantize(x: np.ndarray, detail: dict) -> np.ndarray:
    """A float batch as a LiteRT tensor takes it (an int8 model's uint8 input: the pixels)."""
    if detail["dtype"] == np.float32:
        return x
    scale, zero_point = detail["quantization"]
    bounds = np.iinfo(detail["dtype"])
    return np.clip(np.round(x / scale + zero_point), bounds.min, bounds.max).astype(detail["dtype"])


def _dequantize(q: np.ndarray, detail: dict) -> np.ndarray:
    if detail["dtype"] == np.float32:
        return q
    scale, zero_point = detail["quantization"]
    return (q.astype("float32") - zero_point) * scale


def run_artifact(path: str, images: np.ndarray, threads: int | None = None) -> np.ndarray:
    """Runs an ``.onnx`` / ``.tflite`` / ``.xml`` file in its runtime on a float32 batch.

    Example:
        >>> x = np.zeros((1, 224, 224, 3), "float32")
        >>> run_artifact("/tmp/regnetx002.onnx", x).shape  # doctest: +SKIP
        (1, 1000)
    """
    images = np.ascontiguousarray(images, dtype="float32")
    fmt = next((f for f, s in SUFFIXES.items() if path.endswith(s)), None)
    if fmt is None:
        raise ValueError(f"{path} is none of {', '.join(SUFFIXES.values())}.")
    _need(_RUNTIME_MODULES[fmt], fmt)
    if fmt == "onnx":
        import onnxruntime as ort

        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        return session.run(None, {session.get_inputs()[0].name: images})[0]
    if fmt == "litert":
        from ai_edge_litert.interpreter import Interpreter

        interpreter = Interpreter(model_path=path, num_threads=threads)
        given, produced = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
        interpreter.resize_tensor_input(given["index"], images.shape)
        interpreter.allocate_tensors()
        interpreter.set_tensor(given["index"], _quantize(images, given))
        interpreter.invoke()
        return _dequantize(interpreter.get_tensor(produced["index"]), produced)
    import openvino as ov

    # float32 as the Keras model computes (OpenVINO may pick bf16 on CPUs that have it).
    config = {"INFERENCE_PRECISION_HINT": "f32", **({"INFERENCE_NUM_THREADS": threads} if threads else {})}
    compiled = ov.Core().compile_model(path, "CPU", config)
    return np.asarray(compiled(images)[0])
