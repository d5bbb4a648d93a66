"""PyTorch-layout state dicts (pycls, timm, torchvision) -> keras_regnet models.

The mapping is short because our layer names are stable: each Keras layer name maps to one
module path per source. Every source tensor must be consumed and every Keras weight assigned,
or nothing is assigned at all (no silent partial loads). torch is imported lazily, only to
read ``.pyth`` / ``.pth`` files or to build reference models for verification.
"""

from __future__ import annotations

import os
import re
from typing import Any, Mapping

import numpy as np

SOURCES = ("pycls", "timm", "torchvision")
CHECKPOINT_SUFFIXES = (".pyth", ".pth", ".pt", ".safetensors")
_BLOCK_LAYER = re.compile(r"^s(\d+)_b(\d+)_(.+)$")

# Block sub-layer (our suffix) -> module path inside the block, per source.
_BLOCK_MODULES = {
    "pycls": {
        "conv1": "f.a", "conv1_bn": "f.a_bn", "conv2": "f.b", "conv2_bn": "f.b_bn",
        "se_reduce": "f.se.f_ex.0", "se_expand": "f.se.f_ex.2", "conv3": "f.c",
        "conv3_bn": "f.c_bn", "shortcut_conv": "proj", "shortcut_bn": "bn",
    },
    "timm": {
        "conv1": "conv1.conv", "conv1_bn": "conv1.bn", "conv2": "conv2.conv",
        "conv2_bn": "conv2.bn", "se_reduce": "se.fc1", "se_expand": "se.fc2",
        "conv3": "conv3.conv", "conv3_bn": "conv3.bn", "shortcut_conv": "downsample.conv",
        "shortcut_bn": "downsample.bn",
    },
    "torchvision": {
        "conv1": "f.a.0", "conv1_bn": "f.a.1", "conv2": "f.b.0", "conv2_bn": "f.b.1",
        "se_reduce": "f.se.fc1", "se_expand": "f.se.fc2", "conv3": "f.c.0", "conv3_bn": "f.c.1",
        "shortcut_conv": "proj.0", "shortcut_bn": "proj.1",
    },
}
_OTHER_MODULES = {
    "pycls": {"stem_conv": "stem.conv", "stem_bn": "stem.bn", "predictions": "head.fc"},
    "timm": {"stem_conv": "stem.conv", "stem_bn": "stem.bn", "predictions": "head.fc"},
    "torchvision": {"stem_conv": "stem.0", "stem_bn": "stem.1", "predictions": "fc"},
}
_HEAD_LAYER = "predictions"
# Keras BatchNormalization variables, in order, and their PyTorch names.
_BN_TENSORS = ("weight", "bias", "running_mean", "running_var")


def _check_source(source: str) -> None:
    if source not in SOURCES:
        raise ValueError(f"source must be one of {SOURCES}, got {source!r}.")


def module_path(layer_name: str, source: str) -> str | None:
    """The source's module path for one of our layer names (None: a layer without weights).

    Example:
        >>> module_path("s2_b1_se_reduce", "pycls")
        's2.b1.f.se.f_ex.0'
        >>> module_path("s2_b1_conv1", "torchvision")
        'trunk_output.block2.block2-0.f.a.0'
    """
    _check_source(source)
    if layer_name in _OTHER_MODULES[source]:
        return _OTHER_MODULES[source][layer_name]
    match = _BLOCK_LAYER.match(layer_name)
    if not match or match.group(3) not in _BLOCK_MODULES[source]:
        return None
    stage, block, part = int(match.group(1)), int(match.group(2)), match.group(3)
    if source == "torchvision":
        prefix = f"trunk_output.block{stage}.block{stage}-{block - 1}"
    else:
        prefix = f"s{stage}.b{block}"
    return f"{prefix}.{_BLOCK_MODULES[source][part]}"


def to_numpy(state_dict: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Torch tensors or arrays -> float32/int numpy arrays; drops ``num_batches_tracked``."""
    out = {}
    for key, value in state_dict.items():
        if key.endswith("num_batches_tracked"):
            continue
        if hasattr(value, "detach"):  # a torch tensor
            value = value.detach().cpu().float().numpy()
        out[key] = np.asarray(value)
    return out


def _layer_tensors(layer, path: str, source: str) -> list[tuple[str, Any]]:
    """(source key, Keras variable) pairs of one layer, in the layer's weight order."""
    import keras

    if isinstance(layer, keras.layers.BatchNormalization):
        return [(f"{path}.{t}", v) for t, v in zip(_BN_TENSORS, layer.weights)]
    names = ["weight", "bias"][: len(layer.weights)]
    return [(f"{path}.{n}", v) for n, v in zip(names, layer.weights)]


def _to_keras_layout(value: np.ndarray, source: str, layer_name: str) -> np.ndarray:
    if value.ndim == 4:  # conv [O, I/G, kh, kw] -> [kh, kw, I/G, O]
        if source == "pycls" and layer_name == "stem_conv":
            value = value[:, ::-1]  # pycls was trained on BGR input; our models take RGB
        return np.ascontiguousarray(value.transpose(2, 3, 1, 0))
    if value.ndim == 2:  # dense [out, in] -> [in, out]
        return np.ascontiguousarray(value.T)
    return value


def load_torch_state_dict(model, state_dict: Mapping[str, Any], source: str,
                          skip_head: bool | None = None) -> None:
    """Assigns a PyTorch-layout RegNet state dict to a keras_regnet model.

    Args:
        model: a model built by keras_regnet (stable layer names).
        state_dict: tensor name -> torch tensor or numpy array, as saved by ``source``.
        source: ``"pycls"``, ``"timm"`` or ``"torchvision"``.
        skip_head: ignore the source's classifier tensors. Defaults to True exactly when
            the model has no ``predictions`` layer (``include_top=False``).

    Raises:
        ValueError: listing every unused source tensor and every unassigned or mis-shaped
            Keras weight; in that case no weight has been changed.

    Example:
        >>> import torchvision  # doctest: +SKIP
        >>> model = keras_regnet.RegNetY004(weights=None)  # doctest: +SKIP
        >>> load_torch_state_dict(model, torchvision.models.regnet_y_400mf().state_dict(),
        ...                       "torchvision")  # doctest: +SKIP
    """
    _check_source(source)
    tensors = to_numpy(state_dict)
    layer_names = {layer.name for layer in model.layers}
    if skip_head is None:
        skip_head = _HEAD_LAYER not in layer_names
    head_path = _OTHER_MODULES[source][_HEAD_LAYER]
    unused = {k for k in tensors if not (skip_head and k.startswith(head_path + "."))}
    missing, mismatched, assignments = [], [], []
    for layer in model.layers:
        if not layer.weights:
            continue
        path = module_path(layer.name, source)
        if path is None:
            missing.extend(f"{v.path} {tuple(v.shape)} (no {source} counterpart)" for v in layer.weights)
            continue
        for key, variable in _layer_tensors(layer, path, source):
            if key not in tensors:
                missing.append(f"{variable.path} {tuple(variable.shape)} <- {key}")
                continue
            unused.discard(key)
            value = _to_keras_layout(tensors[key], source, layer.name)
            if tuple(value.shape) != tuple(variable.shape):
                mismatched.append(f"{variable.path}: Keras {tuple(variable.shape)} vs {key} "
                                  f"{tuple(tensors[key].shape)} -> {tuple(value.shape)}")
                continue
            assignments.append((variable, value))
    if missing or mismatched or unused:
        parts = []
        if mismatched:
            parts.append("shape mismatches:\n  " + "\n  ".join(mismatched))
        if missing:
            parts.append("Keras weights without a source tensor:\n  " + "\n  ".join(missing))
        if unused:
            parts.append("unused source tensors:\n  " + "\n  ".join(
                f"{k} {tuple(tensors[k].shape)}" for k in sorted(unused)))
        raise ValueError(
            f"The {source} state dict does not fit {model.name}; nothing was loaded. Check the "
            f"model name, the source and include_top/classes.\n" + "\n".join(parts))
    for variable, value in assignments:
        variable.assign(value.astype(variable.dtype))


def read_checkpoint(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Reads a state dict from ``.safetensors`` (no torch needed) or ``.pyth``/``.pth``/``.pt``.

    Torch pickles are read with ``torch.load(weights_only=True)``: a file that tries to run
    code is refused. pycls checkpoints (``{"model_state": ...}``) and the common
    ``{"state_dict": ...}`` / ``{"model": ...}`` wrappers are unwrapped.
    """
    path = os.fspath(path)
    if not path.endswith(CHECKPOINT_SUFFIXES):
        raise ValueError(f"Unknown checkpoint format {path!r}: expected one of {CHECKPOINT_SUFFIXES}.")
    if not os.path.exists(path):
        raise FileNotFoundError(f"checkpoint {path!r} does not exist.")
    if path.endswith(".safetensors"):
        try:
            from safetensors.numpy import load_file
        except ImportError as err:
            raise ImportError("Reading .safetensors needs the safetensors package: "
                              "pip install safetensors") from err
        return load_file(path)
    try:
        import torch
    except ImportError as err:
        raise ImportError(f"Reading {path} needs PyTorch: pip install 'keras-regnet[convert]' "
                          f"(or use the .safetensors weights, which need no torch).") from err
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises UnpicklingError and others for unsafe pickles
        raise ValueError(
            f"Refusing to load {path}: it is not a plain weights file that torch.load("
            f"weights_only=True) accepts (it may try to run code). {err}") from err
    for wrapper in ("model_state", "state_dict", "model"):
        if isinstance(obj, dict) and wrapper in obj and isinstance(obj[wrapper], dict):
            obj = obj[wrapper]
            break
    return to_numpy(obj)


def reference_model_name(variant_name: str, source: str) -> str:
    """The source library's model name for one of our variants.

    Example:
        >>> reference_model_name("RegNetX016", "torchvision")
        'regnet_x_1_6gf'
        >>> reference_model_name("RegNetX080", "torchvision")
        'regnet_x_8gf'
        >>> reference_model_name("RegNetY080TV", "timm")
        'regnety_080_tv'
    """
    from keras_regnet.variants import get_variant

    _check_source(source)
    variant = get_variant(variant_name)
    tv_rounding = variant.spec.rounding == "torchvision"
    if source == "timm":
        return f"regnet{variant.name[6].lower()}_{variant.name[7:10]}" + ("_tv" if tv_rounding else "")
    if tv_rounding:
        if source == "pycls":
            raise ValueError(f"{variant.name} uses torchvision's rounding; pycls has no such model.")
        return variant.paper_name
    if source == "pycls":
        return variant.paper_name
    family, size = variant.paper_name.split("-")  # "RegNetX", "1.6GF"
    size = size.lower().replace(".0gf", "gf").replace(".", "_")
    return f"regnet_{family[-1].lower()}_{size}"


def detect_source(state_dict: Mapping[str, Any]) -> str:
    """Guesses which library saved a RegNet state dict from its tensor names."""
    keys = set(state_dict)
    if "stem.0.weight" in keys:
        return "torchvision"
    if any(k.startswith("s1.b1.conv1.") for k in keys):
        return "timm"
    if any(k.startswith("s1.b1.f.a.") for k in keys):
        return "pycls"
    raise ValueError(
        "Cannot tell which library saved this state dict (expected pycls 's1.b1.f.a.*', timm "
        "'s1.b1.conv1.*' or torchvision 'stem.0.*' names); pass source= explicitly.")


def build_reference_model(variant_name: str, source: str, num_classes: int = 1000):
    """The reference PyTorch model (random init, eval mode) for one of our variants."""
    from keras_regnet.variants import get_variant

    spec = get_variant(variant_name).spec
    name = reference_model_name(variant_name, source)
    if source == "timm":
        import timm

        return timm.create_model(name, pretrained=False, num_classes=num_classes).eval()
    if source == "torchvision":
        import torchvision

        from keras_regnet.weights import torchvision_model_name

        if torchvision_model_name(variant_name) is None:
            raise ValueError(f"torchvision has no network identical to {variant_name} ({name} is "
                             f"missing or has other widths); verify it against pycls or timm.")
        return getattr(torchvision.models, name)(num_classes=num_classes).eval()
    # pycls: its model zoo downloads configs, so set the config by hand.
    from pycls.core.config import cfg
    from pycls.models.regnet import RegNet as PyclsRegNet

    cfg.defrost()
    cfg.MODEL.TYPE = "regnet"
    cfg.MODEL.NUM_CLASSES = num_classes
    cfg.REGNET.DEPTH, cfg.REGNET.W0, cfg.REGNET.WA = spec.depth, spec.w0, spec.wa
    cfg.REGNET.WM, cfg.REGNET.GROUP_W = spec.wm, spec.group_width
    cfg.REGNET.BOT_MUL = 1.0 / spec.bottleneck_ratio
    cfg.REGNET.SE_ON, cfg.REGNET.SE_R = spec.se_ratio > 0, spec.se_ratio or 0.25
    cfg.BN.EPS, cfg.BN.MOM = 1e-5, 0.1
    return PyclsRegNet().eval()


def reference_logits(torch_model, images: np.ndarray, source: str) -> np.ndarray:
    """Runs a reference model on RGB [0, 255] NHWC images with its own input convention."""
    import torch

    from keras_regnet.model import IMAGENET_MEAN, IMAGENET_STD

    x = (images.astype("float32") / 255.0 - np.array(IMAGENET_MEAN, "float32")) / np.array(
        IMAGENET_STD, "float32")
    if source == "pycls":
        x = x[..., ::-1]  # pycls models take BGR
    with torch.no_grad():
        return torch_model(torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))).numpy()


def max_logit_difference(model, torch_model, source: str, images: np.ndarray) -> float:
    """max |logits(ours) - logits(reference)| on a batch of RGB [0, 255] images.

    ``model`` must output logits (``classifier_activation=None``) and include preprocessing.
    """
    ours = np.asarray(model(images, training=False))
    return float(np.max(np.abs(ours - reference_logits(torch_model, images, source))))
