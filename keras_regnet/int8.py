"""Static int8 quantisation of the ONNX and OpenVINO exports, calibrated on representative
images (LiteRT's full-integer file is :func:`keras_regnet.export.export_tflite`).

- ONNX: the folded float32 file (:func:`keras_regnet.formats.export_keras_format`) through
  ONNX Runtime's ``quantize_static``, QDQ format: per-channel int8 weights, uint8
  activations whose ranges are measured on the calibration batch, QuantizeLinear /
  DequantizeLinear pairs around each quantised op (every ONNX runtime reads them; ONNX Runtime
  fuses them into its int8 kernels); the adds (residual and the input normalisation's) and
  the final softmax stay float.
- OpenVINO: that QDQ file converted by OpenVINO (FakeQuantize nodes that its CPU plugin runs
  as int8 kernels), its strided 1x1 convs written as a subsampling slice and a stride-1 conv
  (:func:`subsample_strided_pointwise` says why).

Input and output stay float32 in both: RGB 0-255 in, probabilities out, as the float files.
"""

from __future__ import annotations

import os

import numpy as np

from keras_regnet.writers import staged_files

# ONNX Runtime's u8s8 kernels on CPUs without VNNI (AVX2) multiply pairs of bytes into int16
# (VPMADDUBSW), which saturates for 8-bit weights: 7-bit weights avoid it. CPUs with VNNI
# (AVX512-VNNI, AVX-VNNI) do not saturate, but the file must run on both.
REDUCE_RANGE = True


def export_onnx_int8(model, path: str, calibration: np.ndarray, overwrite: bool = False) -> str:
    """Writes ``model`` (folded first) as a QDQ int8 ``.onnx`` calibrated on ``calibration``
    (a float32 ``[N, H, W, 3]`` batch of RGB 0-255 images as served; batch, height and width of
    the file stay dynamic).

    Example:
        >>> from keras_regnet.calibration import calibration_images  # doctest: +SKIP
        >>> batch = calibration_images("val_images/", EvalTransform())  # doctest: +SKIP
        >>> export_onnx_int8(keras_regnet.RegNetX004(), "x004_int8.onnx", batch)  # doctest: +SKIP
        'x004_int8.onnx'
    """
    batch = _checked(path, "onnx", calibration, "onnxruntime")
    with staged_files(path, overwrite) as staging:
        staged = os.path.join(staging, os.path.basename(path))
        _write_qdq(model, batch, staging, staged)
        os.replace(staged, path)
    return path


def _write_qdq(model, batch: np.ndarray, staging: str, path: str, for_openvino: bool = False) -> None:
    """Writes the QDQ int8 file of ``model`` (folded first) to ``path``, calibrated on ``batch``."""
    import onnx
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    from keras_regnet.formats import quiet_converters

    class Images(CalibrationDataReader):
        """One image at a time, as ONNX Runtime's calibrator asks for them."""

        def __init__(self, input_name: str):
            self.items = iter([{input_name: image[None]} for image in batch])

        def get_next(self):
            return next(self.items, None)

    float_path = _float_file(model, staging, "onnx")
    float_model = onnx.load(float_path)
    if for_openvino:
        subsample_strided_pointwise(float_model)
        onnx.save(float_model, float_path)
    graph = float_model.graph
    # A quantised softmax outputs multiples of 1/256: over 1000 classes most probabilities
    # round to 0 and close calls tie. It stays float (on dequantised logits).
    softmax = [node.name for node in graph.node if node.op_type == "Softmax"]
    # Every Add stays float too, the residual ones (dequantised inputs, a float add and
    # ReLU, then quantised for the next conv) and the input normalisation's: ONNX Runtime's
    # QLinearAdd cost 39% of RegNetX004's int8 time at batch 32 (100 ms against 25 ms for
    # the float Add) on an AVX-512 VNNI Xeon.
    adds = [node.name for node in graph.node if node.op_type == "Add"]
    with quiet_converters():
        quantize_static(float_path, path, Images(graph.input[0].name), quant_format=QuantFormat.QDQ,
                        per_channel=True, reduce_range=REDUCE_RANGE, activation_type=QuantType.QUInt8,
                        weight_type=QuantType.QInt8, calibrate_method=CalibrationMethod.MinMax,
                        nodes_to_exclude=softmax + adds)


def subsample_strided_pointwise(model) -> int:
    """Rewrites each strided 1x1 ``Conv`` of an ONNX ``model`` (in place) as a ``Slice`` that
    keeps every stride-th row and column, then the same conv at stride 1: the same function.
    Returns how many it rewrote.

    OpenVINO 2026.4's CPU plugin computes an int8 strided 1x1 conv wrongly for the share of a
    batch that its second thread runs, on an AVX2 CPU without VNNI (a 2-core AMD EPYC): the
    same image eight times in one batch got eight different answers, and 180 of 360
    validation images changed between two identical calls (log-probabilities by up to 1.2).
    Its stride-1 int8 conv and its slice are exact, and the file runs as fast (RegNetX004,
    batch 32: 131 against 143 ms; with these convs left float instead, 156 ms).

    Example:
        >>> import onnx  # doctest: +SKIP
        >>> subsample_strided_pointwise(onnx.load("regnetx004.onnx"))  # doctest: +SKIP
        4
    """
    from onnx import helper, numpy_helper

    graph = model.graph
    kernels = {t.name: tuple(t.dims) for t in graph.initializer}
    nodes, rewritten = [], 0
    for node in graph.node:
        attributes = {a.name: a for a in node.attribute}
        strides = list(attributes["strides"].ints) if "strides" in attributes else [1, 1]
        if node.op_type == "Conv" and strides != [1, 1] and _kernel_size(node, attributes, kernels) == [1, 1]:
            # Named after the conv's output, unique in the graph (node names may be empty, and
            # two convs may read one input).
            prefix = f"{node.output[0]}_subsample"
            names = [f"{prefix}_{part}" for part in ("starts", "ends", "axes", "steps")]
            values = ([0, 0], [np.iinfo(np.int64).max] * 2, [2, 3], strides)
            graph.initializer.extend(numpy_helper.from_array(np.asarray(v, np.int64), n)
                                     for n, v in zip(names, values))
            subsampled = f"{prefix}_input"
            nodes.append(helper.make_node("Slice", [node.input[0], *names], [subsampled], name=prefix))
            node.input[0] = subsampled
            attributes["strides"].ints[:] = [1, 1]
            rewritten += 1
        nodes.append(node)
    graph.ClearField("node")
    graph.node.extend(nodes)
    return rewritten


def _kernel_size(conv, attributes: dict, initializer_shapes: dict) -> list[int]:
    """A Conv node's kernel height and width: its attribute, else its weights' shape (OIHW)."""
    if "kernel_shape" in attributes:
        return list(attributes["kernel_shape"].ints)
    return list(initializer_shapes.get(conv.input[1], (0, 0, 0, 0))[2:])


def export_openvino_int8(model, path: str, calibration: np.ndarray, overwrite: bool = False) -> str:
    """Writes ``model`` as an int8 OpenVINO IR (``NAME.xml`` + ``NAME.bin``): the QDQ file of
    :func:`export_onnx_int8`, calibrated on ``calibration``, converted by OpenVINO (its
    QuantizeLinear/DequantizeLinear pairs become FakeQuantize nodes, run as int8 kernels).

    NNCF's own post-training quantisation of the float IR was tried first: on the trained
    digits model it cost 5.3 top-1 points where this file costs 1.1, at the same speed.

    Example:
        >>> export_openvino_int8(keras_regnet.RegNetX004(), "x004_int8.xml", batch)  # doctest: +SKIP
        'x004_int8.xml'
    """
    from keras_regnet.formats import _need, quiet_converters

    batch = _checked(path, "openvino", calibration, "onnxruntime")
    _need("openvino", "openvino")
    import openvino as ov

    weights = path[: -len(".xml")] + ".bin"
    with staged_files(path, overwrite, companions=[weights]) as staging:
        qdq = os.path.join(staging, "int8.onnx")
        _write_qdq(model, batch, staging, qdq, for_openvino=True)
        staged = os.path.join(staging, os.path.basename(path))
        with quiet_converters():
            ov.save_model(ov.convert_model(qdq), staged)
        os.replace(staged[: -len(".xml")] + ".bin", weights)
        os.replace(staged, path)  # the .xml last: it names a whole model
    return path


def _checked(path: str, fmt: str, calibration: np.ndarray | None, quantizer: str) -> np.ndarray:
    """The calibration batch as float32, once the file name, the batch and the quantiser's
    package are known to be right (each mistake said in one line)."""
    from keras_regnet.formats import SUFFIXES, _need

    if not path.endswith(SUFFIXES[fmt]):
        raise ValueError(f"a {fmt} file's name ends with {SUFFIXES[fmt]}, got {path!r}.")
    if calibration is None or not len(calibration):
        raise ValueError("int8 needs calibration images (--calibration DIR|TFRECORDS): the "
                         "activations' ranges are measured on them.")
    _need(quantizer, fmt)
    return np.ascontiguousarray(calibration, dtype="float32")


def _float_file(model, staging: str, fmt: str) -> str:
    """The folded float32 file that the quantiser starts from, written into ``staging``."""
    from keras_regnet.export import fold_for_inference
    from keras_regnet.formats import SUFFIXES, export_keras_format

    return export_keras_format(fold_for_inference(model), os.path.join(staging, "f32" + SUFFIXES[fmt]), fmt)
