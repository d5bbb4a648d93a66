"""What this package knows about each reference library, one description per library.

pycls (the paper's code), timm and torchvision each ship RegNet weights under their own tensor
names, file format and input convention. Everything that differs between them is stated once
here, as a :class:`ReferenceLibrary`: the conversion (:mod:`keras_regnet.conversion`), the
weights table (:mod:`keras_regnet.weight_table`) and verification (:mod:`keras_regnet.verify`)
read it and never test a library's name themselves.

Pure Python: torch, timm, torchvision and pycls are imported only when a reference model is
built (``ReferenceLibrary.build``), which only verification and the tests do.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping

from keras_regnet.variants import Variant, get_variant


@dataclasses.dataclass(frozen=True)
class ReferenceLibrary:
    """One reference implementation: naming, layout, input convention, how to build it."""

    name: str
    channel_order: str  # "RGB" or "BGR": what its first conv expects
    block_modules: Mapping[str, str]  # our block sub-layer suffix -> its module path in a block
    other_modules: Mapping[str, str]  # stem / head layer -> module path
    block_prefix: Callable[[int, int], str]  # (stage, block), 1-based -> a block's module path
    marker: str  # a tensor-name prefix only this library's state dicts have
    model_name: Callable[[Variant], str | None]  # its name for a variant; None: not implemented
    build: Callable[[Variant, int], Any]  # (variant, classes) -> a torch model in eval mode

    def implements(self, variant_name: str) -> bool:
        """Whether the library has a network identical to ours (same widths, same weights)."""
        return self.model_name(get_variant(variant_name)) is not None

    def reference_name(self, variant_name: str) -> str:
        """The library's model name for one of our variants (a clear error where it has none)."""
        variant = get_variant(variant_name)
        name = self.model_name(variant)
        if name is None:
            raise ValueError(f"{self.name} has no network identical to {variant.name}; compare it "
                             f"with {' or '.join(libraries_for(variant.name))}.")
        return name


# --- pycls: the paper's code ----------------------------------------------------------------

def _pycls_name(variant: Variant) -> str | None:
    return variant.paper_name if variant.spec.rounding == "pycls" else None


def _pycls_build(variant: Variant, classes: int):
    # pycls's model zoo downloads its configs, so the config is set by hand.
    from pycls.core.config import cfg
    from pycls.models.regnet import RegNet as PyclsRegNet

    spec = variant.spec
    cfg.defrost()
    cfg.MODEL.TYPE = "regnet"
    cfg.MODEL.NUM_CLASSES = classes
    cfg.REGNET.DEPTH, cfg.REGNET.W0, cfg.REGNET.WA = spec.depth, spec.w0, spec.wa
    cfg.REGNET.WM, cfg.REGNET.GROUP_W = spec.wm, spec.group_width
    cfg.REGNET.BOT_MUL = 1.0 / spec.bottleneck_ratio
    cfg.REGNET.SE_ON, cfg.REGNET.SE_R = spec.se_ratio > 0, spec.se_ratio or 0.25
    cfg.BN.EPS, cfg.BN.MOM = 1e-5, 0.1
    return PyclsRegNet().eval()


PYCLS = ReferenceLibrary(
    name="pycls",
    channel_order="BGR",  # trained on BGR input: the stem kernel's input channels are flipped
    block_modules={
        "conv1": "f.a", "conv1_bn": "f.a_bn", "conv2": "f.b", "conv2_bn": "f.b_bn",
        "se_reduce": "f.se.f_ex.0", "se_expand": "f.se.f_ex.2", "conv3": "f.c",
        "conv3_bn": "f.c_bn", "shortcut_conv": "proj", "shortcut_bn": "bn",
    },
    other_modules={"stem_conv": "stem.conv", "stem_bn": "stem.bn", "predictions": "head.fc"},
    block_prefix=lambda stage, block: f"s{stage}.b{block}",
    marker="s1.b1.f.a.",
    model_name=_pycls_name,
    build=_pycls_build,
)


# --- timm: RGB re-hosts of pycls's weights, and its own sets --------------------------------

def _timm_name(variant: Variant) -> str:
    suffix = "_tv" if variant.spec.rounding == "torchvision" else ""
    return f"regnet{variant.name[6].lower()}_{variant.name[7:10]}{suffix}"


def _timm_build(variant: Variant, classes: int):
    import timm

    return timm.create_model(_timm_name(variant), pretrained=False, num_classes=classes).eval()


TIMM = ReferenceLibrary(
    name="timm",
    channel_order="RGB",
    block_modules={
        "conv1": "conv1.conv", "conv1_bn": "conv1.bn", "conv2": "conv2.conv",
        "conv2_bn": "conv2.bn", "se_reduce": "se.fc1", "se_expand": "se.fc2",
        "conv3": "conv3.conv", "conv3_bn": "conv3.bn", "shortcut_conv": "downsample.conv",
        "shortcut_bn": "downsample.bn",
    },
    other_modules={"stem_conv": "stem.conv", "stem_bn": "stem.bn", "predictions": "head.fc"},
    block_prefix=lambda stage, block: f"s{stage}.b{block}",
    marker="s1.b1.conv1.",
    model_name=_timm_name,
    build=_timm_build,
)


# --- torchvision: its own rounding, 14 of our sizes -------------------------------------------

# torchvision's RegNets at our sizes. It rounds widths its own way: for x_400mf, y_800mf and
# y_8gf that gives other networks than pycls's, which are our TV variants.
TORCHVISION_MODELS = (
    "regnet_x_400mf", "regnet_x_800mf", "regnet_x_1_6gf", "regnet_x_3_2gf", "regnet_x_8gf",
    "regnet_x_16gf", "regnet_x_32gf", "regnet_y_400mf", "regnet_y_800mf", "regnet_y_1_6gf",
    "regnet_y_3_2gf", "regnet_y_8gf", "regnet_y_16gf", "regnet_y_32gf",
)
_TORCHVISION_ROUNDING_DIFFERS = ("regnet_x_400mf", "regnet_y_800mf", "regnet_y_8gf")


def _torchvision_name(variant: Variant) -> str | None:
    if variant.spec.rounding == "torchvision":
        return variant.paper_name
    family, size = variant.paper_name.split("-")  # "RegNetX", "1.6GF"
    size = size.lower().replace(".0gf", "gf").replace(".", "_")
    name = f"regnet_{family[-1].lower()}_{size}"
    if name not in TORCHVISION_MODELS or name in _TORCHVISION_ROUNDING_DIFFERS:
        return None
    return name


def _torchvision_build(variant: Variant, classes: int):
    import torchvision

    return getattr(torchvision.models, _torchvision_name(variant))(num_classes=classes).eval()


TORCHVISION = ReferenceLibrary(
    name="torchvision",
    channel_order="RGB",
    block_modules={
        "conv1": "f.a.0", "conv1_bn": "f.a.1", "conv2": "f.b.0", "conv2_bn": "f.b.1",
        "se_reduce": "f.se.fc1", "se_expand": "f.se.fc2", "conv3": "f.c.0", "conv3_bn": "f.c.1",
        "shortcut_conv": "proj.0", "shortcut_bn": "proj.1",
    },
    other_modules={"stem_conv": "stem.0", "stem_bn": "stem.1", "predictions": "fc"},
    block_prefix=lambda stage, block: f"trunk_output.block{stage}.block{stage}-{block - 1}",
    marker="stem.0.",
    model_name=_torchvision_name,
    build=_torchvision_build,
)

LIBRARIES: dict[str, ReferenceLibrary] = {lib.name: lib for lib in (PYCLS, TIMM, TORCHVISION)}
SOURCES = tuple(LIBRARIES)


def library(source: str) -> ReferenceLibrary:
    """The description of ``"pycls"``, ``"timm"`` or ``"torchvision"``.

    Example:
        >>> library("torchvision").reference_name("RegNetX016")
        'regnet_x_1_6gf'
    """
    try:
        return LIBRARIES[source]
    except KeyError:
        raise ValueError(f"source must be one of {SOURCES}, got {source!r}.") from None


def libraries_for(variant_name: str) -> list[str]:
    """The reference libraries that implement this variant's exact network.

    Example:
        >>> libraries_for("RegNetX004"), libraries_for("RegNetX004TV")
        (['pycls', 'timm'], ['timm', 'torchvision'])
    """
    return [name for name, lib in LIBRARIES.items() if lib.implements(variant_name)]


def detect_source(keys) -> str:
    """Which library saved a RegNet state dict, from its tensor names.

    Example:
        >>> detect_source(["stem.0.weight", "fc.bias"])
        'torchvision'
    """
    for name, lib in LIBRARIES.items():
        if any(k.startswith(lib.marker) for k in keys):
            return name
    raise ValueError(
        "Cannot tell which library saved this state dict (expected tensor names starting with "
        + ", ".join(f"{lib.marker!r} ({name})" for name, lib in LIBRARIES.items())
        + "); pass source= explicitly.")
