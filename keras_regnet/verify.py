"""Checking converted weights against the reference PyTorch models (torch side).

Used by ``keras-regnet convert --verify``, the tests and ``benchmarks/parity_report.py``; no
builder or loader imports it. Needs torch and the reference library in question
(``pip install 'keras-regnet[test]'``).

A reference's own random init leaves BatchNorm at gamma 1, beta 0 and running statistics
0 / 1, which would hide a swapped mapping. :func:`calibrated_reference` randomises gamma/beta
and sets the running statistics from one training-mode pass over random images, so every BN
does real work and activations keep a realistic scale.
"""

from __future__ import annotations

import os
import sys

import keras
import numpy as np

from keras_regnet.applications import RegNet
from keras_regnet.preprocessing import IMAGENET_MEAN, IMAGENET_STD
from keras_regnet.references import library
from keras_regnet.variants import get_variant


def hide_triton() -> None:
    """Lets torchvision and timm import in a process that has loaded TensorFlow.

    torchvision (and timm through it) makes torch import triton, a GPU compiler whose bundled
    LLVM crashes the process (segfault) once TensorFlow is loaded. Verification runs on the
    CPU and never needs it; torch treats a triton that fails to import as absent.
    """
    if "triton" not in sys.modules:
        sys.modules["triton"] = None


def build_reference(variant_name: str, source: str, classes: int = 1000):
    """The reference library's own model (random init, eval mode) for one of our variants."""
    hide_triton()
    lib = library(source)
    lib.reference_name(variant_name)  # a clear error where the library lacks this network
    try:
        return lib.build(get_variant(variant_name), classes)
    except ImportError as err:
        raise ImportError(f"Verifying against {source} needs {err.name}: pip install "
                          f"'keras-regnet[test]' (or pip install {err.name}).") from err


def calibrated_reference(variant_name: str, source: str, seed: int = 0):
    """A reference model whose BatchNorms all do real work (see the module docstring)."""
    import torch

    torch.manual_seed(seed)
    model = build_reference(variant_name, source)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.weight.uniform_(0.5, 1.5, generator=generator)
                module.bias.normal_(0.0, 0.2, generator=generator)
                module.momentum = 1.0  # running stats := this batch's stats
    images = np.random.default_rng(seed + 1).uniform(0, 255, (8, 96, 96, 3)).astype("float32")
    model.train()
    reference_logits(model, images, source)
    return model.eval()


def save_native(model, source: str, directory: str | os.PathLike) -> str:
    """Saves a reference model the way its library publishes weights; returns the path."""
    import torch

    state = model.state_dict()
    if source == "pycls":
        path = os.path.join(directory, "model.pyth")
        torch.save({"epoch": 99, "model_state": state, "optimizer_state": {}, "cfg": "test"}, path)
    elif source == "timm":
        from safetensors.torch import save_file

        path = os.path.join(directory, "model.safetensors")
        save_file({k: v.contiguous() for k, v in state.items()}, path)
    else:
        path = os.path.join(directory, "model.pth")
        torch.save(state, path)
    return path


def reference_logits(torch_model, images: np.ndarray, source: str) -> np.ndarray:
    """Runs a reference model on RGB [0, 255] NHWC images with its own input convention."""
    import torch

    x = (images.astype("float32") / 255.0 - np.array(IMAGENET_MEAN, "float32")) / np.array(
        IMAGENET_STD, "float32")
    if library(source).channel_order == "BGR":
        x = x[..., ::-1]
    with torch.no_grad():
        return torch_model(torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))).numpy()


def max_logit_difference(model, torch_model, source: str, images: np.ndarray) -> float:
    """max |logits(ours) - logits(reference)| on a batch of RGB [0, 255] images.

    ``model`` must output logits (``classifier_activation=None``) and include preprocessing.
    """
    ours = keras.ops.convert_to_numpy(model(images, training=False))
    return float(np.max(np.abs(ours - reference_logits(torch_model, images, source))))


def verify_state_dict(reference, state: dict, variant_name: str, source: str, keras_weights: str,
                      images: np.ndarray) -> float:
    """Loads ``state`` STRICTLY into the reference model (from :func:`build_reference`) and
    ``keras_weights`` into ours; returns the largest logit difference on ``images``."""
    import torch

    reference.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in state.items()})
    model = RegNet(variant_name, weights=keras_weights, input_shape=(None, None, 3),
                   classifier_activation=None)
    return max_logit_difference(model, reference.eval(), source, images)
