"""KerasHub presets from the weights table: names, building a classifier, writing a folder.

A preset is the folder ``save_to_preset`` writes (config.json, model.weights.h5,
metadata.json, task.json, task.weights.h5, preprocessor.json); any KerasHub user loads it
with ``keras_hub.models.ImageClassifier.from_preset(DIR)`` once ``keras_regnet`` is imported.
"""

from __future__ import annotations

import json
import os

from keras_regnet import applications
from keras_regnet.files import atomic_directory
from keras_regnet.hub.backbone import RegNetBackbone
from keras_regnet.hub.classifier import (
    RegNetImageClassifier,
    RegNetImageClassifierPreprocessor,
    RegNetImageConverter,
)
from keras_regnet.preprocessing import EvalTransform
from keras_regnet.variants import get_variant
from keras_regnet.weight_choice import ResolvedWeights, resolve_weights
from keras_regnet.weight_table import WEIGHTS, WeightSet, get_weight_set
from keras_regnet.writers import check_folder_target, exclusive_writer, mark


def preset_name(model: str, tag: str) -> str:
    """The preset name of a (model, weight tag): lower case, e.g. ``regnetx004_imagenet``.

    Example:
        >>> preset_name("RegNetY032", "tv2_in1k")
        'regnety032_tv2_in1k'
    """
    return get_weight_set(model, tag).preset_name


def list_presets(include_non_commercial: bool = False) -> dict[str, WeightSet]:
    """Preset name -> weight set, for every (model, tag) of the weights table; the
    non-commercial ones (SWAG) only on request.

    Example:
        >>> list_presets()["regnetx004_imagenet"].top1
        72.618
    """
    return {s.preset_name: s for s in WEIGHTS if include_non_commercial or not s.non_commercial}


def build_classifier(model: str, weights: str | os.PathLike | ResolvedWeights | None = "imagenet",
                     transform: EvalTransform | None = None, classes: int = 1000) -> RegNetImageClassifier:
    """A :class:`RegNetImageClassifier` (with its preprocessor) holding ``weights``.

    ``weights`` is anything the builders take: a tag, a ``.weights.h5``, ``.safetensors``,
    ``.pyth`` or ``.pth`` file, or None; ``classes`` is the head's (a file of your own
    fine-tuned model may have another). The converter uses ``transform``, else the weight
    set's eval transform for a tag, else pycls's 256 -> 224.

    Example:
        >>> classifier = build_classifier("RegNetX002", weights=None)
        >>> classifier.preprocessor.image_converter.image_size
        (224, 224)
    """
    return _classifier_and_builder(model, weights, transform, classes)[0]


PRESET_KIND = "kerashub_preset"
WEIGHTS_RECORD_FILE = "keras_regnet_weights.json"  # KerasHub's loaders leave it alone


def _classifier_and_builder(model, weights, transform=None, classes=1000):
    name = get_variant(model).name
    weights = resolve_weights(weights, name)
    transform = transform or weights.transform
    builder = applications.RegNet(name, weights=weights, include_preprocessing=False, classes=classes,
                                  input_shape=(None, None, 3), classifier_activation=None)
    backbone = RegNetBackbone(name)
    copy_weights(builder, backbone)
    preprocessor = RegNetImageClassifierPreprocessor(RegNetImageConverter.for_transform(transform))
    classifier = RegNetImageClassifier(backbone=backbone, num_classes=builder.output_shape[-1],
                                       preprocessor=preprocessor)
    classifier.output_dense.set_weights(builder.get_layer("predictions").get_weights())
    return classifier, builder


def copy_weights(source, backbone: RegNetBackbone) -> None:
    """Copies a builder model's weights into a backbone, layer by layer (same names)."""
    for layer in backbone.layers:
        if layer.weights:
            layer.set_weights(source.get_layer(layer.name).get_weights())


def write_preset(model: str, weights: str | os.PathLike | ResolvedWeights | None, output: str | os.PathLike,
                 overwrite: bool = False, allow_non_commercial: bool = False,
                 transform: EvalTransform | None = None, classes: int = 1000,
                 tolerance: float = 1e-4) -> tuple[str, float]:
    """Writes a KerasHub preset folder for ``model`` with ``weights``
    (``transform`` and ``classes`` as in :func:`build_classifier`).

    Before the folder is published, it is loaded back through KerasHub's generic
    ``ImageClassifier.from_preset`` and its logits are compared with the builder's on two
    random images; returns (path, that largest difference). The folder appears complete and
    checked, or not at all. An existing preset folder this package wrote is replaced only with
    ``overwrite=True``, any other non-empty folder never (:mod:`keras_regnet.writers`);
    non-commercial weight sets (SWAG) need ``allow_non_commercial=True``.

    Example:
        >>> write_preset("RegNetX002", None, "/tmp/regnetx002_random", overwrite=True)  # doctest: +SKIP
        ('/tmp/regnetx002_random', 0.0)
    """
    import keras
    import keras_hub
    import numpy as np

    output = os.path.abspath(os.fspath(output))
    name = get_variant(model).name
    weights = resolve_weights(weights, name)
    if weights.non_commercial and not allow_non_commercial:
        raise ValueError(
            f"{name} weights {weights.tag!r} are licensed {weights.licence}; pass "
            f"--allow-non-commercial (allow_non_commercial=True) to write a preset of them.")
    sources = [weights.path] if weights.path else []
    check_folder_target(output, PRESET_KIND, overwrite, sources)
    classifier, builder = _classifier_and_builder(name, weights, transform, classes)
    with exclusive_writer(output), atomic_directory(output) as staging:
        check_folder_target(output, PRESET_KIND, overwrite, sources)  # a writer may have finished
        classifier.save_to_preset(staging)
        with open(os.path.join(staging, WEIGHTS_RECORD_FILE), "w", encoding="utf-8") as f:
            json.dump(weights.describe(), f, indent=2)  # which weights, their licence and hash
        mark(staging, PRESET_KIND)
        loaded = keras_hub.models.ImageClassifier.from_preset(staging)
        size = classifier.preprocessor.image_converter.image_size
        images = np.random.default_rng(0).normal(0.0, 1.0, (2, *size, 3)).astype("float32")
        difference = float(np.max(np.abs(keras.ops.convert_to_numpy(loaded(images))
                                           - keras.ops.convert_to_numpy(builder(images)))))
        if not difference <= tolerance:
            raise ValueError(f"the preset's logits differ from {name}'s by {difference:.3g} "
                             f"(tolerance {tolerance:g}); nothing written to {output}.")
    return output, difference
