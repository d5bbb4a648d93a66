"""Representative images for full-integer (int8) quantisation.

A quantiser measures the range of every activation on images like the ones the model will
serve; they must reach the model as serving feeds it: decoded, through the same eval transform
(resize the short side, center crop), RGB in [0, 255]. :func:`calibration_images` reads them
from a folder of image files (searched recursively) or from the trainer's TFRecords (a folder
of ``train-*`` shards, or one shard file) and returns one float32 batch.
"""

from __future__ import annotations

import logging
import os

import numpy as np

from keras_regnet.export_choices import DEFAULT_CALIBRATION_IMAGES
from keras_regnet.transforms import EvalTransform

log = logging.getLogger(__name__)
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp")


def _image_files(folder: str) -> list[str]:
    found = []
    for root, _, files in os.walk(folder):
        found.extend(os.path.join(root, f) for f in files if f.lower().endswith(IMAGE_SUFFIXES))
    return sorted(found)


def _record_files(source: str) -> list[str]:
    from keras_regnet.training.data import split_files

    if os.path.isfile(source):
        return [source]
    for split in ("train", "validation"):
        try:
            return split_files(source, split)
        except FileNotFoundError:
            continue
    return []


def _encoded_images(source: str, limit: int, seed: int) -> list[tuple[str, bytes]]:
    """Up to ``limit`` (name, encoded image) pairs, drawn at random (seeded) from the source."""
    rng = np.random.default_rng(seed)
    if os.path.isdir(source) and (files := _image_files(source)):
        chosen = sorted(rng.permutation(len(files))[:limit])
        return [(files[i], open(files[i], "rb").read()) for i in chosen]
    records = _record_files(source)
    if not records:
        raise ValueError(f"{source} holds no images ({', '.join(IMAGE_SUFFIXES)}) and no TFRecord "
                         f"shards (train-* / validation-*): point --calibration at either.")
    import tensorflow as tf

    from keras_regnet.training.data import FEATURES

    # Bounded reading: shards in a seeded order, a shuffle buffer of ten times the set; a
    # training split of a million records is not read whole for 128 images.
    shards = [records[i] for i in rng.permutation(len(records))]
    dataset = tf.data.TFRecordDataset(shards).shuffle(10 * limit, seed=seed).take(limit)
    return [(f"a record of {source}", tf.io.parse_single_example(r, FEATURES)["image/encoded"].numpy())
            for r in dataset]


def check_calibration_source(source: str | os.PathLike) -> str:
    """``source`` as a string if it exists (what it holds is read later); else FileNotFoundError.

    Example:
        >>> check_calibration_source("no/such/folder")
        Traceback (most recent call last):
        FileNotFoundError: calibration source no/such/folder does not exist.
    """
    source = os.fspath(source)
    if not os.path.exists(source):
        raise FileNotFoundError(f"calibration source {source} does not exist.")
    return source


def calibration_images(source: str | os.PathLike, transform: EvalTransform,
                       limit: int = DEFAULT_CALIBRATION_IMAGES, seed: int = 0) -> np.ndarray:
    """Up to ``limit`` images of ``source`` as the served model sees them: float32
    ``[n, crop, crop, 3]``, RGB in [0, 255].

    Example:
        >>> import tempfile, tensorflow as tf
        >>> folder = tempfile.mkdtemp()
        >>> tf.io.write_file(folder + "/a.png", tf.io.encode_png(tf.zeros([40, 50, 3], tf.uint8)))
        >>> calibration_images(folder, EvalTransform(36, 32)).shape
        (1, 32, 32, 3)
    """
    from keras_regnet.preprocessing import decode_rgb, eval_crop

    source = check_calibration_source(source)
    if limit < 1:
        raise ValueError(f"the calibration set needs at least one image, got limit={limit}.")
    batch = []
    for name, data in _encoded_images(source, limit, seed):
        try:
            batch.append(np.asarray(eval_crop(decode_rgb(data), transform), "float32"))
        except Exception as err:  # one unreadable file must not cost the whole set
            log.warning("calibration: skipping %s, which does not decode (%s)", name,
                        str(err).splitlines()[0] if str(err) else type(err).__name__)
    if not batch:
        raise ValueError(f"no calibration image in {source} decodes.")
    return np.stack(batch)
