"""Input pipelines: ImageNet-format TFRecords (and TFDS), decoded, augmented, batched.

Decoder -> parser -> reader, as in the TF Model Garden: :func:`parse_example` reads the
standard tf.Example keys, :func:`train_image` augments one image (evaluation uses
:func:`keras_regnet.preprocessing.eval_crop`, as the exported model does),
:func:`make_dataset` shards, interleaves, shuffles and batches. Images stay RGB in [0, 255]:
the model normalises them itself, so normalisation happens exactly once.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from typing import Iterator

import numpy as np
import tensorflow as tf

from keras_regnet.preprocessing import decode_rgb, eval_crop
from keras_regnet.training.config import PipelineConfig

log = logging.getLogger(__name__)

# AlexNet PCA lighting noise, RGB eigen-decomposition of ImageNet pixel colours (values in [0, 1]).
_EIG_VALS = np.array([0.2175, 0.0188, 0.0045], "float32")
_EIG_VECS = np.array([[-0.5675, 0.7192, 0.4009],
                      [-0.5808, -0.0045, -0.8140],
                      [-0.5836, -0.6948, 0.4203]], "float32")
PCA_STD = 0.1
FEATURES = {
    "image/encoded": tf.io.FixedLenFeature([], tf.string),
    "image/class/label": tf.io.FixedLenFeature([], tf.int64),
}
SPLIT_PATTERNS = {"train": "train-*", "validation": "validation-*"}
RECORD_COUNTS_FILE = "record_counts.json"  # {"train": N, "validation": M}, written with the shards


def split_files(data_dir: str, split: str) -> list[str]:
    """The sorted shard files of a split (``train-*`` / ``validation-*``)."""
    files = sorted(tf.io.gfile.glob(os.path.join(data_dir, SPLIT_PATTERNS[split])))
    if not files:
        raise FileNotFoundError(
            f"No {split} shards matching {SPLIT_PATTERNS[split]!r} in {data_dir}. Write them with "
            f"training/make_tfrecords.py, or pass the directory that holds them.")
    return files


class CorruptShardError(ValueError):
    """A TFRecord shard that does not read to its end; the message names it."""


@contextlib.contextmanager
def naming_corrupt_shards(files: list[str], split: str) -> Iterator[None]:
    """Turns TensorFlow's DataLossError (which names no file) into one that names the shard."""
    try:
        yield
    except tf.errors.DataLossError as err:
        bad = find_corrupt_file(files)
        raise CorruptShardError(
            f"Corrupt or truncated {split} shard {bad or '(one of ' + str(len(files)) + ' files)'}: "
            f"{err.message.splitlines()[0]}. Rewrite it (training/make_tfrecords.py) or remove it.") from None


def detect_label_offset(files: list[str], num_classes: int, sample: int = 5000) -> int:
    """1 for imagenet_to_gcs-style labels (1..N), 0 for 0-based (TFDS) labels."""
    labels = []
    with naming_corrupt_shards(files, "validation"):
        for record in tf.data.TFRecordDataset(files).take(sample):
            labels.append(int(tf.io.parse_single_example(record, FEATURES)["image/class/label"]))
    if not labels:
        raise ValueError(f"The validation shards hold no records: {files[0]} ... ({len(files)} files).")
    low, high = min(labels), max(labels)
    if low == 0:
        return 0
    if high == num_classes or low >= 1:
        return 1
    return 0


def parse_example(record, label_offset: int):
    parsed = tf.io.parse_single_example(record, FEATURES)
    return parsed["image/encoded"], tf.cast(parsed["image/class/label"], tf.int32) - label_offset


def train_image(encoded, size: int, crop_area_min: float = 0.08, flip: bool = True, seed=None):
    """Inception crop (area 0.08-1, aspect 3/4-4/3) decoded from the crop alone, flip, lighting.

    ``seed`` (shape [2] integers) makes the augmentation a pure function of it (stateless ops),
    so a seeded epoch, and a resumed one, sees exactly the same crops; None draws fresh ones.
    """
    if seed is None:
        seed = tf.random.uniform([2], maxval=2**31 - 1, dtype=tf.int64)
    crop_seed, flip_seed, light_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 3))
    shape = tf.io.extract_jpeg_shape(encoded)
    begin, crop_size, _ = tf.image.stateless_sample_distorted_bounding_box(
        shape, bounding_boxes=tf.zeros([1, 0, 4]), seed=crop_seed, min_object_covered=0.0,
        aspect_ratio_range=(3 / 4, 4 / 3), area_range=(crop_area_min, 1.0), max_attempts=10,
        use_image_if_no_bounding_boxes=True)
    y, x, _ = tf.unstack(begin)
    h, w, _ = tf.unstack(crop_size)
    image = tf.io.decode_and_crop_jpeg(encoded, tf.stack([y, x, h, w]), channels=3)
    image = tf.image.resize(image, [size, size], method="bilinear")
    if flip:
        image = tf.image.stateless_random_flip_left_right(image, flip_seed)
    alpha = tf.random.stateless_normal([3], light_seed, stddev=PCA_STD)
    # The noise is defined on [0, 1] images; ours are [0, 255].
    image += 255.0 * tf.linalg.matvec(_EIG_VECS, alpha * _EIG_VALS)
    return tf.clip_by_value(image, 0.0, 255.0)


def make_dataset(files: list[str], pipeline: PipelineConfig) -> tf.data.Dataset:
    """A batched (images, labels) dataset of TFRecord shards for one input pipeline (worker).

    Training data is sharded by file across workers, read interleaved from several files and
    shuffled (shard order is not random), all seeded so that an epoch's order is reproducible:
    a resumed run skips the ``skip_batches`` it already trained on and sees the same rest.
    Evaluation data is sharded by record, so every record is evaluated exactly once.
    """
    p = pipeline
    ds = tf.data.Dataset.from_tensor_slices(files)
    if p.training:
        if p.num_shards > 1:
            ds = ds.shard(p.num_shards, p.shard_index)
        ds = ds.shuffle(len(files), seed=p.seed, reshuffle_each_iteration=False)
    ds = ds.interleave(tf.data.TFRecordDataset, cycle_length=min(16, len(files)),
                       num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    if not p.training and p.num_shards > 1:
        ds = ds.shard(p.num_shards, p.shard_index)
    ds = ds.map(lambda r: parse_example(r, p.label_offset), num_parallel_calls=tf.data.AUTOTUNE)
    return _transform_and_batch(ds, p)


def make_tfds_dataset(name: str, data_dir: str | None, split: str,
                      pipeline: PipelineConfig) -> tf.data.Dataset:
    """The same pipeline over a prepared TFDS dataset (e.g. ``imagenet2012``, labels 0-based).

    Images are read still encoded (``SkipDecoding``) so the training crop is decoded alone.
    """
    try:
        import tensorflow_datasets as tfds
    except ImportError as err:
        raise ImportError("Reading TFDS needs tensorflow-datasets: pip install 'keras-regnet[tfds]'") from err
    p = pipeline
    builder = tfds.builder(name, data_dir=data_dir)
    read_config = tfds.ReadConfig(
        shuffle_seed=p.seed, interleave_cycle_length=16,
        input_context=tf.distribute.InputContext(num_input_pipelines=p.num_shards,
                                                 input_pipeline_id=p.shard_index))
    ds = builder.as_dataset(split=split, shuffle_files=p.training, read_config=read_config,
                            decoders={"image": tfds.decode.SkipDecoding()})
    ds = ds.map(lambda ex: (ex["image"], tf.cast(ex["label"], tf.int32)),
                num_parallel_calls=tf.data.AUTOTUNE)
    return _transform_and_batch(ds, p)


def tfds_split_size(name: str, data_dir: str | None, split: str) -> int:
    import tensorflow_datasets as tfds

    return int(tfds.builder(name, data_dir=data_dir).info.splits[split].num_examples)


def _transform_and_batch(ds, p: PipelineConfig) -> tf.data.Dataset:
    """(encoded JPEG, label) pairs -> shuffled, augmented or eval-cropped, batched."""
    if p.training:
        ds = ds.shuffle(p.shuffle_buffer, seed=p.seed, reshuffle_each_iteration=False)
        # Each example's augmentation seed is (seed, its position in the epoch): the epoch is
        # reproducible, and a resumed run skips what it trained on before decoding anything.
        ds = ds.enumerate()
        if p.skip_batches:
            ds = ds.skip(p.skip_batches * p.batch_size)
        rows = p.batch_size // p.slices
        if p.slices > 1:  # the records are read by every slice, decoded by one
            ds = ds.filter(lambda i, _: (i % p.batch_size) // rows == p.slice_index)
        ds = ds.map(lambda i, example: (
            train_image(example[0], p.image_size, p.crop_area_min, p.flip,
                        seed=tf.stack([tf.constant(p.seed, tf.int64), i])), example[1]),
            num_parallel_calls=tf.data.AUTOTUNE)
    else:
        # THE eval transform: the exported serving_bytes signature runs the same function.
        ds = ds.map(lambda e, y: (eval_crop(decode_rgb(e), p.eval_transform), y),
                    num_parallel_calls=tf.data.AUTOTUNE)
    ds = ds.batch(p.batch_size // p.slices if p.training else p.batch_size, drop_remainder=p.training)
    return ds.prefetch(tf.data.AUTOTUNE)


def split_record_count(data_dir: str, split: str, files: list[str]) -> int:
    """Records in a split: from the ``record_counts.json`` written with the shards, else counted.

    Counting reads every record (ImageNet's train split: ~140 GB); ``--train_records`` or the
    counts file avoid it.
    """
    counts = read_record_counts(data_dir)
    if split in counts:
        return counts[split]
    log.info("counting the %s records of %d files (no %s in %s; --train_records skips this)",
             split, len(files), RECORD_COUNTS_FILE, data_dir)
    return count_records(files, split)


def read_record_counts(data_dir: str) -> dict[str, int]:
    path = os.path.join(data_dir, RECORD_COUNTS_FILE)
    if not tf.io.gfile.exists(path):
        return {}
    with tf.io.gfile.GFile(path) as f:
        return {k: int(v) for k, v in json.load(f).items()}


def count_records(files: list[str], split: str = "train") -> int:
    with naming_corrupt_shards(files, split):
        return int(tf.data.TFRecordDataset(files).reduce(np.int64(0), lambda n, _: n + 1))


def find_corrupt_file(files: list[str]) -> str | None:
    """The first shard that does not read cleanly (used to name it in the error)."""
    for path in files:
        try:
            for _ in tf.data.TFRecordDataset(path):
                pass
        except tf.errors.DataLossError:
            return path
    return None
