"""A keras_regnet SavedModel served on the GPU by plain TensorFlow (benchmarks/gpu.py runs it).

    python benchmarks/serve_gpu_check.py RegNetX004 --batch 32

Exports the model (``keras-regnet export``'s SavedModel), serves ``serving_default`` in a
fresh process that never imports keras_regnet, on the GPU, and prints one JSON line: the max
|difference| against the Keras model on the CPU and the served images/s. Exits non-zero where
TensorFlow sees no GPU. ``--device cpu`` serves on the CPU instead (the smoke test's run).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

from timing_args import check_models  # same folder


def serve(path: str, images: str, device: str) -> None:
    """The client side: plain TensorFlow, on the GPU (or the CPU when asked)."""
    import numpy as np
    import tensorflow as tf

    if device == "gpu" and not tf.config.list_logical_devices("GPU"):
        raise SystemExit("TensorFlow sees no GPU")
    served = tf.saved_model.load(path).signatures["serving_default"]
    x = tf.constant(np.load(images))
    with tf.device(f"/{device.upper()}:0"):
        out = served(images=x)["probabilities"].numpy()
        start = time.perf_counter()
        for _ in range(5):
            served(images=x)["probabilities"].numpy()
    rate = 5 * len(out) / (time.perf_counter() - start)
    print(json.dumps({"probabilities": out.tolist(), "rate": rate}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("model")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--device", choices=("gpu", "cpu"), default="gpu",
                        help="where the served model runs (cpu: to try the script without a GPU)")
    parser.add_argument("--serve", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(*args.serve, args.device)
        return
    (args.model,) = check_models(parser, [args.model])

    import numpy as np
    import tensorflow as tf

    if args.device == "gpu" and not tf.config.list_physical_devices("GPU"):
        raise SystemExit("TensorFlow sees no GPU")  # said before a model is built and exported
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    import keras_regnet
    from keras_regnet import export

    model = keras_regnet.RegNet(args.model, weights=None, input_shape=(None, None, 3))
    x = np.random.default_rng(0).uniform(0, 255, (args.batch, 224, 224, 3)).astype("float32")
    with tempfile.TemporaryDirectory() as tmp:
        path = export.export_saved_model(model, tmp, 1)
        np.save(os.path.join(tmp, "x.npy"), x)
        run = subprocess.run([sys.executable, __file__, args.model, "--device", args.device, "--serve",
                              path, os.path.join(tmp, "x.npy")], capture_output=True, text=True)
    if run.returncode:
        raise SystemExit((run.stderr.strip().splitlines() or ["the served model failed"])[-1])
    served = json.loads(run.stdout.strip().splitlines()[-1])
    with keras_regnet.layers.keras.device("cpu:0"):
        expected = np.asarray(model(x, training=False))
    difference = float(np.abs(np.array(served["probabilities"]) - expected).max())
    print(json.dumps({"max_difference": difference, "rate": served["rate"]}))


if __name__ == "__main__":
    main()
