"""``weights=`` decided once, at the edge.

:func:`resolve_weights` turns what a user passed (``None``, ``"none"``, a weight tag, a file
path) into one :class:`ResolvedWeights`: the model it belongs to, the weight set or file, the
library whose naming its tensors use, its licence, the eval transform to feed it with and its
hash. The builders, the trainer, export and the KerasHub presets take that value as it is
(each resolves at most once, and a resolved value passes through unchanged), so no layer
decides again what a string means.
"""

from __future__ import annotations

import dataclasses
import functools
import os

from keras_regnet.conversion import CHECKPOINT_SUFFIXES
from keras_regnet.transforms import EvalTransform
from keras_regnet.weight_table import WeightSet, get_weight_set, is_weight_tag

KERAS_WEIGHTS_SUFFIX = ".weights.h5"
WEIGHT_FILE_SUFFIXES = (KERAS_WEIGHTS_SUFFIX, *CHECKPOINT_SUFFIXES)
NO_WEIGHTS = "none"  # the command line's spelling of None


@dataclasses.dataclass(frozen=True)
class ResolvedWeights:
    """What one ``weights=`` argument names. Build it with :func:`resolve_weights`.

    Example:
        >>> w = resolve_weights("tv2_in1k", "RegNetY004")
        >>> w.kind, w.source, w.transform.resize, w.licence
        ('tag', 'timm', 232, 'BSD-3-Clause')
        >>> resolve_weights(None, "RegNetY004").pretrained
        False
    """

    model: str | None  # the named model they belong to; None for a custom spec
    tag: str | None = None
    path: str | None = None
    weight_set: WeightSet | None = None

    @property
    def kind(self) -> str:
        """``"none"``, ``"tag"``, ``"keras"`` (a .weights.h5 file) or ``"checkpoint"``
        (a pycls / timm / torchvision file, converted when loaded)."""
        if self.weight_set is not None:
            return "tag"
        if self.path is None:
            return "none"
        return "keras" if self.path.endswith(KERAS_WEIGHTS_SUFFIX) else "checkpoint"

    @property
    def pretrained(self) -> bool:
        return self.kind != "none"

    @property
    def source(self) -> str | None:
        """The library whose tensor naming the weights use: a tag's first file's library,
        ``"keras_regnet"`` for a .weights.h5 file, None for a checkpoint (detected from its
        tensor names when it is read) or no weights."""
        if self.weight_set is not None:
            return self.weight_set.downloads[0].source
        return "keras_regnet" if self.kind == "keras" else None

    @property
    def files(self) -> tuple[str, ...]:
        """Where the weights come from: a tag's URLs (tried in order) or the file's path."""
        if self.weight_set is not None:
            return tuple(d.url for d in self.weight_set.downloads)
        return (self.path,) if self.path else ()

    @property
    def licence(self) -> str | None:
        """The weight set's licence; None for a file (its owner's terms) or no weights."""
        return self.weight_set.license if self.weight_set is not None else None

    @property
    def non_commercial(self) -> bool:
        return self.weight_set is not None and self.weight_set.non_commercial

    @property
    def transform(self) -> EvalTransform:
        """How images are fed to these weights: the weight set's eval transform, else
        pycls's 256 -> 224 bilinear (a file does not say how it was trained)."""
        return self.weight_set.transform if self.weight_set is not None else EvalTransform()

    @functools.cached_property
    def sha256(self) -> str | None:
        """A file's SHA-256 (computed once); for a tag, the hash pinned for its first file
        (torchvision's file names carry only the first hex digits), None where the set is
        trust-on-first-use (the cache's manifest records the first download's hash)."""
        if self.weight_set is not None:
            first = self.weight_set.downloads[0]
            return first.sha256 or first.sha256_prefix
        if self.path is None:
            return None
        from keras_regnet.integrity import sha256_of

        return sha256_of(self.path)

    def describe(self) -> dict:
        """A JSON-ready record of what was loaded (written beside exports and presets)."""
        t = self.transform
        return {"model": self.model, "kind": self.kind, "tag": self.tag,
                "files": [os.path.basename(f) if self.kind != "tag" else f for f in self.files],
                "source": self.source, "licence": self.licence, "sha256": self.sha256,
                "eval_transform": f"{t.resize}/{t.crop} {t.interpolation}"}


def is_tag(weights) -> bool:
    """A registry tag, as opposed to None, ``"none"`` or a file path.

    Example:
        >>> is_tag("imagenet"), is_tag("tv2_in1k"), is_tag("my.weights.h5"), is_tag(None)
        (True, True, False, False)
    """
    return isinstance(weights, str) and not weights.endswith(WEIGHT_FILE_SUFFIXES) and is_weight_tag(weights)


def resolve_weights(weights: str | os.PathLike | ResolvedWeights | None,
                    model: str | None) -> ResolvedWeights:
    """Decides what ``weights`` names for ``model`` (a variant name, None for a custom spec),
    with a clear error for an unknown tag, a tag of a custom spec, a path that is not a
    weights file or a file that does not exist. A resolved value is returned as it is.

    Example:
        >>> resolve_weights("imagenet", "RegNetX002").weight_set.top1
        68.912
    """
    if isinstance(weights, ResolvedWeights):
        if model is not None and weights.model is not None and weights.model != model:
            raise ValueError(f"weights resolved for {weights.model} cannot load into {model}.")
        return weights
    if weights is None or weights == NO_WEIGHTS:
        return ResolvedWeights(model)
    if is_tag(weights):
        if model is None:
            raise ValueError(
                f"weights={weights!r} needs a named model (e.g. RegNet('RegNetX004') or "
                "keras_regnet.RegNetX004()); a custom spec has no pretrained weights. "
                "Use weights=None or a path to a weights file.")
        weight_set = get_weight_set(model, weights)  # a clear error for a tag this model lacks
        return ResolvedWeights(weight_set.model, tag=weights, weight_set=weight_set)
    path = os.fspath(weights)
    if not path.endswith(WEIGHT_FILE_SUFFIXES):
        raise ValueError(
            f"weights must be None, 'imagenet', a weight tag (keras_regnet.list_weights()) "
            f"or a path to a {', '.join(WEIGHT_FILE_SUFFIXES)} file; got {weights!r}.")
    if not os.path.exists(path):
        raise FileNotFoundError(f"weights file {path!r} does not exist.")
    return ResolvedWeights(model, path=path)
