"""Reference PyTorch models (pycls, timm, torchvision) in a state worth comparing against.

The reference's own random init leaves BatchNorm at gamma 1, beta 0 and running statistics
0 / 1, which would hide a swapped mapping. Here gamma/beta are randomised and the running
statistics are set from one training-mode pass over random images, so every BN does real
work and activations keep a realistic scale; the classifier keeps the reference's own init.
"""

from __future__ import annotations

import numpy as np

from keras_regnet import conversion
from keras_regnet.variants import VARIANTS


def sources_for(name: str) -> list[str]:
    """The reference libraries that implement this variant's exact architecture."""
    from keras_regnet.weights import torchvision_model_name

    sources = ["pycls"] if VARIANTS[name].spec.rounding == "pycls" else []
    sources.append("timm")
    if torchvision_model_name(name):
        sources.append("torchvision")
    return sources


def make_reference(name: str, source: str, seed: int = 0):
    import torch

    torch.manual_seed(seed)
    model = conversion.build_reference_model(name, source)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.weight.uniform_(0.5, 1.5, generator=generator)
                module.bias.normal_(0.0, 0.2, generator=generator)
                module.momentum = 1.0  # running stats := this batch's stats
    images = np.random.default_rng(seed + 1).uniform(0, 255, (8, 96, 96, 3)).astype("float32")
    model.train()
    conversion.reference_logits(model, images, source)
    return model.eval()


def save_native(model, source: str, directory) -> str:
    """Saves a reference model the way its library ships weights; returns the file path."""
    import torch

    state = model.state_dict()
    if source == "pycls":
        path = f"{directory}/model.pyth"
        torch.save({"epoch": 99, "model_state": state, "optimizer_state": {}, "cfg": "test"}, path)
    elif source == "timm":
        from safetensors.torch import save_file

        path = f"{directory}/model.safetensors"
        save_file({k: v.contiguous() for k, v in state.items()}, path)
    else:
        path = f"{directory}/model.pth"
        torch.save(state, path)
    return path
