"""THE weights table: one line per (model, tag), like timm's ``default_cfgs``.

The table is ``data/weights.csv``, read once at import: each line states the weight set's
reported ImageNet top-1, its eval transform, its licence and the files it can be fetched from
as ``library:url``, tried in order (a hub ``.safetensors`` first where one exists: it needs no
torch). The registry, ``list_weights()``, the docs' weights table and the
KerasHub presets all read this table; the tests check it against pycls's published figures and
torchvision's own metadata.

``"imagenet"`` is each model's default: pycls's reference weights (the paper's models) for the
24 published models, torchvision's V1 weights for the three TV-width variants.
"""

from __future__ import annotations

import csv
import dataclasses
import os

from keras_regnet.transforms import EvalTransform
from keras_regnet.variants import get_variant

DEFAULT_TAG = "imagenet"
TABLE_PATH = os.path.join(os.path.dirname(__file__), "data", "weights.csv")


@dataclasses.dataclass(frozen=True)
class Download:
    """One place a weight file can be fetched from, in one library's tensor naming."""

    url: str
    source: str  # the reference library whose naming the file uses (keras_regnet.references)
    sha256: str | None = None  # verified when published
    sha256_prefix: str | None = None  # torchvision puts the first hex digits in the file name

    @property
    def filename(self) -> str:
        parts = self.url.split("/")
        if "resolve" in parts:  # hub files are all model.safetensors: name them by repo
            return parts[parts.index("resolve") - 1] + "." + parts[-1].rsplit(".", 1)[-1]
        return parts[-1]


@dataclasses.dataclass(frozen=True)
class WeightSet:
    model: str
    tag: str
    top1: float | None  # reported ImageNet-1k top-1 (%), None where not recorded
    transform: EvalTransform
    license: str
    downloads: tuple[Download, ...]

    @property
    def non_commercial(self) -> bool:
        """Whether the licence forbids commercial use (SWAG's CC-BY-NC)."""
        return "-NC" in self.license

    @property
    def preset_name(self) -> str:
        """Its KerasHub preset name: ``regnetx004_imagenet`` (see ``keras-regnet preset``)."""
        return f"{self.model.lower()}_{self.tag}"


def _download(entry: str) -> Download:
    """``source:url``; torchvision's file names end with the first hex digits of their sha256."""
    source, url = entry.split(":", 1)
    stem = url.rsplit("/", 1)[1].rsplit(".", 1)[0]
    prefix = stem.rsplit("-", 1)[1] if source == "torchvision" else None
    return Download(url, source, sha256_prefix=prefix)


def _read_table() -> tuple[WeightSet, ...]:
    with open(TABLE_PATH, newline="", encoding="utf-8") as f:
        return tuple(WeightSet(row["model"], row["tag"], float(row["top1"]) if row["top1"] else None,
                               EvalTransform.parse(row["eval_transform"]), row["licence"],
                               tuple(_download(e) for e in row["files"].split()))
                     for row in csv.DictReader(f))


WEIGHTS: tuple[WeightSet, ...] = _read_table()
_REGISTRY = {(ws.model, ws.tag): ws for ws in WEIGHTS}


def tags(model: str) -> list[str]:
    """The weight tags of one model.

    Example:
        >>> tags("RegNetY004")
        ['imagenet', 'tv1_in1k', 'tv2_in1k']
    """
    name = get_variant(model).name
    return [ws.tag for ws in WEIGHTS if ws.model == name]


def get_weight_set(model: str, tag: str = DEFAULT_TAG) -> WeightSet:
    """One weight set; a clear error naming the model's tags when it has no ``tag``."""
    name = get_variant(model).name
    try:
        return _REGISTRY[name, tag]
    except KeyError:
        raise ValueError(
            f"No weights {tag!r} for {name}. Available: {', '.join(tags(name)) or 'none'} "
            f"(keras_regnet.list_weights() lists all).") from None


def is_weight_tag(weights) -> bool:
    """Whether ``weights`` is a tag of some model (as opposed to a path or None)."""
    return isinstance(weights, str) and any(ws.tag == weights for ws in WEIGHTS)


def list_weights(print_table: bool = True) -> list[WeightSet]:
    """Every registered weight set; prints a table unless ``print_table=False``.

    Example:
        >>> sets = list_weights(print_table=False)
        >>> next(s for s in sets if s.model == "RegNetX002").top1
        68.912
    """
    if print_table:
        print(f"{'model':<14}{'tag':<15}{'top-1':>7}  {'eval':<17}{'licence':<16}source")
        for s in WEIGHTS:
            t = s.transform
            top1 = f"{s.top1:.2f}" if s.top1 is not None else "-"
            print(f"{s.model:<14}{s.tag:<15}{top1:>7}  {f'{t.resize}->{t.crop} {t.interpolation}':<17}"
                  f"{s.license.split(' ')[0]:<16}{s.downloads[0].url}")
    return list(WEIGHTS)
