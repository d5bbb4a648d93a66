"""Writing standard ImageNet-format TFRecord shards (the layout the readers expect)."""

from __future__ import annotations

import concurrent.futures
import json
import logging
import os
import random
import shutil
import sys
from typing import Iterable, Sequence

import numpy as np
import tensorflow as tf

from keras_regnet.files import atomic_path, new_staging
from keras_regnet.training.data import RECORD_COUNTS_FILE, read_record_counts

log = logging.getLogger(__name__)
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif")


def _bytes(value: bytes) -> tf.train.Feature:
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))


def _int(value: int) -> tf.train.Feature:
    return tf.train.Feature(int64_list=tf.train.Int64List(value=[value]))


def to_rgb_jpeg(data: bytes) -> tuple[bytes, int, int]:
    """Returns (JPEG bytes, height, width); PNG, GIF, BMP and CMYK/grey JPEGs are re-encoded."""
    is_jpeg = data[:3] == b"\xff\xd8\xff"
    if is_jpeg:
        shape = tf.io.extract_jpeg_shape(data).numpy()
        if shape[2] == 3:
            return data, int(shape[0]), int(shape[1])
    image = tf.io.decode_image(data, channels=3, expand_animations=False)
    return tf.io.encode_jpeg(image, quality=95).numpy(), int(image.shape[0]), int(image.shape[1])


def make_example(jpeg: bytes, label: int, synset: str, height: int, width: int,
                 filename: str) -> tf.train.Example:
    return tf.train.Example(features=tf.train.Features(feature={
        "image/encoded": _bytes(jpeg), "image/format": _bytes(b"JPEG"),
        "image/class/label": _int(label), "image/class/synset": _bytes(synset.encode()),
        "image/height": _int(height), "image/width": _int(width),
        "image/filename": _bytes(filename.encode()),
    }))


def write_split(items: Sequence[tuple[bytes | str, int, str, str]], output_dir: str, split: str,
                num_shards: int, workers: int = 4, progress: bool = True) -> list[str]:
    """Writes ``split-%05d-of-%05d`` shards from ``(data_or_path, label, synset, name)`` items.

    All or nothing: the shards are written into a staging folder and moved into
    ``output_dir`` only once every one of them is complete (replacing an earlier set of the
    split), so an interrupted run never leaves a partial ``-of-N`` set for the trainer to read.
    An image that does not decode is skipped with a warning that names it; the set written is
    complete without it, and ``record_counts.json`` counts what was written.
    """
    os.makedirs(output_dir, exist_ok=True)
    shards = [items[i::num_shards] for i in range(num_shards)]
    done, skipped = [0], []
    tty = sys.stderr.isatty()
    staging = new_staging(output_dir, directory=output_dir, prefix=f".{split}-staging-", suffix="")

    def write(index: int) -> str:
        name = f"{split}-{index:05d}-of-{num_shards:05d}"
        with tf.io.TFRecordWriter(os.path.join(staging, name)) as writer:
            for data, label, synset, filename in shards[index]:
                try:
                    jpeg, h, w = to_rgb_jpeg(_read(data))
                except (tf.errors.InvalidArgumentError, OSError) as err:
                    where = data if isinstance(data, str) else filename
                    skipped.append(where)
                    log.warning("skipping %s: not a readable image (%s)", where,
                                getattr(err, "message", err))
                    continue
                writer.write(make_example(jpeg, label, synset, h, w, filename).SerializeToString())
                done[0] += 1
        if progress:  # one rewritten line on a terminal, a line per shard in a log file
            line = f"{split}: {done[0]}/{len(items)} images"
            print(f"\r{line}" if tty else line, end="" if tty else "\n", file=sys.stderr, flush=True)
        return name

    try:
        with concurrent.futures.ThreadPoolExecutor(workers) as pool:
            names = list(pool.map(write, range(num_shards)))
        if progress and tty:
            print(file=sys.stderr)
        if not done[0]:
            raise ValueError(f"None of the {len(items)} {split} images could be read; nothing written.")
        for old in tf.io.gfile.glob(os.path.join(output_dir, f"{split}-*-of-*")):
            os.remove(old)  # an earlier set, maybe with another shard count
        for name in names:
            os.replace(os.path.join(staging, name), os.path.join(output_dir, name))
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    if skipped:
        log.warning("%s: skipped %d unreadable image(s): %s", split, len(skipped), ", ".join(skipped[:10])
                    + (" ..." if len(skipped) > 10 else ""))
    write_record_count(output_dir, split, done[0])
    return [os.path.join(output_dir, name) for name in names]


def _read(data: bytes | str) -> bytes:
    if isinstance(data, str):
        with open(data, "rb") as f:
            return f.read()
    return data


def write_record_count(output_dir: str, split: str, count: int) -> None:
    """Records the split's size beside the shards, so the trainer need not count them."""
    counts = read_record_counts(output_dir) | {split: count}
    path = os.path.join(output_dir, RECORD_COUNTS_FILE)
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        json.dump(counts, f, indent=1, sort_keys=True)


def folder_items(root: str, classes: Sequence[str], label_base: int, seed: int | None) -> list:
    """``root/<class>/<image>`` -> items, labels ``label_base + index of class``, shuffled."""
    index = {c: i for i, c in enumerate(classes)}
    items = []
    for cls in classes:
        directory = os.path.join(root, cls)
        for name in sorted(os.listdir(directory)):
            if name.lower().endswith(IMAGE_SUFFIXES):
                items.append((os.path.join(directory, name), index[cls] + label_base, cls, name))
    if seed is not None:
        random.Random(seed).shuffle(items)  # otherwise shards hold one class each
    return items


def labelled_items(directory: str, labels_file: str, classes: Sequence[str], label_base: int,
                   seed: int | None) -> list:
    """A flat folder plus a ``filename synset`` (or ``filename label``) file, e.g. ImageNet val."""
    index = {c: i for i, c in enumerate(classes)}
    items = []
    with open(labels_file, encoding="utf-8") as f:
        for line in f:
            if not line.strip():
                continue
            name, cls = line.split()[:2]
            if cls not in index:
                raise ValueError(f"{labels_file}: class {cls!r} of {name} is not one of the "
                                 f"training classes.")
            items.append((os.path.join(directory, name), index[cls] + label_base, cls, name))
    if seed is not None:
        random.Random(seed).shuffle(items)
    return items


def write_arrays(images: np.ndarray, labels: Iterable[int], classes: Sequence[str], output_dir: str,
                 split: str, num_shards: int, label_base: int = 1) -> list[str]:
    """uint8 ``[N, H, W, 3]`` arrays -> shards (used for the embedded demo data)."""
    items = [(tf.io.encode_jpeg(img, quality=95).numpy(), int(y) + label_base, classes[int(y)],
              f"{split}_{i}.jpg") for i, (img, y) in enumerate(zip(images, labels))]
    return write_split(items, output_dir, split, num_shards, progress=False)
