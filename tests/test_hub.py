"""KerasHub: RegNetBackbone / RegNetImageClassifier under KerasHub's own model-test routines,
weights equal to the builders', and presets written by the CLI loaded in fresh processes."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

keras_hub = pytest.importorskip("keras_hub")
test_case = pytest.importorskip("keras_hub.src.tests.test_case")

import keras  # noqa: E402
from keras.ops import convert_to_numpy as numpy  # noqa: E402

import keras_regnet  # noqa: E402
from conftest import randomize_batch_norms, smallest_per_family  # noqa: E402
from keras_regnet import cli, verify  # noqa: E402
from keras_regnet.design.spec import AnyNetSpec  # noqa: E402
from keras_regnet.hub import (  # noqa: E402
    RegNetBackbone,
    RegNetImageClassifier,
    RegNetImageClassifierPreprocessor,
    RegNetImageConverter,
    list_presets,
    preset_name,
    write_preset,
)
from keras_regnet.preprocessing import IMAGENET_MEAN, IMAGENET_STD, eval_crop  # noqa: E402
from keras_regnet.weight_table import WEIGHTS  # noqa: E402

# A four-stage AnyNet with SE and grouped convs, small enough for KerasHub's many rebuilds.
TINY = AnyNetSpec(depths=(1, 1, 2, 1), widths=(16, 24, 32, 48), bottleneck_ratios=(1, 1, 1, 1),
                  group_widths=(8, 8, 8, 8), se_ratio=0.25, stem_width=16)


@pytest.mark.slow  # KerasHub's own model-test routines: saving round trips, fits
class RegNetKerasHubTest(test_case.TestCase):
    """KerasHub's own backbone / task / saving checks (keras_hub.src.tests.test_case)."""

    test_session = None  # tf.test.TestCase's helper, which pytest would report as a skip

    def test_backbone(self):
        # A backend tensor, not numpy: with numpy, Keras 3.15's compute_output_spec fails at any
        # model whose first layer is a ZeroPadding2D (KerasHub's own ResNetBackbone too).
        images = keras.ops.convert_to_tensor(np.random.default_rng(0).normal(size=(2, 64, 64, 3)), "float32")
        self.run_vision_backbone_test(
            cls=RegNetBackbone,
            init_kwargs={"spec": TINY, "image_shape": (None, None, 3)},
            input_data=images,
            expected_output_shape=(2, 2, 2, 48),
            expected_pyramid_output_keys=["P1", "P2", "P3", "P4", "P5"],
            expected_pyramid_image_sizes=[(32, 32), (16, 16), (8, 8), (4, 4), (2, 2)],
            run_quantization_check=False,  # int8 covers Dense/EinsumDense only: RegNet is convs
        )

    def test_backbone_saving(self):
        images = np.random.default_rng(1).normal(size=(2, 48, 40, 3)).astype("float32")
        self.run_model_saving_test(cls=RegNetBackbone, init_kwargs={"spec": TINY},
                                   input_data=images)

    def test_classifier_task(self):
        rng = np.random.default_rng(2)
        images = rng.integers(0, 256, (4, 50, 70, 3)).astype("uint8")
        labels = np.array([0, 1, 2, 1])
        preprocessor = RegNetImageClassifierPreprocessor(RegNetImageConverter(image_size=(32, 32)))
        self.run_task_test(
            cls=RegNetImageClassifier,
            init_kwargs={"backbone": RegNetBackbone(TINY), "num_classes": 3,
                         "preprocessor": preprocessor},
            train_data=(images, labels),
            expected_output_shape=(4, 3),
        )


@pytest.mark.slow  # over ~5 s on 2 cores (the quick pass stays under 3 minutes)
def test_spec_config_round_trips():
    for spec in ("RegNetY002", TINY, keras_regnet.get_spec("RegNetX004")):
        backbone = RegNetBackbone(spec, image_shape=(64, 64, 3))
        config = json.loads(json.dumps(backbone.get_config()))
        revived = RegNetBackbone.from_config(config)
        assert revived.get_config() == backbone.get_config()
        assert [w.shape for w in revived.weights] == [w.shape for w in backbone.weights]


@pytest.mark.parametrize("name", smallest_per_family())
def test_backbone_is_the_builder(name):
    """Same layers, same weights: a backbone holding a builder's weights gives its features."""
    builder = keras_regnet.RegNet(name, include_top=False, include_preprocessing=False)
    randomize_batch_norms(builder)
    backbone = RegNetBackbone(name)
    assert [layer.name for layer in backbone.layers] == [layer.name for layer in builder.layers]
    keras_regnet.hub.presets.copy_weights(builder, backbone)
    x = np.random.default_rng(3).normal(size=(2, 96, 64, 3)).astype("float32")
    np.testing.assert_allclose(numpy(backbone(x)), numpy(builder(x)), rtol=0, atol=1e-5)
    pyramid = keras.Model(backbone.inputs, backbone.pyramid_outputs)(x)
    reference = keras_regnet.feature_pyramid(builder)(x)
    for level, features in reference.items():
        np.testing.assert_allclose(numpy(pyramid[level]), numpy(features), atol=1e-5)


def test_converter_is_the_eval_transform_of_each_weight_set():
    rng = np.random.default_rng(4)
    image = rng.integers(0, 256, (1, 300, 410, 3)).astype("uint8")
    for weight_set in {s.transform: s for s in WEIGHTS}.values():  # one per distinct transform
        converter = RegNetImageConverter.for_transform(weight_set.transform)
        assert converter.transform == weight_set.transform
        revived = RegNetImageConverter.from_config(converter.get_config())
        expected = (np.asarray(eval_crop(image, weight_set.transform)) / 255.0
                    - np.array(IMAGENET_MEAN)) / np.array(IMAGENET_STD)
        np.testing.assert_allclose(numpy(revived(image)), expected, atol=1e-5)


def test_preset_names_cover_the_weights_table_and_gate_non_commercial_sets():
    everything = list_presets(include_non_commercial=True)
    assert set(everything) == {preset_name(s.model, s.tag) for s in WEIGHTS}
    # By default, exactly the weights table's sets whose licence allows commercial use; the
    # non-commercial ones (SWAG, CC-BY-NC) only on request.
    non_commercial = {preset_name(s.model, s.tag) for s in WEIGHTS if "NC" in s.license}
    assert non_commercial, "the table's SWAG sets are CC-BY-NC"
    assert set(list_presets()) == {preset_name(s.model, s.tag) for s in WEIGHTS} - non_commercial


def test_cli_refuses_non_commercial_weights_without_opt_in(tmp_path, capsys):
    out = tmp_path / "swag"
    code = cli.main(["preset", "--model", "RegNetY160", "--weights", "swag_e2e_in1k", "--output", str(out)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "--allow-non-commercial" in err and "\n" not in err
    assert not out.exists()


@pytest.mark.slow
def test_write_preset_never_replaces_a_folder_unasked(tmp_path):
    out = tmp_path / "preset"
    out.mkdir()
    (out / "mine.txt").write_text("keep me")
    for overwrite in (False, True):  # someone else's files: not even with overwrite
        with pytest.raises(FileExistsError, match="files keras_regnet did not write"):
            write_preset("RegNetX002", None, out, overwrite=overwrite)
    assert os.listdir(out) == ["mine.txt"]
    (out / "mine.txt").unlink()
    path, difference = write_preset("RegNetX002", None, out)  # an empty folder is fine
    assert difference == 0.0 and "config.json" in os.listdir(path)
    with pytest.raises(FileExistsError, match="--overwrite"):  # our own preset: only if asked
        write_preset("RegNetX002", None, out)
    write_preset("RegNetX002", None, out, overwrite=True)
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".")]  # no staging left behind


@pytest.mark.slow
def test_cli_preset_of_a_fine_tuned_file_keeps_its_classes_and_transform(tmp_path):
    model = keras_regnet.RegNetX002(weights=None, classes=7, input_shape=(48, 48, 3))
    model.save_weights(tmp_path / "mine.weights.h5")
    out = tmp_path / "mine"
    assert cli.main(["preset", "--model", "RegNetX002", "--weights", str(tmp_path / "mine.weights.h5"),
                     "--classes", "7", "--eval-transform", "55/48 bicubic", "--output", str(out)]) == 0
    task = json.loads((out / "task.json").read_text())["config"]
    converter = json.loads((out / "image_converter.json").read_text())["config"]
    assert task["num_classes"] == 7
    assert converter["image_size"] == [48, 48] and converter["interpolation"] == "bicubic"
    assert converter["crop_fraction"] == pytest.approx(48 / 55)


# Run by a fresh interpreter per backend: the documented import, KerasHub's generic loaders.
FRESH_PROCESS_CHECKS = """
import sys, numpy as np, keras, keras_hub
from keras.ops import convert_to_numpy as numpy
import keras_regnet  # registers RegNet with KerasHub
preset, work = sys.argv[1], sys.argv[2]
assert keras.backend.backend() == sys.argv[3], keras.backend.backend()
x = np.load(work + "/normalised.npy")
raw = np.load(work + "/raw.npy")
classifier = keras_hub.models.ImageClassifier.from_preset(preset)
assert type(classifier).__name__ == "RegNetImageClassifier", type(classifier)
np.save(work + "/logits.npy", numpy(classifier(x)))
np.save(work + "/raw_logits.npy", classifier.predict(raw, verbose=0))
backbone = keras_hub.models.Backbone.from_preset(preset)
assert type(backbone).__name__ == "RegNetBackbone"
assert sorted(backbone.pyramid_outputs) == ["P1", "P2", "P3", "P4", "P5"]
np.save(work + "/features.npy", numpy(backbone(x)))
# A new 3-class head on the pretrained backbone fine-tunes with fit.
tuned = keras_hub.models.ImageClassifier.from_preset(preset, num_classes=3)
tuned.compile(optimizer=keras.optimizers.SGD(0.01))
before = numpy(tuned.output_dense.kernel).copy()
history = tuned.fit(raw, np.array([0, 1, 2, 1]), batch_size=2, epochs=1, verbose=0)
assert np.isfinite(history.history["loss"][0])
assert not np.allclose(before, numpy(tuned.output_dense.kernel))
# save_to_preset round trip.
tuned.save_to_preset(work + "/tuned")
again = keras_hub.models.ImageClassifier.from_preset(work + "/tuned")
np.testing.assert_allclose(numpy(again(x)), numpy(tuned(x)), atol=1e-5)
print("fresh-process checks passed on", keras.backend.backend())
"""


@pytest.mark.tensorflow_only("starts its own fresh process per backend (TensorFlow, JAX, PyTorch) from "
                              "the TensorFlow run")
@pytest.mark.slow
def test_cli_preset_loads_through_keras_hub_in_fresh_processes(tmp_path):
    """A pycls checkpoint -> `keras-regnet preset` -> from_preset on TensorFlow, JAX and torch:
    logits equal pycls's within 1e-4, raw images of any size predict, fine-tuning and
    save_to_preset work."""
    name = "RegNetX002"
    reference = verify.calibrated_reference(name, "pycls")
    checkpoint = verify.save_native(reference, "pycls", tmp_path)
    preset = tmp_path / "regnetx002_pycls"
    # Written in this process (the CLI's own function); loaded below in fresh ones.
    assert cli.main(["preset", "--model", name, "--weights", checkpoint, "--output", str(preset)]) == 0
    assert {"config.json", "model.weights.h5", "metadata.json", "task.json", "task.weights.h5",
            "preprocessor.json"} <= set(os.listdir(preset))
    record = json.loads((preset / "keras_regnet_weights.json").read_text())  # which weights
    assert (record["kind"], record["files"]) == ("checkpoint", [os.path.basename(checkpoint)])
    assert record["sha256"] == hashlib.sha256(open(checkpoint, "rb").read()).hexdigest()

    rng = np.random.default_rng(5)
    images = rng.uniform(0, 255, (2, 224, 224, 3)).astype("float32")
    raw = rng.integers(0, 256, (4, 180, 260, 3)).astype("uint8")
    normalised = (images / 255.0 - np.array(IMAGENET_MEAN, "float32")) / np.array(IMAGENET_STD, "float32")
    expected = verify.reference_logits(reference, images, "pycls")
    builder = keras_regnet.RegNet(name, weights=checkpoint, input_shape=(None, None, 3),
                                  classifier_activation=None)
    expected_raw = numpy(builder(eval_crop(raw, RegNetImageConverter().transform)))
    expected_features = keras_regnet.RegNet(name, weights=checkpoint, include_top=False,
                                            include_preprocessing=False)(normalised)
    for backend in ("tensorflow", "jax", "torch"):
        work = tmp_path / backend
        work.mkdir()
        np.save(work / "normalised.npy", normalised)
        np.save(work / "raw.npy", raw)
        env = dict(os.environ, KERAS_BACKEND=backend, JAX_PLATFORMS="cpu")
        subprocess.run([sys.executable, "-c", textwrap.dedent(FRESH_PROCESS_CHECKS), str(preset), str(work),
                        backend], env=env, check=True, timeout=600)
        np.testing.assert_allclose(np.load(work / "logits.npy"), expected, rtol=0, atol=1e-4)
        np.testing.assert_allclose(np.load(work / "raw_logits.npy"), expected_raw, rtol=0, atol=1e-4)
        # Unpooled features reach ~10 and the backends' kernels round differently: within 1e-4
        # of the features' scale (the pooled logits above meet 1e-4 absolute).
        scale = float(np.max(np.abs(expected_features)))
        np.testing.assert_allclose(np.load(work / "features.npy"), expected_features, atol=1e-4 * scale)



@pytest.mark.tensorflow_only("the example trains with the TensorFlow trainer")
@pytest.mark.slow
def test_transfer_learning_example_runs_as_documented(tmp_path, monkeypatch):
    """`python training/transfer_learning.py` (docs/kerashub.md), shortened: it writes the
    preset, fine-tunes through KerasHub's from_preset(num_classes=5) and reports both runs.
    The script runs as ``__main__`` in this process (its imports and registration are the
    package's: fresh-process loading is test_cli_preset_loads_through_keras_hub_in_fresh_processes)."""
    import runpy

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    script = os.path.join(root, "training", "transfer_learning.py")
    out = tmp_path / "transfer"
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", [script, "--out", str(out), "--source_epochs", "1",
                                      "--target_epochs", "1", "--shots", "2"])
    monkeypatch.setattr(sys, "path", list(sys.path))  # the script puts the checkout first
    runpy.run_path(script, run_name="__main__")
    result = json.loads((out / "transfer.json").read_text())
    assert result["target_train_images"] == 10 and result["target_val_images"] > 100
    # The preset it wrote is the model it scored: loaded back through KerasHub, it gets the
    # reported source top-1 on digits 0-4 of the validation split, image for image.
    import keras_hub

    from keras_regnet.training.demo import digit_images

    images, labels = digit_images(32)["validation"]
    source = labels < 5
    loaded = keras_hub.models.ImageClassifier.from_preset(str(out / "regnetx002_digits04"))
    predicted = loaded.predict(images[source], verbose=0).argmax(-1)
    assert result["source_val_top1"] == pytest.approx(float(np.mean(predicted == labels[source])), abs=1e-9)
    assert result["source_train_images"] == int(np.sum(digit_images(32)["train"][1] < 5))
