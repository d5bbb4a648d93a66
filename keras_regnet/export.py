"""SavedModel export for TF Serving (and TFLite), written atomically in the serving layout.

Signatures (stable names, documented in docs/serving.md):

- ``serving_default``: ``images`` float32 ``[batch, height, width, 3]``, RGB in [0, 255]
  -> ``probabilities`` ``[batch, classes]``, ``scores`` / ``classes`` (top-k, float32 / int64)
  and ``class_names`` (string) ``[batch, k]``.
- ``serving_bytes``: ``image_bytes`` string ``[batch]`` of encoded JPEG/PNG images, decoded,
  resized and center-cropped in the graph with the weight set's eval transform -> the same
  outputs. REST clients send ``{"b64": "..."}`` for each image. The transform is
  :func:`keras_regnet.preprocessing.eval_crop`, the one the trainer evaluates with.

No XLA anywhere: the package's layers call TensorFlow's native kernels, and nothing here is
jit-compiled, so TF Serving's CPU and GPU builds both run the result.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from typing import Sequence

import numpy as np

from keras_regnet.export_choices import DEFAULT_MAX_PIXELS, FORMATS, QUANTIZATIONS  # noqa: F401
from keras_regnet.files import atomic_path, new_staging, replace_directory
from keras_regnet.folding import fold_batch_norms
from keras_regnet.preprocessing import EvalTransform, decode_rgb, default_class_names, eval_crop
from keras_regnet.writers import check_folder_target, exclusive_writer, mark

log = logging.getLogger(__name__)

SIGNATURE_IMAGES = "serving_default"
SIGNATURE_BYTES = "serving_bytes"
LABELS_FILE = "labels.txt"
WARMUP_FILE = os.path.join("assets.extra", "tf_serving_warmup_requests")
WEIGHTS_RECORD_FILE = os.path.join("assets.extra", "weights.json")  # which weights, their licence


def _serving_module(model, class_names: Sequence[str], transform: EvalTransform, top_k: int,
                    labels_path: str, max_pixels: int):
    import tensorflow as tf

    classes = int(model.output_shape[-1])
    if len(class_names) != classes:
        raise ValueError(f"class_names has {len(class_names)} entries but the model predicts "
                         f"{classes} classes.")
    k = min(top_k, classes)
    names = tf.constant(list(class_names))
    crop = transform.crop

    def predict(images):
        tf.debugging.assert_less_equal(
            tf.cast(tf.shape(images)[1], tf.int64) * tf.cast(tf.shape(images)[2], tf.int64),
            tf.constant(max_pixels, tf.int64),
            message=f"images too large: this model accepts at most {max_pixels:,} pixels per image")
        probabilities = tf.cast(model(images, training=False), tf.float32)
        scores, indices = tf.math.top_k(probabilities, k=k)
        return {"probabilities": probabilities, "scores": scores,
                "classes": tf.cast(indices, tf.int64), "class_names": tf.gather(names, indices)}

    def decode(encoded_and_index):
        # The header's size is checked before decoding (an error names the image's index in
        # the batch); then THE eval transform, the one the trainer evaluates with, computed
        # for the crop's pixels only.
        encoded, index = encoded_and_index
        return eval_crop(decode_rgb(encoded, max_pixels, index=index), transform)

    module = tf.Module()
    # Track the backend tf.Variables themselves: restoring through the Keras wrappers alone
    # leaves the TF1 loader that TF Serving uses with uninitialised variables.
    module.model_variables = [v.value for v in model.variables]
    module.labels = tf.saved_model.Asset(labels_path)

    @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], tf.float32, name="images")])
    def serve_images(images):
        return predict(images)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="image_bytes")])
    def serve_bytes(image_bytes):
        # One image at a time: a request's memory is bounded by its largest image, not by
        # ten of them decoded side by side (map_fn's default in a graph).
        images = tf.map_fn(decode, (image_bytes, tf.range(tf.size(image_bytes))),
                           fn_output_signature=tf.TensorSpec([crop, crop, 3], tf.float32),
                           parallel_iterations=1)
        return predict(images)

    module.serve_images, module.serve_bytes = serve_images, serve_bytes
    return module


def _warmup_records(model_name: str, transform: EvalTransform) -> list[bytes] | None:
    try:
        from tensorflow_serving.apis import predict_pb2, prediction_log_pb2
    except ImportError:
        log.warning("tensorflow-serving-api is not installed: no TF Serving warmup file written "
                    "(pip install 'keras-regnet[serving]').")
        return None
    import tensorflow as tf

    image = np.random.default_rng(0).uniform(0, 255, (transform.crop, transform.crop, 3))
    jpeg = tf.io.encode_jpeg(image.astype("uint8")).numpy()
    records = []
    for signature, key, tensor in (
        (SIGNATURE_IMAGES, "images", tf.make_tensor_proto(image[None].astype("float32"))),
        (SIGNATURE_BYTES, "image_bytes", tf.make_tensor_proto([jpeg])),
    ):
        request = predict_pb2.PredictRequest()
        request.model_spec.name = model_name
        request.model_spec.signature_name = signature
        request.inputs[key].CopyFrom(tensor)
        entry = prediction_log_pb2.PredictionLog(predict_log=prediction_log_pb2.PredictLog(request=request))
        records.append(entry.SerializeToString())
    return records


SAVED_MODEL_KIND = "saved_model"


def _version_dir(output: str, version: int, overwrite: bool) -> str:
    if not isinstance(version, int) or version < 1:
        raise ValueError(f"version must be a positive integer (TF Serving's layout), got {version}.")
    try:
        return check_folder_target(os.path.join(output, str(version)), SAVED_MODEL_KIND, overwrite)
    except FileExistsError as err:
        raise FileExistsError(f"{err} (or choose another --version)") from None


def export_saved_model(model, output: str, version: int = 1, *, model_name: str = "regnet",
                       class_names: Sequence[str] | None = None,
                       transform: EvalTransform | None = None, top_k: int = 5,
                       overwrite: bool = False, max_pixels: int = DEFAULT_MAX_PIXELS,
                       weights_record: dict | None = None) -> str:
    """Writes ``output/version/`` as a TF Serving SavedModel with both signatures.

    Args:
        model: a Keras model (TensorFlow backend) mapping RGB [0, 255] images to class
            probabilities, e.g. a keras_regnet model with ``include_preprocessing=True``.
        output: the model's base directory (TF Serving's ``--model_base_path``).
        version: the version sub-directory (a positive integer).
        model_name: the name TF Serving serves it under (used in the warmup requests).
        class_names: one name per class; default the ImageNet names for 1000 classes,
            ``class_0`` ... otherwise. Written to ``assets/labels.txt`` and returned by the
            signatures.
        transform: the eval transform for ``serving_bytes`` (default resize 256, crop 224).
        top_k: how many top classes the signatures return.
        overwrite: replace an existing version directory.
        max_pixels: the largest image (height x width) a request may carry; larger ones are
            refused with INVALID_ARGUMENT before decoding (the size comes from the header).
        weights_record: what the weights are (``ResolvedWeights.describe()``: tag, files,
            source, licence, sha256), written to ``assets.extra/weights.json``.

    Returns:
        The version directory.

    Example:
        >>> model = keras_regnet.RegNetX002(weights=None)  # doctest: +SKIP
        >>> export_saved_model(model, "/tmp/served/regnet")  # doctest: +SKIP
        '/tmp/served/regnet/1'
    """

    transform = transform or EvalTransform()
    if not (isinstance(top_k, int) and top_k >= 1):
        raise ValueError(f"top_k must be a positive integer, got {top_k!r}.")
    if not (isinstance(max_pixels, int) and max_pixels >= transform.crop**2):
        raise ValueError(f"max_pixels must be an integer of at least the crop's "
                         f"{transform.crop**2:,} pixels, got {max_pixels!r}.")
    target = _version_dir(output, version, overwrite)
    # Served models only infer: BNs folded into their convs are free (+12% on RegNetX004).
    model = fold_for_inference(model)
    classes = int(model.output_shape[-1])
    if class_names is None:
        class_names = default_class_names(classes)
    os.makedirs(output, exist_ok=True)
    with exclusive_writer(target, leftovers=[f".{version}.exporting."]):
        _version_dir(output, version, overwrite)  # another writer may have finished meanwhile
        staging = new_staging(target, directory=output, prefix=f".{version}.exporting.", suffix="")
        try:
            _write_saved_model(staging, model, class_names, transform, top_k, max_pixels, model_name,
                               weights_record)
            replace_directory(os.path.join(staging, "model"), target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return target


def _write_saved_model(staging: str, model, class_names, transform: EvalTransform, top_k: int,
                       max_pixels: int, model_name: str, weights_record: dict | None) -> None:
    """The SavedModel, its labels, warmup requests, weights record and marker, in
    ``staging/model``."""
    import tensorflow as tf

    labels = os.path.join(staging, LABELS_FILE)
    with open(labels, "w", encoding="utf-8") as f:
        f.write("\n".join(class_names) + "\n")
    module = _serving_module(model, class_names, transform, top_k, labels, max_pixels)
    saved = os.path.join(staging, "model")
    tf.saved_model.save(module, saved, signatures={
        SIGNATURE_IMAGES: module.serve_images, SIGNATURE_BYTES: module.serve_bytes})
    os.makedirs(os.path.join(saved, "assets.extra"))  # files TF Serving does not load
    records = _warmup_records(model_name, transform)
    if records is not None:
        with tf.io.TFRecordWriter(os.path.join(saved, WARMUP_FILE)) as writer:
            for record in records:
                writer.write(record)
    if weights_record is not None:
        with open(os.path.join(saved, WEIGHTS_RECORD_FILE), "w", encoding="utf-8") as f:
            json.dump(weights_record, f, indent=2)
    mark(saved, SAVED_MODEL_KIND)


def fold_for_inference(model):
    """The folded copy of ``model``, or ``model`` itself (with a warning) where it cannot be
    copied (a subclassed model): exporting never fails for want of folding."""
    try:
        return fold_batch_norms(model)
    except ValueError as err:
        log.warning("exporting %s without folding its batch norms: %s", model.name, err)
        return model


def export_tflite(model, path: str, quantize: str = "none", overwrite: bool = False,
                  image_size: int = 224, calibration: np.ndarray | None = None) -> str:
    """Writes a LiteRT ``.tflite`` file of the folded model (RGB 0-255 -> probabilities).

    ``quantize="none"``: float32, dynamic batch, height and width (Keras's ``litert`` export).
    ``quantize="dynamic"``: weights stored as int8 (dynamic-range quantisation), input fixed
    at ``[1, image_size, image_size, 3]``.
    ``quantize="int8"``: full integer: int8 weights and activations, builtin int8 kernels only
    (no float fallback), uint8 RGB input and uint8 probabilities (scale 1/256), input fixed at
    ``[1, image_size, image_size, 3]``; ``calibration`` is the representative batch
    (:func:`keras_regnet.calibration.calibration_images`).
    """
    import tensorflow as tf

    from keras_regnet.formats import export_keras_format, quiet_converters

    if quantize not in QUANTIZATIONS:
        raise ValueError(f"quantize must be one of {QUANTIZATIONS}, got {quantize!r}.")
    if quantize == "none":
        return export_keras_format(fold_for_inference(model), path, "litert", overwrite=overwrite)
    if quantize == "int8" and (calibration is None or not len(calibration)):
        raise ValueError("quantize='int8' needs calibration images (--calibration DIR|TFRECORDS): "
                         "the activations' ranges are measured on them.")
    import keras

    # A fixed [1, size, size, 3] input: the quantising converter wants static shapes.
    folded = fold_for_inference(model)
    inputs = keras.Input((image_size, image_size, 3), batch_size=1, name="images")
    fixed = keras.Model(inputs, folded(inputs, training=False))
    converter = tf.lite.TFLiteConverter.from_keras_model(fixed)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if quantize == "int8":
        batch = np.asarray(calibration, "float32")
        if batch.shape[1:] != (image_size, image_size, 3):
            raise ValueError(f"calibration images are {batch.shape[1:]}, the model's input "
                             f"({image_size}, {image_size}, 3).")
        converter.representative_dataset = lambda: ([image[None]] for image in batch)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        # RGB 0-255 is exactly uint8 (scale 1, zero point 0): clients feed their pixels as they are.
        converter.inference_input_type = tf.uint8
        converter.inference_output_type = tf.uint8
    with quiet_converters():
        flatbuffer = converter.convert()
    with exclusive_writer(path):
        if os.path.exists(path) and not overwrite:
            raise FileExistsError(f"{path} already exists; pass overwrite=True (--overwrite).")
        with atomic_path(path, suffix=".tflite") as tmp, open(tmp, "wb") as f:
            f.write(flatbuffer)
    return path


def tflite_max_difference(path: str, model, images: np.ndarray) -> float:
    """max |output difference| between a .tflite file (run by LiteRT) and the Keras model,
    image by image."""
    import keras

    from keras_regnet.formats import run_artifact

    worst = 0.0
    for image in images:
        expected = keras.ops.convert_to_numpy(model(image[None], training=False))
        diff = np.abs(run_artifact(path, image[None]) - expected)
        worst = max(worst, float(np.max(diff)) if np.all(np.isfinite(diff)) else float("inf"))
    return worst


def has_xla(saved_model_dir: str) -> list[str]:
    """Names of XLA ops or jit-compiled functions found in a SavedModel (empty: none)."""
    from tensorflow.core.protobuf import saved_model_pb2

    proto = saved_model_pb2.SavedModel()
    with open(os.path.join(saved_model_dir, "saved_model.pb"), "rb") as f:
        proto.ParseFromString(f.read())
    found = []
    for meta in proto.meta_graphs:
        nodes = list(meta.graph_def.node)
        for function in meta.graph_def.library.function:
            if "_XlaMustCompile" in function.attr and function.attr["_XlaMustCompile"].b:
                found.append(f"function {function.signature.name} (_XlaMustCompile)")
            nodes.extend(function.node_def)
        found += [f"op {n.op} in {n.name}" for n in nodes
                  if n.op.startswith("Xla") or ("_XlaMustCompile" in n.attr and n.attr["_XlaMustCompile"].b)]
    return found
