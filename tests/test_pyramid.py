"""Feature pyramid outputs for detection / segmentation heads."""

from __future__ import annotations

import keras
import numpy as np
import pytest
from keras.ops import convert_to_numpy as numpy

import keras_regnet
from conftest import smallest_per_family
from keras_regnet.variants import VARIANTS


@pytest.mark.parametrize("name", smallest_per_family())
def test_pyramid_outputs_levels_strides_and_channels(name, tmp_path):
    model = getattr(keras_regnet, name)(weights=None, include_top=False, input_shape=(128, 96, 3))
    assert list(model.pyramid_outputs) == ["P1", "P2", "P3", "P4", "P5"]
    widths = [32, *VARIANTS[name].spec.widths]
    for level, width in zip(model.pyramid_outputs, widths):
        stride = 2 ** int(level[1:])
        assert tuple(model.pyramid_outputs[level].shape) == (None, 128 // stride, 96 // stride, width)

    fpn = keras_regnet.feature_pyramid(model)
    assert fpn.strides == {"P1": 2, "P2": 4, "P3": 8, "P4": 16, "P5": 32}
    assert fpn.channels == dict(zip(fpn.strides, widths))
    x = np.random.default_rng(0).uniform(0, 255, (1, 128, 96, 3)).astype("float32")
    features = fpn(x)
    np.testing.assert_allclose(numpy(features["P5"]), numpy(model(x)), rtol=1e-6)

    # Works on a reloaded model too (derived from the stable layer names).
    path = tmp_path / "m.keras"
    model.save(path)
    reloaded = keras_regnet.feature_pyramid(keras.saving.load_model(path))
    np.testing.assert_allclose(numpy(reloaded(x)["P3"]), numpy(features["P3"]), rtol=1e-6)


def test_feature_pyramid_rejects_other_models():
    other = keras.Sequential([keras.Input((8,)), keras.layers.Dense(2)])
    with pytest.raises(ValueError, match="not a keras_regnet model"):
        keras_regnet.feature_pyramid(other)
