"""Converted weights reproduce the REAL reference implementations' logits."""

from __future__ import annotations

import os

import numpy as np
import pytest

import keras_regnet
from conftest import quick_pass_marks
from keras_regnet import complexity, conversion, references, verify
from keras_regnet.variants import VARIANTS

TOLERANCE = 1e-4
PAIRS = [(name, source) for name in VARIANTS for source in references.libraries_for(name)]


def _cheapest_pairs() -> set[tuple[str, str]]:
    """Per library and block kind (X: no SE, Y: SE), the cheapest variant it implements."""
    best: dict[tuple[str, bool], str] = {}
    for name, source in PAIRS:
        key = (source, VARIANTS[name].spec.se_ratio > 0)
        if key not in best or complexity(name)["flops"] < complexity(best[key])["flops"]:
            best[key] = name
    return {(name, source) for (source, _), name in best.items()}


# Numeric parity on real logits: by default one model per (library, block kind); the whole
# matrix (every variant and library, up to RegNetY320, ~25 min) with --conversion-matrix.
NUMERIC_CASES = [
    pytest.param(name, source, id=f"{name}-{source}",
                 marks=[] if (name, source) in _cheapest_pairs() else [pytest.mark.conversion_matrix])
    for name, source in PAIRS
]


def rgb_images(height: int, width: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0, 255, (2, height, width, 3)).astype("float32")


@pytest.mark.parametrize("name, source", [pytest.param(n, s, id=f"{n}-{s}", marks=quick_pass_marks(n))
                                          for n, s in PAIRS])
def test_every_reference_state_dict_maps_onto_our_weights(name, source, built_model):
    """Every (variant, library) pair: the library's own model, built on torch's meta device
    (shapes, no memory), maps tensor for tensor onto our weights, every one used once."""
    import torch

    try:
        with torch.device("meta"):
            reference = verify.build_reference(name, source)
    except NotImplementedError:  # torchvision computes its widths with tensors: on the CPU then
        reference = verify.build_reference(name, source)
    shapes = {k: tuple(v.shape) for k, v in reference.state_dict().items()}
    model = built_model(name)
    plan = conversion.plan_state_dict(model, shapes, source)
    assert len(plan) == len(model.weights)
    assert len({key for key, _, _ in plan}) == len(plan)
    assert {key for key, _, _ in plan} == {k for k in shapes if not k.endswith("num_batches_tracked")}


@pytest.mark.parametrize("name, source", NUMERIC_CASES)
def test_converted_logits_match_reference(name, source, tmp_path):
    reference = verify.calibrated_reference(name, source)
    checkpoint = verify.save_native(reference, source, tmp_path)
    model = keras_regnet.RegNet(name, weights=checkpoint, input_shape=(None, None, 3),
                                classifier_activation=None)
    os.remove(checkpoint)  # up to 0.6 GB each; the suite's disk peak stays low
    for height, width in [(224, 224), (97, 131)]:
        images = rgb_images(height, width)
        expected = verify.reference_logits(reference, images, source)
        assert expected.std() > 0.05  # a comparison of real, varied logits
        diff = verify.max_logit_difference(model, reference, source, images)
        assert diff <= TOLERANCE, f"{name} from {source} at {height}x{width}: max |diff| {diff:.3g}"


def test_pycls_stem_is_flipped_to_rgb(tmp_path):
    reference = verify.calibrated_reference("RegNetX002", "pycls")
    state = conversion.to_numpy(reference.state_dict())
    model = keras_regnet.RegNetX002(weights=verify.save_native(reference, "pycls", tmp_path))
    kernel = model.get_layer("stem_conv").get_weights()[0]  # [kh, kw, in, out]
    np.testing.assert_array_equal(kernel[:, :, 0, :], state["stem.conv.weight"][:, 2].transpose(1, 2, 0))


def test_mismatched_state_dict_lists_names_and_loads_nothing():
    reference = verify.calibrated_reference("RegNetX002", "timm")
    model = keras_regnet.RegNetY002(weights=None)
    before = [w.copy() for w in model.get_weights()]
    with pytest.raises(ValueError) as err:
        conversion.load_torch_state_dict(model, reference.state_dict(), "timm")
    message = str(err.value)
    assert "nothing was loaded" in message and "s1.b1.se.fc1.weight" in message
    assert "Keras weights without a source tensor" in message
    assert all(np.array_equal(a, b) for a, b in zip(before, model.get_weights()))


def test_headless_model_skips_the_classifier(tmp_path):
    source = "timm"
    reference = verify.calibrated_reference("RegNetY002", source)
    path = verify.save_native(reference, source, tmp_path)
    full = keras_regnet.RegNetY002(weights=path)
    headless = keras_regnet.RegNetY002(weights=path, include_top=False, pooling="avg")
    for layer in headless.layers:
        for a, b in zip(layer.get_weights(), full.get_layer(layer.name).get_weights()):
            np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="unused source tensors"):
        conversion.load_torch_state_dict(headless, reference.state_dict(), source, skip_head=False)


def test_unsafe_pickle_is_refused(tmp_path):
    import torch

    marker = tmp_path / "code-ran"

    class Payload:
        def __reduce__(self):
            import os
            return (os.makedirs, (str(marker),))

    path = tmp_path / "evil.pth"
    torch.save({"stem.0.weight": Payload()}, path)
    with pytest.raises(ValueError, match="Refusing to load"):
        conversion.read_checkpoint(path)
    assert not marker.exists()


def test_detect_source_and_reference_names():
    assert references.detect_source({"stem.0.weight": 0}) == "torchvision"
    assert references.detect_source({"s1.b1.conv1.conv.weight": 0}) == "timm"
    assert references.detect_source({"s1.b1.f.a.weight": 0}) == "pycls"
    with pytest.raises(ValueError, match="pass source="):
        references.detect_source({"foo": 0})
    with pytest.raises(ValueError, match="source must be one of"):
        conversion.load_torch_state_dict(None, {}, "caffe")


@pytest.mark.parametrize("name", [n for n in VARIANTS if "torchvision" not in references.libraries_for(n)])
def test_no_torchvision_reference_is_a_clear_error(name):
    with pytest.raises(ValueError, match=f"torchvision has no network identical to {name}"):
        verify.build_reference(name, "torchvision")
