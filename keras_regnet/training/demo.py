"""The embedded demo dataset: handwritten digits (real scans, shipped in the package).

The 1,797 8x8 greyscale digits (pixel counts 0-16) of the test set of "Optical Recognition of
Handwritten Digits" (E. Alpaydin, C. Kaynak; UCI Machine Learning Repository, CC BY 4.0), the
same arrays scikit-learn's ``load_digits`` returns, stored in ``keras_regnet/data/digits.npz``
(45 KB) so that the demo needs no extra package. Upscaled to 32x32 RGB and written as standard
1-based TFRecord shards (like imagenet_to_gcs), split 80/20 with a fixed seed.
"""

from __future__ import annotations

import os

import numpy as np

DEMO_CLASSES = [str(d) for d in range(10)]
DIGITS_FILE = os.path.join(os.path.dirname(os.path.dirname(__file__)), "data", "digits.npz")


def digit_images(size: int | tuple[int, int] = 32, seed: int = 0) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The demo's images (uint8 RGB ``[N, size, size, 3]``) and labels, by split
    (``"train"``, ``"validation"``): the arrays the TFRecord shards hold.

    Example:
        >>> images, labels = digit_images()["validation"]  # doctest: +SKIP
        >>> images.shape, labels[:5]  # doctest: +SKIP
        ((360, 32, 32, 3), array([...]))
    """
    import tensorflow as tf

    with np.load(DIGITS_FILE) as digits:
        targets = digits["labels"].astype("int64")
        images = digits["images"][..., None].astype("float32") * (255.0 / 16.0)
    images = tf.image.resize(images, (size, size) if isinstance(size, int) else size,
                             method="bilinear").numpy()
    images = np.repeat(np.clip(images, 0, 255).astype("uint8"), 3, axis=-1)
    order = np.random.default_rng(seed).permutation(len(images))
    split = int(0.8 * len(images))
    train, val = order[:split], order[split:]
    return {"train": (images[train], targets[train]), "validation": (images[val], targets[val])}


def prepare(directory: str, size: int | tuple[int, int] = 32, seed: int = 0) -> str:
    """Writes the demo shards into ``directory`` once; returns it.

    ``size`` is the images' side, or ``(height, width)``.
    """
    marker = os.path.join(directory, "labels.txt")
    if os.path.exists(marker):
        return directory
    from keras_regnet.training.tfrecords import write_arrays

    splits = digit_images(size, seed)
    write_arrays(*splits["train"], DEMO_CLASSES, directory, "train", 2)
    write_arrays(*splits["validation"], DEMO_CLASSES, directory, "validation", 1)
    with open(marker, "w") as f:  # written last: its presence means the shards are complete
        f.write("\n".join(DEMO_CLASSES) + "\n")
    return directory
