"""The eval transform's description and the ImageNet statistics: plain Python, no TensorFlow.

Kept apart from :mod:`keras_regnet.preprocessing` (which applies them with TensorFlow) so that
the weights table, the CLI's argument parsing and ``keras-regnet list`` read them without
loading TensorFlow.
"""

from __future__ import annotations

import dataclasses

# ImageNet statistics of RGB images scaled to [0, 1] (what the reference weights expect).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
INTERPOLATIONS = ("bilinear", "bicubic")


@dataclasses.dataclass(frozen=True)
class EvalTransform:
    """How images are evaluated: resize the short side to ``resize``, center-crop ``crop``.

    Example:
        >>> EvalTransform(256, 224)
        EvalTransform(resize=256, crop=224, interpolation='bilinear')
    """

    resize: int = 256
    crop: int = 224
    interpolation: str = "bilinear"

    def __post_init__(self) -> None:
        if self.interpolation not in INTERPOLATIONS:
            raise ValueError(f"interpolation must be one of {INTERPOLATIONS}, got {self.interpolation!r}.")
        if not 0 < self.crop <= self.resize:
            raise ValueError(f"need 0 < crop <= resize, got crop={self.crop}, resize={self.resize}.")

    @classmethod
    def parse(cls, text: str) -> EvalTransform:
        """``"256/224 bilinear"``: resize the short side to 256, center-crop 224, bilinear.

        Example:
            >>> EvalTransform.parse("232/224 bilinear").resize
            232
        """
        try:
            sizes, interpolation = text.split()
            resize, crop = (int(v) for v in sizes.split("/"))
        except ValueError:
            raise ValueError(f"an eval transform is written RESIZE/CROP INTERPOLATION, e.g. "
                             f"'256/224 bilinear'; got {text!r}.") from None
        return cls(resize, crop, interpolation)

    @classmethod
    def for_size(cls, crop: int) -> EvalTransform:
        """The pycls ratio (256 -> 224) at another crop size: resize = round(crop * 256 / 224)."""
        return cls(int(round(crop * 256 / 224)), crop)
