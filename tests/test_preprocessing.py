"""THE eval transform, shared by the trainer's evaluation and the exported model."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from keras_regnet.preprocessing import EvalTransform, eval_crop


def resize_then_crop(image, t: EvalTransform):
    """The textbook definition, materialising the resized image."""
    shape = tf.cast(tf.shape(image)[:2], tf.float32)
    size = tf.cast(tf.round(shape * t.resize / tf.reduce_min(shape)), tf.int32)
    resized = tf.image.resize(tf.cast(image, tf.float32), size, method=t.interpolation, antialias=True)
    top, left = (int(size[0]) - t.crop) // 2, (int(size[1]) - t.crop) // 2
    return tf.clip_by_value(resized[top:top + t.crop, left:left + t.crop], 0.0, 255.0)


@pytest.mark.parametrize("height, width", [(300, 500), (500, 333), (97, 131), (40, 52), (256, 256),
                                           (1000, 801), (3, 700)])
@pytest.mark.parametrize("transform", [EvalTransform(256, 224), EvalTransform(37, 32),
                                       EvalTransform(303, 288, "bicubic")])
def test_eval_crop_is_resize_then_center_crop(height, width, transform):
    image = tf.constant(np.random.default_rng(height).integers(0, 256, (height, width, 3)), tf.uint8)
    expected = resize_then_crop(image, transform)
    out = eval_crop(image, transform)
    assert out.shape == (transform.crop, transform.crop, 3) and out.dtype == tf.float32
    # Kernel weights are computed in another order: a fraction of one grey level apart.
    np.testing.assert_allclose(out.numpy(), expected.numpy(), atol=0.05)


def test_an_extreme_aspect_ratio_costs_no_more_than_the_crop():
    # Resizing a 2x40000 strip's short side to 256 would materialise 256 x 5.1M pixels (5 GB);
    # the crop is computed directly.
    strip = tf.fill([2, 40000, 3], tf.constant(200, tf.uint8))
    out = eval_crop(strip, EvalTransform(256, 224))
    np.testing.assert_allclose(out.numpy(), 200.0, atol=1e-3)


def test_eval_transform_checks_its_arguments():
    with pytest.raises(ValueError, match="interpolation must be one of"):
        EvalTransform(256, 224, "lanczos")
    with pytest.raises(ValueError, match="crop <= resize"):
        EvalTransform(200, 224)
    assert EvalTransform.for_size(224) == EvalTransform(256, 224)
