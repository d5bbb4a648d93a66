"""Serves a SavedModel as a deployment does, in a process that never imports keras_regnet.

    python tf_serving_client.py SAVED_MODEL IMAGES.npy [ENCODED_IMAGE ...]

Runs both signatures through TF Serving's loader (TF1 Session, tensors named by the
SignatureDef) and through ``tf.saved_model.load``, and prints one JSON line:
``{"tf1": {"serving_default": ..., "serving_bytes": ...}, "tf2": {...}}`` (probabilities), or
``{"error": "..."}``. The caller sets TF_ENABLE_ONEDNN_OPTS in this process's environment.
"""

import json
import sys

import numpy as np
import tensorflow as tf


def main(path: str, images_file: str, encoded_files: list[str]) -> dict:
    images = np.load(images_file)
    encoded = [open(f, "rb").read() for f in encoded_files]
    feeds = {"serving_default": ("images", images), "serving_bytes": ("image_bytes", encoded)}
    if not encoded:
        del feeds["serving_bytes"]
    out = {"tf1": {}, "tf2": {}}
    with tf.compat.v1.Session(graph=tf.Graph()) as sess:
        meta = tf.compat.v1.saved_model.loader.load(sess, ["serve"], path)
        for name, (key, value) in feeds.items():
            sig = meta.signature_def[name]
            out["tf1"][name] = sess.run(sig.outputs["probabilities"].name,
                                        {sig.inputs[key].name: value}).tolist()
    loaded = tf.saved_model.load(path)
    for name, (key, value) in feeds.items():
        result = loaded.signatures[name](**{key: tf.constant(value)})
        out["tf2"][name] = result["probabilities"].numpy().tolist()
    out["imported_keras_regnet"] = any(m.startswith("keras_regnet") for m in sys.modules)
    return out


if __name__ == "__main__":
    try:
        result = main(sys.argv[1], sys.argv[2], sys.argv[3:])
    except Exception as err:  # reported to the test, which prints it
        result = {"error": f"{type(err).__name__}: {err}"}
    print(json.dumps(result))
