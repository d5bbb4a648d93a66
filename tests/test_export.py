"""SavedModel export, checked the way TF Serving loads and calls it."""

from __future__ import annotations

import base64
import io
import json
import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest

import conftest
import keras_regnet
from keras_regnet import cli, export
from keras_regnet.preprocessing import EvalTransform, eval_crop

# Fresh processes and real runtimes throughout: part of the full suite, not the quick pass.
pytestmark = pytest.mark.slow


def sharp_model(name="RegNetY002", classes=1000):
    """A random model whose classifier is scaled so that its probabilities are far from uniform.

    Seeded, so that the tolerance checks below see the same network on every run.
    """
    keras.utils.set_random_seed(0)
    model = keras_regnet.RegNet(name, weights=None, input_shape=(None, None, 3), classes=classes)
    kernel, bias = model.get_layer("predictions").get_weights()
    model.get_layer("predictions").set_weights([kernel * 300, bias])
    return model


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    model = sharp_model()
    base = tmp_path_factory.mktemp("served") / "regnet"
    path = export.export_saved_model(model, str(base), 3, model_name="regnet")
    return model, path


def images(n=2, size=224, seed=0):
    return np.random.default_rng(seed).uniform(0, 255, (n, size, size, 3)).astype("float32")


def test_layout_and_no_xla(exported):
    model, path = exported
    assert path.endswith(os.path.join("regnet", "3"))
    assert sorted(os.listdir(os.path.dirname(path))) == ["3"]  # no staging leftovers
    assert {"saved_model.pb", "variables", "assets", "assets.extra"} <= set(os.listdir(path))
    labels = open(os.path.join(path, "assets", "labels.txt"), encoding="utf-8").read().splitlines()
    assert labels[:2] == ["tench", "goldfish"] and len(labels) == 1000
    assert export.has_xla(path) == []


def test_xla_scan_detects_stock_keras_grouped_conv(tmp_path):
    inputs = keras.Input((None, None, 3))
    x = keras.layers.Conv2D(8, 3, padding="same")(inputs)
    x = keras.layers.Conv2D(8, 3, groups=4)(x)
    stock = keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(
        keras.layers.GlobalAveragePooling2D()(x)))
    path = export.export_saved_model(stock, str(tmp_path / "stock"), 1)
    assert export.has_xla(path)


def test_saved_model_cli_lists_both_signatures(exported):
    _, path = exported
    out = subprocess.run([sys.executable, "-m", "tensorflow.python.tools.saved_model_cli", "show",
                          "--dir", path, "--all"], capture_output=True, text=True, check=True).stdout
    for expected in ("signature_def['serving_default']", "signature_def['serving_bytes']",
                     "inputs['images']", "inputs['image_bytes']", "outputs['probabilities']",
                     "outputs['classes']", "outputs['scores']", "outputs['class_names']"):
        assert expected in out


def _encoded_pictures(tmp_path, sizes=((300, 260), (224, 224), (97, 411)), seed=2):
    """JPEG files of random pictures, and their eval crops computed here (the expected input)."""
    import tensorflow as tf

    files, crops = [], []
    for k, (h, w) in enumerate(sizes):
        data = _jpeg(np.random.default_rng(seed + k).uniform(0, 255, (h, w, 3)))
        (tmp_path / f"{k}.jpg").write_bytes(data)
        files.append(tmp_path / f"{k}.jpg")
        crops.append(np.asarray(eval_crop(tf.io.decode_jpeg(data, channels=3), EvalTransform())))
    return files, np.stack(crops)


def assert_serves_like_keras(path, model, tmp_path, onednn: str, top1: bool = False):
    """Both loaders and both signatures of the SavedModel at ``path``, in a fresh process that
    never imports keras_regnet, with oneDNN as given: within 1e-5 of the Keras model."""
    x = images(3, seed=5)
    np.save(tmp_path / "x.npy", x)
    files, crops = _encoded_pictures(tmp_path)
    out = conftest.run_client("tf_serving_client.py", path, tmp_path / "x.npy", *files, onednn=onednn)
    assert out["imported_keras_regnet"] is False
    expected = {"serving_default": np.asarray(model(x, training=False)),
                "serving_bytes": np.asarray(model(crops, training=False))}
    for loader in ("tf1", "tf2"):
        for signature, want in expected.items():
            got = np.array(out[loader][signature])
            np.testing.assert_allclose(got, want, atol=1e-5, err_msg=f"{loader} {signature}")
            if top1:
                np.testing.assert_array_equal(got.argmax(1), want.argmax(1))


@pytest.mark.parametrize("onednn", ["0", "1"])
def test_plain_tensorflow_serves_both_signatures_with_onednn_off_and_on(exported, tmp_path, onednn):
    model, path = exported
    assert_serves_like_keras(path, model, tmp_path, onednn)


def fine_tuned_classifier(classes: int = 4) -> keras.Model:
    """A backbone with a custom head (a ReLU conv then a BN: not foldable), random BN
    statistics everywhere, and a sharp softmax: what a user fine-tunes and serves."""
    keras.utils.set_random_seed(1)
    backbone = keras_regnet.RegNet(conftest.shallow("RegNetY002"), weights=None, include_top=False,
                                   input_shape=(None, None, 3))
    conftest.randomize_batch_norms(backbone)
    inputs = keras.Input((None, None, 3))
    x = keras.layers.Conv2D(32, 1, activation="relu", name="head_conv")(backbone(inputs))
    x = keras.layers.BatchNormalization(name="head_bn")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, keras.layers.Dense(classes, activation="softmax", name="head")(x))
    conftest.randomize_batch_norms(model, seed=3)
    kernel, bias = model.get_layer("head").get_weights()
    model.get_layer("head").set_weights([kernel * 30, bias])
    return model


def test_a_fine_tuned_custom_head_serves_its_keras_top1_with_onednn_off(tmp_path):
    model = fine_tuned_classifier()
    path = export.export_saved_model(model, str(tmp_path / "tuned"), 1,
                                     class_names=["a", "b", "c", "d"])
    assert_serves_like_keras(path, model, tmp_path, "0", top1=True)


def test_a_kerashub_classifier_exports_folded_and_serves_like_keras_with_onednn_off(tmp_path, caplog):
    """KerasHub's RegNetImageClassifier (functional subclasses: the classifier and its backbone)
    is exported with its batch norms folded (it was exported unfolded, with a warning, before
    folding read such graphs) and plain TensorFlow with oneDNN off serves what Keras computes."""
    from keras_regnet.hub import RegNetBackbone, RegNetImageClassifier

    keras.utils.set_random_seed(2)
    # Probabilities, as the other served models give: assert_serves_like_keras's 1e-5 is absolute.
    classifier = RegNetImageClassifier(RegNetBackbone(conftest.shallow("RegNetY002")), num_classes=5,
                                       activation="softmax")
    conftest.randomize_batch_norms(classifier.backbone)  # its BNs: not identities
    path = export.export_saved_model(classifier, str(tmp_path / "hub"), 1)
    assert "without folding" not in caplog.text
    assert_serves_like_keras(path, classifier, tmp_path, "0")


def _jpeg(image: np.ndarray) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(image.astype("uint8")).save(buffer, format="JPEG", quality=95)
    return buffer.getvalue()


def _python_eval_transform(data: bytes, transform: EvalTransform) -> np.ndarray:
    """The usual Python pipeline: PIL decode, short side to 256 (bilinear), center crop 224."""
    from PIL import Image

    image = Image.open(io.BytesIO(data)).convert("RGB")
    w, h = image.size
    scale = transform.resize / min(w, h)
    image = image.resize((round(w * scale), round(h * scale)), Image.BILINEAR)
    w, h = image.size
    left, top = (w - transform.crop) // 2, (h - transform.crop) // 2
    return np.asarray(image.crop((left, top, left + transform.crop, top + transform.crop)), "float32")


def _colour_model() -> keras.Model:
    """Classifies the dominant colour (red / green / blue): its answer depends on the pixels
    the preprocessing keeps, not on decoder rounding, so both pipelines must agree."""
    inputs = keras.Input((None, None, 3))
    mean = keras.layers.GlobalAveragePooling2D()(inputs)
    dense = keras.layers.Dense(3, activation="softmax", use_bias=False)
    outputs = dense(mean)
    dense.set_weights([np.eye(3, dtype="float32") * 0.05])
    return keras.Model(inputs, outputs)


def test_rest_b64_body_gives_python_pipeline_top1(tmp_path):
    import tensorflow as tf

    model = _colour_model()
    path = export.export_saved_model(model, str(tmp_path / "colour"), 1,
                                     class_names=["red", "green", "blue"])
    rng = np.random.default_rng(4)
    pictures, expected_names = [], []
    # Smooth pictures of different sizes and aspect ratios, each dominated by one colour in its
    # centre and by another colour in the border strips that the center crop must discard.
    for (h, w), centre, border in [((300, 400), 0, 2), ((256, 256), 1, 0), ((500, 333), 2, 1)]:
        low = rng.uniform(0, 80, (h // 25 + 2, w // 25 + 2, 3)).astype("float32")
        picture = tf.image.resize(low, (h, w), method="bicubic").numpy().clip(0, 255)
        picture[..., centre] += 150
        short = min(h, w)
        strip_h, strip_w = (h - short * 224 // 256) // 2, (w - short * 224 // 256) // 2
        if strip_w > 10:
            picture[:, : strip_w - 5, border] += 255
            picture[:, w - strip_w + 5:, border] += 255
        if strip_h > 10:
            picture[: strip_h - 5, :, border] += 255
            picture[h - strip_h + 5:, :, border] += 255
        pictures.append(picture.clip(0, 255))
        expected_names.append(["red", "green", "blue"][centre])
    body = json.dumps({"signature_name": "serving_bytes", "instances": [
        {"image_bytes": {"b64": base64.b64encode(_jpeg(p)).decode("ascii")}} for p in pictures]})

    # TF Serving's REST decoding: a {"b64": ...} object becomes the raw bytes of a DT_STRING.
    request = json.loads(body)
    raw = [base64.b64decode(inst["image_bytes"]["b64"]) for inst in request["instances"]]
    served = tf.saved_model.load(path).signatures[request["signature_name"]](
        image_bytes=tf.constant(raw))
    python_path = np.stack([_python_eval_transform(r, EvalTransform()) for r in raw])
    expected = np.asarray(model(python_path))
    assert [n.decode() for n in served["class_names"].numpy()[:, 0]] == expected_names
    np.testing.assert_array_equal(served["classes"].numpy()[:, 0], expected.argmax(axis=1))
    np.testing.assert_allclose(served["probabilities"].numpy(), expected, atol=0.02)


def test_serving_bytes_equals_serving_default_on_the_same_pixels(exported):
    """For the RegNet export: the bytes signature is the image signature after THE eval
    transform (which equals resize-then-crop: tests/test_preprocessing.py)."""
    import tensorflow as tf

    _, path = exported
    loaded = tf.saved_model.load(path)
    jpeg = _jpeg(np.random.default_rng(2).uniform(0, 255, (300, 260, 3)))
    image = eval_crop(tf.io.decode_jpeg(jpeg, channels=3), EvalTransform(256, 224))[None]
    by_bytes = loaded.signatures["serving_bytes"](image_bytes=tf.constant([jpeg]))
    by_pixels = loaded.signatures["serving_default"](images=image)
    np.testing.assert_allclose(by_bytes["probabilities"], by_pixels["probabilities"], atol=1e-6)


def test_grpc_predict_request_over_loopback(exported):
    from concurrent import futures

    import grpc
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    model, path = exported

    class Servicer(prediction_service_pb2_grpc.PredictionServiceServicer):
        """Test harness standing in for TF Serving: TF1 loader, SignatureDef tensor names."""

        def __init__(self):
            self.graph = tf.Graph()
            self.session = tf.compat.v1.Session(graph=self.graph)
            self.meta = tf.compat.v1.saved_model.loader.load(self.session, ["serve"], path)

        def Predict(self, request, context):  # noqa: N802 (gRPC method name)
            sig = self.meta.signature_def[request.model_spec.signature_name or "serving_default"]
            feeds = {sig.inputs[k].name: tf.make_ndarray(v) for k, v in request.inputs.items()}
            names = list(sig.outputs)
            values = self.session.run([sig.outputs[n].name for n in names], feeds)
            response = predict_pb2.PredictResponse()
            response.model_spec.CopyFrom(request.model_spec)
            for name, value in zip(names, values):
                response.outputs[name].CopyFrom(tf.make_tensor_proto(value))
            return response

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(Servicer(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
            request = predict_pb2.PredictRequest()
            request.model_spec.name = "regnet"
            request.model_spec.signature_name = "serving_default"
            x = images(1, seed=7)
            request.inputs["images"].CopyFrom(tf.make_tensor_proto(x))
            response = stub.Predict(request, timeout=60)
        np.testing.assert_allclose(tf.make_ndarray(response.outputs["probabilities"]),
                                   np.asarray(model(x)), atol=1e-5)
        assert tf.make_ndarray(response.outputs["class_names"]).shape == (1, 5)
    finally:
        server.stop(grace=None)


def test_warmup_requests_replay_against_the_model(exported):
    import tensorflow as tf
    from tensorflow_serving.apis import prediction_log_pb2

    _, path = exported
    loaded = tf.saved_model.load(path)
    records = list(tf.data.TFRecordDataset(os.path.join(path, export.WARMUP_FILE)).as_numpy_iterator())
    assert len(records) == 2
    for record in records:
        request = prediction_log_pb2.PredictionLog.FromString(record).predict_log.request
        assert request.model_spec.name == "regnet"
        inputs = {k: tf.constant(tf.make_ndarray(v)) for k, v in request.inputs.items()}
        out = loaded.signatures[request.model_spec.signature_name](**inputs)
        assert out["probabilities"].shape == (1, 1000)


def test_existing_version_is_kept_unless_overwrite(exported, tmp_path):
    model, _ = exported
    base = str(tmp_path / "m")
    first = export.export_saved_model(model, base, 1)
    stamp = os.path.getmtime(os.path.join(first, "saved_model.pb"))
    with pytest.raises(FileExistsError, match="--overwrite"):
        export.export_saved_model(model, base, 1)
    assert os.path.getmtime(os.path.join(first, "saved_model.pb")) == stamp
    export.export_saved_model(model, base, 1, overwrite=True)
    assert sorted(os.listdir(base)) == ["1"]


def test_interrupted_export_leaves_nothing_that_looks_like_a_model(exported, tmp_path, monkeypatch):
    import tensorflow as tf

    model, _ = exported
    real_save = tf.saved_model.save

    def save_then_die(obj, directory, **kwargs):
        real_save(obj, directory, **kwargs)  # files are half there when the crash comes
        raise KeyboardInterrupt("killed during export")

    monkeypatch.setattr(tf.saved_model, "save", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        export.export_saved_model(model, str(tmp_path / "m"), 1)
    assert os.listdir(tmp_path / "m") == []


def test_cli_export_regnety032_none(tmp_path, capsys):
    out_dir = tmp_path / "served"
    assert cli.main(["export", "--model", "RegNetY032", "--weights", "none", "--output", str(out_dir)]) == 0
    assert "serving_bytes" in capsys.readouterr().out
    assert export.has_xla(str(out_dir / "1")) == []
    # What was served is recorded beside it (TF Serving does not load assets.extra/).
    record = json.loads((out_dir / "1" / export.WEIGHTS_RECORD_FILE).read_text())
    assert (record["model"], record["kind"], record["files"]) == ("RegNetY032", "none", [])
    assert cli.main(["export", "--model", "RegNetY032", "--weights", "none", "--output", str(out_dir)]) == 2
    assert "already exists" in capsys.readouterr().err


@pytest.mark.parametrize("quantize, tolerance", [("none", 1e-4), ("dynamic", 0.05)])
def test_tflite_matches_keras(exported, tmp_path, quantize, tolerance):
    model, _ = exported
    path = export.export_tflite(model, str(tmp_path / "m.tflite"), quantize=quantize)
    drift = export.tflite_max_difference(path, model, images(3, seed=11))
    print(f"tflite {quantize}: max |probability difference| {drift:.3g}")
    assert drift <= tolerance


def _png_claiming(height: int, width: int) -> bytes:
    """A valid grey PNG of that size, all zeros: a few hundred KB that decode to h x w x 3."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    rows = zlib.compress(b"\0" * ((width + 1) * height), 9)
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", rows) + chunk(b"IEND", b"")


def _webp_claiming(height: int, width: int) -> bytes:
    """An extended (VP8X) WebP header claiming a canvas of that size, with a tiny body."""
    import struct

    vp8x = b"VP8X" + struct.pack("<I", 10) + b"\0\0\0\0" + (width - 1).to_bytes(3, "little") \
        + (height - 1).to_bytes(3, "little")
    body = b"WEBP" + vp8x + b"VP8 " + struct.pack("<I", 4) + b"\0" * 4
    return b"RIFF" + struct.pack("<I", len(body)) + body


def test_oversized_images_are_refused_from_their_header_with_bounded_memory(exported, tmp_path):
    """A 9000x9000 PNG (a few hundred KB) and a 16383x16383 WebP header are refused before a
    pixel is decoded, naming their index in the batch; the process's peak memory barely
    moves. Plain TensorFlow, oneDNN off, a fresh process."""
    _, path = exported
    (tmp_path / "bomb.png").write_bytes(_png_claiming(9000, 9000))
    (tmp_path / "bomb.webp").write_bytes(_webp_claiming(16383, 16383))
    (tmp_path / "ok.jpg").write_bytes(_jpeg(np.full((64, 64, 3), 128.0)))
    (tmp_path / "text.jpg").write_bytes(b"this is not an image at all, just text")
    code = textwrap.dedent(
        f"""
        import json, resource, tensorflow as tf
        serve = tf.saved_model.load({path!r}).signatures["serving_bytes"]
        ok = open({str(tmp_path / "ok.jpg")!r}, "rb").read()
        serve(image_bytes=tf.constant([ok]))  # warm up: what a normal request costs
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        errors = {{}}
        for name in ("bomb.png", "bomb.webp", "text.jpg"):
            bad = open({str(tmp_path)!r} + "/" + name, "rb").read()
            try:
                serve(image_bytes=tf.constant([ok, bad, ok]))
                errors[name] = None
            except tf.errors.InvalidArgumentError as err:
                errors[name] = err.message
        grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
        print(json.dumps({{"errors": errors, "grown_kb": grown}}))
        """)
    env = {**os.environ, "TF_ENABLE_ONEDNN_OPTS": "0", "TF_CPP_MIN_LOG_LEVEL": "2"}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    out = json.loads(result.stdout.strip().splitlines()[-1])
    for name in ("bomb.png", "bomb.webp"):
        assert out["errors"][name] and "too large" in out["errors"][name], out["errors"]
        assert "[image] [1]" in out["errors"][name]  # the index of the bad image in the batch
    assert "is not a JPEG, PNG, GIF, BMP, WebP file" in out["errors"]["text.jpg"]
    assert "[image] [1]" in out["errors"]["text.jpg"]
    print(f"peak memory grew by {out['grown_kb'] / 1024:.0f} MB serving the refused requests")
    assert out["grown_kb"] < 100 * 1024  # a decoded 9000x9000 image alone would be 243 MB


def test_every_supported_format_is_measured_from_its_header(tmp_path):
    import tensorflow as tf
    from PIL import Image

    from keras_regnet.preprocessing import encoded_image_size

    picture = np.random.default_rng(0).uniform(0, 255, (37, 53, 3)).astype("uint8")
    for fmt, options in [("JPEG", {}), ("PNG", {}), ("GIF", {}), ("BMP", {}), ("WEBP", {}),
                         ("WEBP", {"lossless": True}), ("WEBP", {"exif": b"Exif\0\0x"})]:
        buffer = io.BytesIO()
        Image.fromarray(picture).save(buffer, format=fmt, **options)
        size = [int(v) for v in encoded_image_size(tf.constant(buffer.getvalue()))]
        assert size == [37, 53], (fmt, options)
