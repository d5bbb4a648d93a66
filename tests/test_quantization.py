"""int8 files (LiteRT full-integer, ONNX Runtime QDQ, OpenVINO) of random-weight ImageNet-shaped
models: their structure, their runtimes in a fresh process, their logits against float32's;
calibration read through the eval transform; one-line errors.

``python tests/test_quantization.py`` prints why the random-weight yardstick is built as it is:
how float32 logits respond to input noise and to 8-bit weights, with the residual branches at
gamma 1 and at RESIDUAL_GAMMA, and on the stored trained digits model; then each int8 file's
logits cosine on both random models (docs/deploy.md's tables).
"""

from __future__ import annotations

import pathlib

import numpy as np
import pytest
import tensorflow as tf

import conftest
import keras_regnet
from keras_regnet import calibration, cli, export
from keras_regnet.preprocessing import EvalTransform

SIZE = 96  # ImageNet-shaped networks (1000 classes) at a size that converts in seconds


def _photos(n: int, seed: int) -> np.ndarray:
    """Smooth colour fields with edges and noise: activations with photo-like ranges (pure
    noise would calibrate the first layers on a distribution nothing serves)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:SIZE, 0:SIZE] / SIZE
    images = []
    for _ in range(n):
        base = rng.uniform(0, 255, 3) * (1 - y[..., None]) + rng.uniform(0, 255, 3) * x[..., None]
        shape = (x - rng.uniform()) ** 2 + (y - rng.uniform()) ** 2 < rng.uniform(0.02, 0.2)
        base[shape] = rng.uniform(0, 255, 3)
        images.append(np.clip(base + rng.normal(0, 12, base.shape), 0, 255))
    return np.stack(images).astype("float32")


def _tensor_types(path: str) -> tuple[set[str], set]:
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=path)
    ops = {op["op_name"] for op in interpreter._get_ops_details()}
    dtypes = {t["dtype"] for t in interpreter.get_tensor_details()}
    return ops, dtypes


# Random-weight networks as a yardstick for int8 (issue 20). With every BatchNorm at gamma 1 and
# statistics from its own input, a random RegNet amplifies any perturbation layer by layer: input
# noise at 40 dB comes out of the logits at ~16 dB, and float32 itself with input noise at 50 dB
# falls below a cosine of 0.995 (a trained model attenuates instead: the digits model turns
# 40 dB into 51 dB). `python tests/test_quantization.py` measures both. The yardstick below
# scales each residual branch's last BatchNorm to RESIDUAL_GAMMA: it still amplifies input noise
# (40 dB -> ~30 dB) and its logits still depend on the image, but an 8-bit file can be told
# from a broken one by its cosine.
RESIDUAL_GAMMA = 0.25
COSINE_FLOOR = 0.995  # the issue's bar, logits of each int8 file against float32's


def random_weight_yardstick(name: str, residual_gamma: float = RESIDUAL_GAMMA, seed: int = 0):
    """A random-weight ImageNet-shaped model (1000 logits, no softmax) whose BatchNorm statistics
    are its own activations' on 64 synthetic photos (one training-mode pass with momentum 0,
    after the residual branches' last BatchNorms are scaled to ``residual_gamma``)."""
    import keras

    keras.utils.set_random_seed(seed)
    model = keras_regnet.RegNet(name, weights=None, classifier_activation=None, input_shape=(None, None, 3))
    norms = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    for norm in norms:
        if norm.name.endswith("_conv3_bn"):
            norm.gamma.assign(np.full(norm.gamma.shape, residual_gamma, "float32"))
    momenta = [norm.momentum for norm in norms]
    for norm in norms:
        norm.momentum = 0.0  # the moving statistics become this batch's
    model(_photos(64, seed=3), training=True)
    for norm, momentum in zip(norms, momenta):
        norm.momentum = momentum
    return model


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine similarity of each row of ``a`` with the same row of ``b``."""
    return np.sum(a * b, -1) / np.linalg.norm(a, axis=-1) / np.linalg.norm(b, axis=-1)


def _image_dependent_share(logits: np.ndarray) -> float:
    """How much of the logits' norm varies from image to image (0: the same logits for all)."""
    return float(np.linalg.norm(logits - logits.mean(0)) / np.linalg.norm(logits))


def _int8_files(model, folder: pathlib.Path) -> list[str]:
    """LiteRT's, ONNX Runtime's and OpenVINO's int8 files of ``model`` in ``folder``, calibrated
    on the same 32 photos."""
    from keras_regnet import int8

    calibration = _photos(32, seed=1)
    return [export.export_tflite(model, str(folder / "m.tflite"), quantize="int8", image_size=SIZE,
                                 calibration=calibration),
            int8.export_onnx_int8(model, str(folder / "m.onnx"), calibration),
            int8.export_openvino_int8(model, str(folder / "m.xml"), calibration)]


@pytest.mark.slow
@pytest.mark.parametrize("name", conftest.smallest_per_family())
def test_int8_files_run_in_their_runtimes_within_cosine_0995_of_float32(name, tmp_path):
    """LiteRT's full-integer file, ONNX Runtime's QDQ file and OpenVINO's IR of the smallest X
    and Y at ImageNet shape, calibrated on the same photos, run by their runtimes in one fresh
    process: each one's logits keep a cosine >= 0.995 to float32's on 16 other photos. The
    LiteRT file holds int8 tensors only (builtin int8 kernels, grouped convs native)."""
    model = random_weight_yardstick(name)
    images = _photos(16, seed=2)
    expected = model.predict(images, verbose=0)
    # Not a yardstick if the logits barely depend on the image (random BN statistics: ~3%).
    assert _image_dependent_share(expected) > 0.2, _image_dependent_share(expected)
    paths = _int8_files(model, tmp_path)
    ops, dtypes = _tensor_types(paths[0])
    # Builtin int8 kernels only: no float tensor anywhere (no fallback, no dequantised weights),
    # grouped convolutions as native CONV_2D (not split into one conv per group).
    assert np.float32 not in dtypes and {np.int8, np.uint8} <= dtypes, dtypes
    assert "CONV_2D" in ops and not ops & {"SPLIT", "SPLIT_V", "DEQUANTIZE", "FlexConv2D"}, ops
    files = []
    for k, image in enumerate(images):  # the LiteRT file's input is [1, SIZE, SIZE, 3]
        files.append(tmp_path / f"x{k}.npy")
        np.save(files[-1], image[None])
    outputs = conftest.run_client("runtime_client.py", ",".join(paths), *files)
    cosines = {}
    for path in paths:
        served = np.concatenate([np.array(o) for o in outputs[path]])
        assert served.shape == (16, 1000) and np.all(np.isfinite(served)), path
        cosines[pathlib.Path(path).suffix] = float(np.mean(_cosines(served, expected)))
    assert min(cosines.values()) >= COSINE_FLOOR, cosines


def test_calibration_reads_images_and_tfrecords_through_the_eval_transform(tmp_path):
    from keras_regnet.training.demo import prepare

    folder = tmp_path / "images" / "cats"
    folder.mkdir(parents=True)
    pixels = np.random.default_rng(0).integers(0, 256, (3, 50, 70, 3)).astype("uint8")
    for k, image in enumerate(pixels):
        tf.io.write_file(str(folder / f"{k}.png"), tf.io.encode_png(image))
    (folder / "notes.txt").write_text("not an image")
    transform = EvalTransform(40, 32)
    got = calibration.calibration_images(tmp_path / "images", transform, limit=2)
    assert got.shape == (2, 32, 32, 3) and got.dtype == np.float32
    # Exactly what serving_bytes feeds the model: decode, resize the short side, center crop.
    from keras_regnet.preprocessing import eval_crop

    chosen = [np.asarray(eval_crop(image, transform)) for image in pixels]
    assert any(np.allclose(got[0], c, atol=1e-3) for c in chosen)
    records = calibration.calibration_images(prepare(str(tmp_path / "demo")), EvalTransform(36, 32), limit=5)
    assert records.shape == (5, 32, 32, 3) and 0 <= records.min() and records.max() <= 255
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no images .* and no TFRecord shards"):
        calibration.calibration_images(tmp_path / "empty", transform)


def test_int8_needs_a_calibration_set_and_a_format_that_takes_one(tmp_path, capsys):
    base = ["export", "--model", "RegNetX002", "--weights", "none", "--output", str(tmp_path)]
    assert cli.main([*base, "--format", "litert", "--quantize", "int8"]) == 2
    assert "--quantize int8 needs --calibration" in capsys.readouterr().err
    assert cli.main([*base, "--format", "saved_model", "--quantize", "int8", "--calibration",
                     str(tmp_path)]) == 2
    assert "applies to --format litert, onnx and openvino" in capsys.readouterr().err
    assert cli.main([*base, "--format", "onnx", "--quantize", "dynamic"]) == 2
    assert "applies to --format litert only" in capsys.readouterr().err


def _onnx_ops(path: str) -> set[str]:
    import onnx

    return {node.op_type for node in onnx.load(path).graph.node}


def _adds_quantised_in_place(path: str) -> list[str]:
    """The Add nodes of a QDQ file whose output goes straight into a QuantizeLinear: ONNX
    Runtime fuses those into its slow QLinearAdd."""
    import onnx

    graph = onnx.load(path).graph
    quantizers = {name for node in graph.node if node.op_type == "QuantizeLinear" for name in node.input}
    return [node.name for node in graph.node if node.op_type == "Add" and node.output[0] in quantizers]


def _openvino_ops(path: str) -> set[str]:
    import openvino as ov

    return {op.get_type_name() for op in ov.Core().read_model(path).get_ops()}


@pytest.mark.slow
@pytest.mark.parametrize("fmt, suffix, quantized_op", [("onnx", ".onnx", "QuantizeLinear"),
                                                       ("openvino", ".xml", "FakeQuantize")])
def test_int8_onnx_and_openvino_are_quantised_and_run_in_their_runtime(fmt, suffix, quantized_op, tmp_path):
    """ONNX Runtime's static QDQ and its OpenVINO conversion, of the family's layer kinds (the smallest Y
    at depth 1 per stage: grouped convs, SE, residual adds), calibrated on the same images; a
    second write of the file is refused, and nothing but the file is left beside it."""
    from keras_regnet import int8

    model = keras_regnet.RegNet(conftest.shallow("RegNetY002"), weights=None, input_shape=(None, None, 3))
    conftest.randomize_batch_norms(model)
    quantize = int8.export_onnx_int8 if fmt == "onnx" else int8.export_openvino_int8
    path = quantize(model, str(tmp_path / f"m_int8{suffix}"), _photos(32, seed=1))
    ops = _onnx_ops(path) if fmt == "onnx" else _openvino_ops(path)
    assert quantized_op in ops, ops
    if fmt == "onnx":  # the adds and the softmax float (keras_regnet.int8 says why)
        quantised_adds = _adds_quantised_in_place(path)
        assert "Add" in ops and quantised_adds == [], quantised_adds
    assert sorted(p.name for p in tmp_path.iterdir()) == (["m_int8.onnx"] if fmt == "onnx"
                                                          else ["m_int8.bin", "m_int8.xml"])
    with pytest.raises(FileExistsError, match="already exists"):
        quantize(model, path, _photos(4, seed=1))
    images = _photos(4, seed=2)
    np.save(tmp_path / "x.npy", images)
    served = np.array(conftest.run_client("runtime_client.py", path, tmp_path / "x.npy")[path][0])
    assert served.shape == (4, 1000) and np.allclose(served.sum(-1), 1, atol=0.02)
    assert np.ptp(served, axis=0).max() > 0  # the outputs depend on the image
    with pytest.raises(ValueError, match="needs calibration images"):
        quantize(model, str(tmp_path / f"other{suffix}"), np.zeros((0, SIZE, SIZE, 3), "float32"))


def test_subsampling_rewrites_every_strided_pointwise_conv_and_keeps_the_function():
    """Strided 1x1 convs (kernel size given or left to the weights, square and uneven strides)
    become a slice and a stride-1 conv; a strided 3x3 and a stride-1 1x1 stay as they are; the
    graph computes the same in ONNX Runtime (odd sizes, so a stride leaves a remainder)."""
    import onnx
    import onnxruntime as ort
    from onnx import helper, numpy_helper

    from keras_regnet.int8 import subsample_strided_pointwise

    rng = np.random.default_rng(0)
    convs = [  # (kernel, strides, write kernel_shape)
        (1, [2, 2], True), (1, [2, 2], False), (1, [1, 3], True), (3, [2, 2], True), (1, [1, 1], True)]
    nodes, initializers, outputs = [], [], []
    for i, (k, strides, shaped) in enumerate(convs):
        kernel = rng.standard_normal((4, 3, k, k)).astype("float32")
        initializers.append(numpy_helper.from_array(kernel, f"w{i}"))
        attributes = {"strides": strides, **({"kernel_shape": [k, k]} if shaped else {})}
        nodes.append(helper.make_node("Conv", ["x", f"w{i}"], [f"y{i}"], name=f"conv{i}", **attributes))
        shape = [2, 4, (9 - k) // strides[0] + 1, (11 - k) // strides[1] + 1]
        outputs.append(helper.make_tensor_value_info(f"y{i}", onnx.TensorProto.FLOAT, shape))
    given = helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [2, 3, 9, 11])
    graph = helper.make_graph(nodes, "g", [given], outputs, initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    x = rng.standard_normal((2, 3, 9, 11)).astype("float32")

    def run(m):
        session = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
        return session.run(None, {"x": x})

    expected = run(model)
    assert subsample_strided_pointwise(model) == 3
    onnx.checker.check_model(model)
    assert [n.op_type for n in model.graph.node] == ["Slice", "Conv"] * 3 + ["Conv", "Conv"]
    strides = [list(next(a.ints for a in n.attribute if a.name == "strides"))
               for n in model.graph.node if n.op_type == "Conv"]
    assert strides == [[1, 1], [1, 1], [1, 1], [2, 2], [1, 1]]
    for got, want in zip(run(model), expected):
        assert got.shape == want.shape and np.allclose(got, want, atol=1e-5), (got.shape, want.shape)


@pytest.mark.slow
def test_openvino_int8_answers_an_image_alike_wherever_it_sits_in_a_batch(tmp_path):
    """The same image eight times in one batch, twice: eight equal answers each time, equal to
    the image's answer alone. OpenVINO 2026.4 broke this on an AVX2 CPU (its int8 strided 1x1
    conv, for the rows its second thread runs) until the file subsampled before those convs
    (keras_regnet.int8.subsample_strided_pointwise): 2.4e-3 apart on this model then."""
    import openvino as ov

    from keras_regnet import int8

    model = keras_regnet.RegNetX002(weights=None, input_shape=(32, 32, 3), classes=10)
    images = np.random.default_rng(0).uniform(0, 255, (16, 32, 32, 3)).astype("float32")
    path = int8.export_openvino_int8(model, str(tmp_path / "m_int8.xml"), images)
    compiled = ov.Core().compile_model(path, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    alone = np.asarray(compiled(images[:1])[0])
    for _ in range(2):
        batch = np.asarray(compiled(np.repeat(images[:1], 8, axis=0))[0])
        assert np.abs(batch - alone).max() <= 1e-6, np.abs(batch - alone).max(axis=-1)


def _noise_response(model, images: np.ndarray, label: str) -> None:
    """Prints the float32 logits' signal-to-noise ratio and cosine under Gaussian input noise
    and with each conv / dense kernel rounded to 8 bits per output channel."""
    import keras

    rng = np.random.default_rng(0)
    expected = model.predict(images, verbose=0)

    def line(what: str, served: np.ndarray) -> None:
        snr = 10 * np.log10(np.sum(expected ** 2) / np.sum((served - expected) ** 2))
        cosines = _cosines(served, expected)
        print(f"| {label} | {what} | {snr:.1f} | {cosines.mean():.5f} | {cosines.min():.5f} |", flush=True)

    for input_snr in (50, 40, 30):
        noise = rng.normal(0, images.std() * 10 ** (-input_snr / 20), images.shape).astype("float32")
        line(f"input noise at {input_snr} dB", model.predict(images + noise, verbose=0))
    weighted = (keras.layers.Conv2D, keras.layers.Dense)
    kernels = [layer.kernel for layer in model.layers if isinstance(layer, weighted)]
    originals = [keras.ops.convert_to_numpy(kernel) for kernel in kernels]
    for kernel, values in zip(kernels, originals):
        scale = np.abs(values).reshape(-1, values.shape[-1]).max(0) / 127
        kernel.assign(np.round(values / np.where(scale > 0, scale, 1)) * scale)
    line("8-bit weights per channel", model.predict(images, verbose=0))
    for kernel, values in zip(kernels, originals):
        kernel.assign(values)


def _int8_cosines(model, images: np.ndarray, label: str) -> None:
    """Prints each int8 file's mean logits cosine to float32's (the test's figure), run in-process."""
    import tempfile

    from keras_regnet.formats import run_artifact

    expected = model.predict(images, verbose=0)
    cosines = []
    for path in _int8_files(model, pathlib.Path(tempfile.mkdtemp())):
        served = np.concatenate([run_artifact(path, image[None]) for image in images])
        cosines.append(f"{np.mean(_cosines(served, expected)):.5f}")
    print(f"| {label} | {' | '.join(cosines)} |", flush=True)


if __name__ == "__main__":
    import tempfile

    from test_int8_accuracy import stored_model

    from keras_regnet.training.demo import prepare

    print("| model | perturbation | logits SNR (dB) | cosine, mean | cosine, min |\n|---|---|---:|---:|---:|")
    for family in conftest.smallest_per_family():
        for gamma in (1.0, RESIDUAL_GAMMA):
            _noise_response(random_weight_yardstick(family, gamma), _photos(16, seed=2),
                            f"{family}, random, residual gamma {gamma}")
    digits, _ = conftest.validation_split(prepare(tempfile.mkdtemp()))
    _noise_response(stored_model(classifier_activation=None), digits[:64],
                    "RegNetX002 trained on the digits (tests/data)")
    print("\n| model | LiteRT int8 | ONNX Runtime int8 | OpenVINO int8 |\n|---|---:|---:|---:|")
    for family in conftest.smallest_per_family():
        for gamma in (1.0, RESIDUAL_GAMMA):
            _int8_cosines(random_weight_yardstick(family, gamma), _photos(16, seed=2),
                          f"{family}, residual gamma {gamma}")
