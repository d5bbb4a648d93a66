"""RegNet in KerasHub: a ``FeaturePyramidBackbone``, an ``ImageClassifier`` and presets.

Needs ``pip install "keras-regnet[hub]"``. ``import keras_regnet`` registers these classes
with Keras, so KerasHub's generic loaders find them::

    import keras_hub
    import keras_regnet  # noqa: F401 (registers RegNet with KerasHub)

    classifier = keras_hub.models.ImageClassifier.from_preset("./regnetx004_imagenet")
    classifier.predict(images)  # raw uint8 RGB, any size

Presets are written by ``keras-regnet preset --model RegNetX004 --weights imagenet --output DIR``
or :func:`write_preset`.
"""

from keras_regnet.hub.backbone import RegNetBackbone, spec_from_config, spec_to_config
from keras_regnet.hub.classifier import (
    RegNetImageClassifier,
    RegNetImageClassifierPreprocessor,
    RegNetImageConverter,
)
from keras_regnet.hub.presets import build_classifier, list_presets, preset_name, write_preset

__all__ = [
    "RegNetBackbone",
    "RegNetImageClassifier",
    "RegNetImageClassifierPreprocessor",
    "RegNetImageConverter",
    "build_classifier",
    "list_presets",
    "preset_name",
    "spec_from_config",
    "spec_to_config",
    "write_preset",
]
