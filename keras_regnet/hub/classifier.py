"""The KerasHub task around :class:`RegNetBackbone`: converter, preprocessor, classifier."""

from __future__ import annotations

import keras
import numpy as np
from keras import ops
from keras_hub.layers import ImageConverter
from keras_hub.models import ImageClassifier, ImageClassifierPreprocessor

from keras_regnet.hub.backbone import RegNetBackbone
from keras_regnet.preprocessing import IMAGENET_MEAN, IMAGENET_STD, EvalTransform, eval_crop

PYCLS_CROP_FRACTION = 224 / 256


@keras.saving.register_keras_serializable(package="keras_regnet")
class RegNetImageConverter(ImageConverter):
    """Raw RGB images (uint8 or float in [0, 255], any size) -> the network's input.

    Applies the weights' own eval transform, the one their top-1 was measured with: resize the
    short side to ``image_size / crop_fraction`` (antialiased), take the center crop of
    ``image_size``, normalise with the ImageNet mean/std. It is
    :func:`keras_regnet.preprocessing.eval_crop`, the trainer's and the SavedModel's transform,
    computed with TensorFlow on every backend (as KerasHub's preprocessing is). Dict inputs
    (images with boxes) take KerasHub's plain resize.

    Args:
        image_size: ``(crop, crop)``: the square center crop (the network's input size).
        crop_fraction: crop / resized short side: 224/256 for the pycls weights, 224/232 for
            torchvision's v2 weights; 1.0 resizes the short side to the crop.
        interpolation: ``"bilinear"`` or ``"bicubic"``.

    Example:
        >>> converter = RegNetImageConverter(image_size=(224, 224))
        >>> tuple(converter(np.zeros((2, 300, 400, 3), "uint8")).shape)
        (2, 224, 224, 3)
    """

    backbone_cls = RegNetBackbone

    def __init__(self, image_size=(224, 224), crop_fraction: float = PYCLS_CROP_FRACTION,
                 interpolation: str = "bilinear", scale=None, offset=None, antialias: bool = True,
                 crop_to_aspect_ratio: bool = True, **kwargs):
        if not 0.0 < crop_fraction <= 1.0:
            raise ValueError(f"crop_fraction must be in (0, 1], got {crop_fraction}.")
        if image_size is not None and image_size[0] != image_size[1]:
            raise ValueError(f"RegNetImageConverter crops squares; got image_size={image_size}.")
        # ImageNet mean/std as KerasHub's scale and offset: x * scale + offset.
        if scale is None:
            scale = [1.0 / (255.0 * s) for s in IMAGENET_STD]
        if offset is None:
            offset = [-m / s for m, s in zip(IMAGENET_MEAN, IMAGENET_STD)]
        super().__init__(image_size=image_size, scale=scale, offset=offset, interpolation=interpolation,
                         antialias=antialias, crop_to_aspect_ratio=crop_to_aspect_ratio, **kwargs)
        self.crop_fraction = crop_fraction
        EvalTransform(interpolation=interpolation)  # one clear error for an unknown interpolation

    @classmethod
    def for_transform(cls, transform: EvalTransform, **kwargs) -> RegNetImageConverter:
        """The converter of a weight set's eval transform (``WeightSet.transform``)."""
        return cls(image_size=(transform.crop, transform.crop),
                   crop_fraction=transform.crop / transform.resize,
                   interpolation=transform.interpolation, **kwargs)

    @property
    def transform(self) -> EvalTransform:
        crop = self.image_size[0]
        return EvalTransform(int(round(crop / self.crop_fraction)), crop, self.interpolation)

    def _call_python(self, inputs):
        if isinstance(inputs, dict) or self.image_size is None:
            return super()._call_python(inputs)
        if isinstance(inputs, (list, tuple)):
            sizes = {tuple(np.shape(image)) for image in inputs}
            if len(sizes) > 1:  # differently sized images: one at a time
                return ops.stack([self._call_python(image) for image in inputs])
        import tensorflow as tf

        from_tf = tf.is_tensor(inputs)  # a tf.data pipeline or TensorFlow tensors: answer in kind
        images = inputs if from_tf else tf.convert_to_tensor(np.asarray(inputs))
        with tf.device("cpu"):
            x = eval_crop(images, self.transform)
            x = x * np.asarray(self.scale, "float32") + np.asarray(self.offset, "float32")
            x = tf.cast(x, self.compute_dtype)
        return x if from_tf else ops.convert_to_tensor(x.numpy())

    def get_config(self) -> dict:
        config = super().get_config()
        config.update({"crop_fraction": self.crop_fraction})
        return config


@keras.saving.register_keras_serializable(package="keras_regnet")
class RegNetImageClassifierPreprocessor(ImageClassifierPreprocessor):
    """Images (and labels) -> :class:`RegNetImageClassifier` inputs, via
    :class:`RegNetImageConverter`.

    Example:
        >>> pre = RegNetImageClassifierPreprocessor(RegNetImageConverter(image_size=(64, 64)))
        >>> tuple(pre(np.zeros((1, 80, 96, 3), "uint8")).shape)
        (1, 64, 64, 3)
    """

    backbone_cls = RegNetBackbone
    image_converter_cls = RegNetImageConverter


@keras.saving.register_keras_serializable(package="keras_regnet")
class RegNetImageClassifier(ImageClassifier):
    """RegNet classifier for KerasHub: :class:`RegNetBackbone`, pooling, dropout, a Dense head.

    Usually loaded with ``keras_hub.models.ImageClassifier.from_preset(DIR)`` from a preset
    written by ``keras-regnet preset`` (or :func:`keras_regnet.hub.write_preset`); pass
    ``num_classes=K`` for a new head to fine-tune. The head layer is named ``predictions``
    like the builders', with the same weights, and returns logits.

    Example:
        >>> classifier = RegNetImageClassifier(RegNetBackbone("RegNetX002"), num_classes=10)
        >>> classifier.output_shape
        (None, 10)
    """

    backbone_cls = RegNetBackbone
    preprocessor_cls = RegNetImageClassifierPreprocessor
