"""Every Keras export format, each file run by its own runtime in a fresh process that never
imports keras_regnet: TensorFlow (tf_saved_model), onnxruntime, LiteRT, OpenVINO."""

from __future__ import annotations

import keras
import numpy as np
import pytest
from test_export import fine_tuned_classifier

import conftest
import keras_regnet
from keras_regnet import cli, export, formats

# Fresh processes and real runtimes throughout: part of the full suite, not the quick pass.
pytestmark = pytest.mark.slow

KERAS_FORMATS = {"tf_saved_model": "", "onnx": ".onnx", "litert": ".tflite", "openvino": ".xml"}


def _batches(tmp_path):
    """Two batches of different sizes: batch, height and width are all dynamic."""
    rng = np.random.default_rng(7)
    shapes = [(1, 64, 64, 3), (3, 96, 80, 3)]
    batches = [rng.uniform(0, 255, shape).astype("float32") for shape in shapes]
    for k, batch in enumerate(batches):
        np.save(tmp_path / f"batch{k}.npy", batch)
    return batches, [tmp_path / f"batch{k}.npy" for k in range(len(batches))]


def _assert_runtimes_match(model, paths, tmp_path, atol=1e-4):
    batches, files = _batches(tmp_path)
    out = conftest.run_client("runtime_client.py", ",".join(map(str, paths)), *files)
    for path in paths:
        for x, got in zip(batches, out[str(path)]):
            np.testing.assert_allclose(np.array(got), np.asarray(model(x, training=False)),
                                       atol=atol, err_msg=str(path))


@pytest.mark.parametrize("name", conftest.smallest_per_family())
def test_keras_model_export_runs_in_every_runtime(name, tmp_path):
    """Keras's own ``model.export`` on the builder, as a user calls it (unfolded), of the
    family's smallest model at depth 1 per stage (every layer kind; a third of the converting)."""
    keras.utils.set_random_seed(0)
    model = keras_regnet.RegNet(conftest.shallow(name), weights=None, input_shape=(None, None, 3))
    conftest.randomize_batch_norms(model)
    model(np.zeros((1, 64, 64, 3), "float32"))  # Keras's ONNX exporter wants a called model
    paths = []
    for fmt, suffix in KERAS_FORMATS.items():
        paths.append(tmp_path / f"{name}{suffix}")
        model.export(str(paths[-1]), format=fmt, verbose=False)
    _assert_runtimes_match(model, paths, tmp_path)


def test_onnx_has_one_grouped_conv_node_per_grouped_conv_and_no_extra_inputs(tmp_path):
    import onnx

    model = keras_regnet.RegNetY002(weights=None, input_shape=(None, None, 3))
    path = formats.export_keras_format(export.fold_for_inference(model), str(tmp_path / "m.onnx"), "onnx")
    graph = onnx.load(path).graph
    assert [i.name for i in graph.input] == ["image"]  # the constants are constants
    grouped = [n for n in graph.node if n.op_type == "Conv"
               and any(a.name == "group" and a.i > 1 for a in n.attribute)]
    expected = sum(isinstance(layer, keras.layers.Conv2D) and layer.groups > 1 for layer in model.layers)
    assert len(grouped) == expected > 0


def test_a_fine_tuned_model_exports_folded_to_every_format(tmp_path):
    model = fine_tuned_classifier()
    folded = export.fold_for_inference(model)
    paths = [formats.export_keras_format(folded, str(tmp_path / f"tuned{suffix}"), fmt)
             for fmt, suffix in KERAS_FORMATS.items() if suffix]
    _assert_runtimes_match(model, paths, tmp_path)


def test_cli_exports_a_keras_file_with_its_labels_to_each_format(tmp_path, capsys):
    model = fine_tuned_classifier(classes=3)
    model.save(tmp_path / "tuned.keras")
    (tmp_path / "labels.txt").write_text("cat\ndog\nbird\n")
    paths = []
    for fmt in ("onnx", "litert", "openvino"):
        assert cli.main(["export", "--weights", str(tmp_path / "tuned.keras"), "--labels",
                         str(tmp_path / "labels.txt"), "--format", fmt, "--output",
                         str(tmp_path / fmt)]) == 0
        out = capsys.readouterr().out
        assert "over 3 classes" in out and "max |difference| against the Keras model" in out
        paths.append(formats.artifact_path(str(tmp_path / fmt), model.name, fmt))
    _assert_runtimes_match(model, paths, tmp_path)
    # Written once; a second export into the same file is refused without --overwrite.
    assert cli.main(["export", "--weights", str(tmp_path / "tuned.keras"), "--format", "onnx",
                     "--output", str(tmp_path / "onnx")]) == 2
    assert "already exists" in capsys.readouterr().err


def test_cli_refuses_labels_that_do_not_match_the_head(tmp_path, capsys):
    (tmp_path / "labels.txt").write_text("a\nb\n")
    assert cli.main(["export", "--model", "RegNetX002", "--weights", "none", "--classes", "3",
                     "--labels", str(tmp_path / "labels.txt"), "--output", str(tmp_path / "x")]) == 2
    assert "2 class names but the model predicts 3 classes" in capsys.readouterr().err


def test_a_litert_export_says_what_it_wrote_in_a_few_lines(tmp_path, capfd):
    """The TFLite converter prints hundreds of lines from C++ and Python; the CLI shows its own."""
    assert cli.main(["export", "--model", "RegNetX002", "--weights", "none", "--format", "litert",
                     "--output", str(tmp_path)]) == 0
    out, err = capfd.readouterr()
    lines = [line for line in (out + err).splitlines() if line.strip()]
    assert any(line.startswith("wrote ") for line in lines)
    assert len(lines) <= 5, "\n".join(lines)


def test_a_damaged_keras_file_is_one_line(tmp_path, capsys):
    (tmp_path / "bad.keras").write_bytes(b"not a zip")
    assert cli.main(["export", "--weights", str(tmp_path / "bad.keras"), "--output",
                     str(tmp_path / "o")]) == 2
    assert "bad.keras does not load as a Keras model" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
