"""In-process Keras inference vs the exported SavedModel (as TF Serving runs it), same run.

    python benchmarks/bench_export.py --model RegNetY032 --batch 32
"""

from __future__ import annotations

import os
import tempfile

from timing_args import check_models, timing_parser  # same folder

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def main() -> None:
    parser = timing_parser(__doc__, model="RegNetY032", batch=32, warmup=2, repeats=5)
    args = parser.parse_args()
    (args.model,) = check_models(parser, [args.model])

    import numpy as np
    import tensorflow as tf
    from bench_models import _median_rate as median_rate  # same folder

    import keras_regnet
    from keras_regnet import export

    model = keras_regnet.RegNet(args.model, weights=None, input_shape=(None, None, 3))
    x = np.random.default_rng(0).uniform(0, 255, (args.batch, 224, 224, 3)).astype("float32")
    with tempfile.TemporaryDirectory() as tmp:
        path = export.export_saved_model(model, tmp, 1)
        served = tf.saved_model.load(path).signatures["serving_default"]
        images = tf.constant(x)
        rates = {
            "keras predict_on_batch": median_rate(lambda: model.predict_on_batch(x), args.batch,
                                                  args.warmup, args.repeats),
            "SavedModel serving_default": median_rate(lambda: served(images=images), args.batch,
                                                      args.warmup, args.repeats),
        }
    base = rates["keras predict_on_batch"]
    print(f"{args.model}, batch {args.batch}, 224x224, median of {args.repeats}; images/s")
    for name, rate in rates.items():
        print(f"  {name:<28} {rate:8.1f}   ratio to in-process {rate / base:5.2f}")


if __name__ == "__main__":
    main()
