"""Train a RegNet: ``python training/train.py --strategy mirrored [--data_dir ...]``.

With no --data_dir it trains on the embedded handwritten-digits demo (32x32, 10 classes) on
2 logical CPU replicas, then evaluates and exports: the whole job runs in a few minutes on a
laptop CPU. With --data_dir it reads ImageNet-format TFRecords (train-*, validation-*).
"""

from __future__ import annotations

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags, logging  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_string("model", None, "Model name (default RegNetX002; RegNetY016-like names).")
flags.DEFINE_string("data_dir", None, "TFRecord directory (or TFDS data_dir with --tfds_name); "
                    "empty: the embedded digits demo.")
flags.DEFINE_string("tfds_name", None, "Read a prepared TFDS dataset, e.g. imagenet2012.")
flags.DEFINE_string("model_dir", None, "Checkpoints, logs, metrics.json, final weights, export/.")
flags.DEFINE_enum("strategy", "mirrored", ["mirrored", "multi_worker", "tpu", "one_device"], "")
flags.DEFINE_integer("epochs", None, "Default 100 (demo: 30).")
flags.DEFINE_integer("batch_size", None, "Global batch size. Default 1024 (demo: 64).")
flags.DEFINE_integer("image_size", None, "Default 224 (demo: 32).")
flags.DEFINE_enum("precision", "fp32", ["fp32", "mixed_float16", "mixed_bfloat16"], "")
flags.DEFINE_string("init_weights", None, "imagenet, a weight tag, or a weights file.")
flags.DEFINE_integer("num_classes", None, "Default 1000 (demo: 10).")
flags.DEFINE_integer("freeze_stages", 0, "Freeze the stem (1) and stages 1..N-1 (2..5).")
flags.DEFINE_integer("label_offset", None, "Subtracted from labels; default: detect 1- vs 0-based.")
flags.DEFINE_enum("recipe", "pycls", ["pycls", "modern"], "")
flags.DEFINE_integer("cpu_replicas", None, "Split the CPU into N logical devices (demo: 2).")
flags.DEFINE_string("tpu", None, "TPU address for --strategy tpu.")
flags.DEFINE_integer("steps_per_epoch", None, "Default: one pass over the training shards.")
flags.DEFINE_integer("checkpoint_every", 200, "Checkpoint every N steps (and at epoch ends).")
flags.DEFINE_integer("seed", 0, "")
flags.DEFINE_float("learning_rate", None, "Peak learning rate for the global batch (default: the "
                   "recipe's rule; pycls: 0.1 x batch_size / 128). Lower it for fine-tuning.")
flags.DEFINE_float("weight_decay", None, "Default: the recipe's (pycls: 5e-5, as L2 in the gradient; "
                   "modern: AdamW's decoupled 0.05).")
flags.DEFINE_bool("benchmark_input", False, "Only measure the input pipeline's images/s.")
flags.DEFINE_float("crop_area_min", None, "Inception crop's smallest area (default 0.08; demo 0.35).")
flags.DEFINE_bool("flip", None, "Random horizontal flips (default on; demo off).")

# Digits: no flips (a mirrored 2 is no 2) and milder crops (a 0.08 crop of an 8x8 scan is noise).
DEMO = dict(model="RegNetX002", epochs=40, batch_size=64, image_size=32, num_classes=10,
            cpu_replicas=2, crop_area_min=0.35, flip=False)
FULL = dict(model="RegNetX002", epochs=100, batch_size=1024, image_size=224, num_classes=1000,
            cpu_replicas=0, crop_area_min=0.08, flip=True)


def config_from_flags():
    from keras_regnet.training.config import TrainConfig
    from keras_regnet.training.demo import prepare

    demo = FLAGS.data_dir is None and FLAGS.tfds_name is None
    defaults = DEMO if demo else FULL
    pick = {k: getattr(FLAGS, k, None) if getattr(FLAGS, k, None) is not None else v
            for k, v in defaults.items()}
    run_name = "demo" if demo else pick["model"]
    model_dir = FLAGS.model_dir or os.path.join(os.getcwd(), "runs", run_name)
    data_dir = prepare(os.path.join(model_dir, "demo_data")) if demo else FLAGS.data_dir
    return TrainConfig(
        data_dir=data_dir, tfds_name=FLAGS.tfds_name, model_dir=model_dir, strategy=FLAGS.strategy,
        precision=FLAGS.precision,
        init_weights=FLAGS.init_weights, freeze_stages=FLAGS.freeze_stages,
        label_offset=FLAGS.label_offset, recipe=FLAGS.recipe, tpu=FLAGS.tpu,
        steps_per_epoch=FLAGS.steps_per_epoch, checkpoint_every=FLAGS.checkpoint_every,
        seed=FLAGS.seed, learning_rate=FLAGS.learning_rate, weight_decay=FLAGS.weight_decay, **pick)


def main(argv):
    del argv
    logging.set_verbosity(logging.INFO)
    replicas = FLAGS.cpu_replicas if FLAGS.cpu_replicas is not None else (
        DEMO["cpu_replicas"] if FLAGS.data_dir is None and FLAGS.tfds_name is None else 0)
    if replicas > 1 and FLAGS.strategy in ("mirrored", "multi_worker"):
        from keras_regnet.training.distribute import split_cpu

        split_cpu(replicas)  # before the demo data writer starts TensorFlow
    config = config_from_flags()
    if FLAGS.benchmark_input:
        from keras_regnet.training.benchmark import benchmark_input

        benchmark_input(config)
        return 0
    from keras_regnet.training.loop import run

    run(config)
    return 0


if __name__ == "__main__":
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
    app.run(main)
