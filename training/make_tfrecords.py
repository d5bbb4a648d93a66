"""Class-per-folder images -> standard ImageNet-format TFRecord shards.

    python training/make_tfrecords.py --train_dir ~/imagenet/train \
        --validation_dir ~/imagenet/val --validation_labels ~/imagenet/val_labels.txt \
        --output_dir ~/imagenet/tfrecords

``train_dir/<class>/<image>``: the sorted class folder names define the labels. The
validation split is either the same layout (``--validation_dir`` alone) or a flat folder with
a ``filename class`` labels file (ImageNet's validation set). Labels are 1-based by default
(like the widely used imagenet_to_gcs script; ``--label_base 0`` for 0-based, like TFDS).
PNG, CMYK and greyscale images are re-encoded as RGB JPEG. Unlike imagenet_to_gcs, the file
list is shuffled (with --seed) so that no shard holds a single class. A split's shards appear
all at once when complete (never a partial set); an unreadable image is skipped with a warning
naming it; each split's record count goes to record_counts.json for the trainer.
"""

from __future__ import annotations

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_string("train_dir", None, "Folder of class folders.", required=True)
flags.DEFINE_string("validation_dir", None, "Validation images (class folders or flat).")
flags.DEFINE_string("validation_labels", None, "'filename class' lines for a flat validation folder.")
flags.DEFINE_string("output_dir", None, "Where the shards go.", required=True)
flags.DEFINE_integer("train_shards", 1024, "")
flags.DEFINE_integer("validation_shards", 128, "")
flags.DEFINE_integer("label_base", 1, "1: labels 1..N (imagenet_to_gcs); 0: 0..N-1 (TFDS).")
flags.DEFINE_integer("seed", 0, "Shuffle seed for the file lists.")
flags.DEFINE_integer("workers", 8, "Parallel shard writers.")


def main(argv):
    del argv
    try:
        return _write()
    except (ValueError, OSError) as err:  # one line for a user's mistake, never a traceback
        print(f"make_tfrecords: error: {err}", file=sys.stderr)
        return 2


def _write() -> int:
    from keras_regnet.training.tfrecords import folder_items, labelled_items, write_split

    classes = sorted(d for d in os.listdir(FLAGS.train_dir)
                     if os.path.isdir(os.path.join(FLAGS.train_dir, d)))
    if not classes:
        raise app.UsageError(f"{FLAGS.train_dir} holds no class folders.")
    train = folder_items(FLAGS.train_dir, classes, FLAGS.label_base, FLAGS.seed)
    write_split(train, FLAGS.output_dir, "train", min(FLAGS.train_shards, len(train)), FLAGS.workers)
    if FLAGS.validation_dir:
        if FLAGS.validation_labels:
            val = labelled_items(FLAGS.validation_dir, FLAGS.validation_labels, classes,
                                 FLAGS.label_base, FLAGS.seed)
        else:
            val = folder_items(FLAGS.validation_dir, classes, FLAGS.label_base, FLAGS.seed)
        write_split(val, FLAGS.output_dir, "validation", min(FLAGS.validation_shards, len(val)),
                    FLAGS.workers)
    with open(os.path.join(FLAGS.output_dir, "labels.txt"), "w", encoding="utf-8") as f:
        f.write("\n".join(classes) + "\n")
    print(f"wrote {len(classes)} classes to {FLAGS.output_dir}")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
    app.run(main)
