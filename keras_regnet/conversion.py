"""PyTorch-layout RegNet state dicts (pycls, timm, torchvision) -> keras_regnet weights.

Conversion is a short name map because our layer names are stable: each Keras layer name maps
to one module path per library (:mod:`keras_regnet.references` holds each library's naming).
Every source tensor must be consumed and every Keras weight assigned, or nothing is assigned at
all (no silent partial loads). torch is imported lazily, only to read ``.pyth`` / ``.pth`` files.
"""

from __future__ import annotations

import os
import re
from typing import Any, Mapping

import numpy as np

from keras_regnet.references import detect_source, library

CHECKPOINT_SUFFIXES = (".pyth", ".pth", ".pt", ".safetensors")
_BLOCK_LAYER = re.compile(r"^s(\d+)_b(\d+)_(.+)$")

_HEAD_LAYER = "predictions"
# Keras BatchNormalization variables, in order, and their PyTorch names.
_BN_TENSORS = ("weight", "bias", "running_mean", "running_var")


def module_path(layer_name: str, source: str) -> str | None:
    """The source's module path for one of our layer names (None: a layer without weights).

    Example:
        >>> module_path("s2_b1_se_reduce", "pycls")
        's2.b1.f.se.f_ex.0'
        >>> module_path("s2_b1_conv1", "torchvision")
        'trunk_output.block2.block2-0.f.a.0'
    """
    lib = library(source)
    if layer_name in lib.other_modules:
        return lib.other_modules[layer_name]
    match = _BLOCK_LAYER.match(layer_name)
    if not match or match.group(3) not in lib.block_modules:
        return None
    stage, block, part = int(match.group(1)), int(match.group(2)), match.group(3)
    return f"{lib.block_prefix(stage, block)}.{lib.block_modules[part]}"


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


def _layer_tensors(layer, path: str) -> list[tuple[str, Any]]:
    """(source key, Keras variable) pairs of one layer, in the layer's weight order."""
    import keras

    if isinstance(layer, keras.layers.BatchNormalization):
        return [(f"{path}.{t}", v) for t, v in zip(_BN_TENSORS, layer.weights)]
    names = ["weight", "bias"][: len(layer.weights)]
    return [(f"{path}.{n}", v) for n, v in zip(names, layer.weights)]


def _to_keras_layout(value: np.ndarray, source: str, layer_name: str) -> np.ndarray:
    if value.ndim == 4:  # conv [O, I/G, kh, kw] -> [kh, kw, I/G, O]
        if library(source).channel_order == "BGR" and layer_name == "stem_conv":
            value = value[:, ::-1]  # our models take RGB
        return np.ascontiguousarray(value.transpose(2, 3, 1, 0))
    if value.ndim == 2:  # dense [out, in] -> [in, out]
        return np.ascontiguousarray(value.T)
    return value


def _keras_layout_shape(shape: tuple[int, ...]) -> tuple[int, ...]:
    """The shape :func:`_to_keras_layout` gives a tensor of ``shape``."""
    if len(shape) == 4:
        return (shape[2], shape[3], shape[1], shape[0])
    return shape[::-1] if len(shape) == 2 else shape


def plan_state_dict(model, shapes: Mapping[str, tuple[int, ...]], source: str,
                    skip_head: bool | None = None) -> list[tuple[str, Any, str]]:
    """Which source tensor goes to which Keras weight, checked on names and shapes alone.

    ``shapes`` maps tensor names to shapes (a state dict's ``{k: v.shape}``; the tensors may
    live on torch's ``meta`` device: nothing is read). Returns ``(key, variable, layer name)``
    for every Keras weight.

    Raises:
        ValueError: listing every unused source tensor and every unassigned or mis-shaped
            Keras weight (see :func:`load_torch_state_dict`).
    """
    lib = library(source)
    shapes = {k: tuple(int(d) for d in v) for k, v in shapes.items() if not k.endswith("num_batches_tracked")}
    layer_names = {layer.name for layer in model.layers}
    if skip_head is None:
        skip_head = _HEAD_LAYER not in layer_names
    head_path = lib.other_modules[_HEAD_LAYER]
    unused = {k for k in shapes if not (skip_head and k.startswith(head_path + "."))}
    missing, mismatched, plan = [], [], []
    for layer in model.layers:
        if not layer.weights:
            continue
        path = module_path(layer.name, source)
        if path is None:
            missing.extend(f"{v.path} {tuple(v.shape)} (no {source} counterpart)" for v in layer.weights)
            continue
        for key, variable in _layer_tensors(layer, path):
            if key not in shapes:
                missing.append(f"{variable.path} {tuple(variable.shape)} <- {key}")
                continue
            unused.discard(key)
            shape = _keras_layout_shape(shapes[key])
            if shape != tuple(variable.shape):
                mismatched.append(f"{variable.path}: Keras {tuple(variable.shape)} vs {key} "
                                  f"{shapes[key]} -> {shape}")
                continue
            plan.append((key, variable, layer.name))
    if missing or mismatched or unused:
        parts = []
        if mismatched:
            parts.append("shape mismatches:\n  " + "\n  ".join(mismatched))
        if missing:
            parts.append("Keras weights without a source tensor:\n  " + "\n  ".join(missing))
        if unused:
            parts.append("unused source tensors:\n  " + "\n  ".join(
                f"{k} {shapes[k]}" for k in sorted(unused)))
        raise ValueError(
            f"The {source} state dict does not fit {model.name}; nothing was loaded. Check the "
            f"model name, the source and include_top/classes.\n" + "\n".join(parts))
    return plan


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
    tensors = to_numpy(state_dict)
    plan = plan_state_dict(model, {k: v.shape for k, v in tensors.items()}, source, skip_head)
    for key, variable, layer_name in plan:
        variable.assign(_to_keras_layout(tensors[key], source, layer_name).astype(variable.dtype))


def check_checkpoint_path(path: str | os.PathLike) -> str:
    """``path`` as a string, if it names an existing checkpoint of a known format; else a
    ValueError (the format) or FileNotFoundError.

    Example:
        >>> check_checkpoint_path("missing.safetensors")
        Traceback (most recent call last):
        FileNotFoundError: checkpoint 'missing.safetensors' does not exist.
    """
    path = os.fspath(path)
    if not path.endswith(CHECKPOINT_SUFFIXES):
        raise ValueError(f"Unknown checkpoint format {path!r}: expected one of {CHECKPOINT_SUFFIXES}.")
    if not os.path.exists(path):
        raise FileNotFoundError(f"checkpoint {path!r} does not exist.")
    return path


def read_checkpoint(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Reads a state dict from ``.safetensors`` (no torch needed) or ``.pyth``/``.pth``/``.pt``.

    Torch pickles are read with ``torch.load(weights_only=True)``: a file that tries to run
    code is refused. pycls checkpoints (``{"model_state": ...}``) and the common
    ``{"state_dict": ...}`` / ``{"model": ...}`` wrappers are unwrapped.
    """
    path = check_checkpoint_path(path)
    if path.endswith(".safetensors"):
        try:
            from safetensors.numpy import load_file
        except ImportError as err:
            raise ImportError("Reading .safetensors needs the safetensors package: "
                              "pip install safetensors") from err
        try:
            state = load_file(path)
        except Exception as err:  # safetensors raises its own error types for every defect
            raise _unreadable(path, "a .safetensors file", err) from err
        return _checked_state(state, path)
    try:
        import torch
    except ImportError as err:
        raise ImportError(f"Reading {path} needs PyTorch: pip install 'keras-regnet[convert]' "
                          f"(or use the .safetensors weights, which need no torch).") from err
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        if "weights_only" in str(err) or "Weights only load failed" in str(err):
            raise WeightsFileError(
                f"Refusing to load {path}: it is not a plain weights file that torch.load("
                f"weights_only=True) accepts (it may try to run code).") from err
        raise _unreadable(path, "a PyTorch checkpoint", err) from err
    for wrapper in ("model_state", "state_dict", "model"):
        if isinstance(obj, dict) and wrapper in obj and isinstance(obj[wrapper], dict):
            obj = obj[wrapper]
            break
    if not isinstance(obj, dict):
        raise WeightsFileError(f"{path} holds a {type(obj).__name__}, not a state dict of tensors.")
    return _checked_state(to_numpy(obj), path)


class WeightsFileError(ValueError):
    """A weights or checkpoint file that cannot be read; the message names it."""


def _unreadable(path: str, kind: str, err: Exception) -> WeightsFileError:
    size = os.path.getsize(path)
    what = "it is empty" if size == 0 else f"{size:,} bytes, truncated or not {kind}"
    first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    return WeightsFileError(f"{path} is not readable as {kind} ({what}: {first}). Download or "
                            f"convert it again.")


def _checked_state(state: dict, path: str) -> dict:
    if not state:
        raise WeightsFileError(f"{path} holds no tensors.")
    return state


def load_state_dict_file(model, path: str | os.PathLike, source: str | None = None) -> None:
    """Reads a checkpoint file and assigns it (the library is detected from the names)."""
    state = read_checkpoint(path)
    load_torch_state_dict(model, state, source or detect_source(state))
