"""Every bad input a user or a network can produce gets a clear answer; nothing is poisoned.

Each test here is one row of docs/robustness.md ("what happens when").
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf

import keras_regnet
from conftest import TRAIN, run_trainer, run_trainer_in_process
from keras_regnet import conversion, downloads, export, verify, weight_table
from keras_regnet.preprocessing import EvalTransform
from keras_regnet.training import data as data_lib
from keras_regnet.training.demo import prepare

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(autouse=True)
def keras_home(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras_home"))
    monkeypatch.delenv(downloads.MIRROR_ENV, raising=False)
    return tmp_path / "keras_home"


@pytest.fixture(scope="module")
def x002_safetensors(tmp_path_factory):
    reference = verify.calibrated_reference("RegNetX002", "timm")
    path = verify.save_native(reference, "timm", tmp_path_factory.mktemp("ref"))
    return reference, open(path, "rb").read()


def _register(monkeypatch, model, *files):
    ws = weight_table.WeightSet(model, "imagenet", 70.0, EvalTransform(), "MIT", tuple(files))
    monkeypatch.setitem(weight_table._REGISTRY, (model, "imagenet"), ws)


def _cache_files(keras_home) -> list[str]:
    root = keras_home / "keras_regnet"
    return sorted(p.name for p in root.rglob("*") if p.is_file() and not p.name.startswith(".")) \
        if root.exists() else []


def _two_sources_load_the_reference(server, monkeypatch, reference, first: str, second: str):
    """RegNetX002's 'imagenet' set served from two routes; loading it gives the reference."""
    _register(monkeypatch, "RegNetX002", weight_table.Download(server.url + first, "timm"),
              weight_table.Download(server.url + second, "timm"))
    model = keras_regnet.RegNetX002(weights="imagenet", classifier_activation=None)
    images = np.random.default_rng(0).uniform(0, 255, (2, 224, 224, 3)).astype("float32")
    assert verify.max_logit_difference(model, reference, "timm", images) <= 1e-4


# --- 1. a bad download never enters the cache; the next source is tried ----------------------

@pytest.mark.slow  # over ~5 s on 2 cores (the quick pass stays under 3 minutes)
@pytest.mark.parametrize("bad", ["no-length-cut", "captive-portal-html"])
def test_a_bad_download_is_discarded_and_the_next_source_used(bad, server, monkeypatch, keras_home,
                                                                x002_safetensors):
    reference, body = x002_safetensors
    if bad == "no-length-cut":
        server.routes["/hub/model.safetensors"] = (body, "no-length-cut")
    else:
        server.routes["/hub/model.safetensors"] = (b"<html><body>Please log in</body></html>", "ok")
    server.routes["/mirror/model.safetensors"] = (body, "ok")
    _two_sources_load_the_reference(server, monkeypatch, reference, "/hub/model.safetensors",
                                    "/mirror/model.safetensors")
    assert server.requests == ["/hub/model.safetensors", "/mirror/model.safetensors"]
    # Only the good file was kept (its name comes from the URL's last part).
    assert _cache_files(keras_home) == ["RegNetX002_imagenet.weights.h5", "manifest.json",
                                        "model.safetensors"]


def test_all_sources_bad_names_every_url_and_keeps_nothing(server, monkeypatch, keras_home):
    server.routes["/a.safetensors"] = (b"<html>portal</html>", "ok")
    _register(monkeypatch, "RegNetX002",
              weight_table.Download(server.url + "/a.safetensors", "timm"),
              weight_table.Download(server.url + "/gone.pyth", "pycls"))
    with pytest.raises(downloads.DownloadError) as err:
        keras_regnet.RegNetX002(weights="imagenet")
    message = str(err.value)
    assert f"{server.url}/a.safetensors did not give a valid a.safetensors" in message
    assert f"Could not download {server.url}/gone.pyth: Not Found" in message
    assert _cache_files(keras_home) == []


# --- 2. mirror and timeout -------------------------------------------------------------------

def test_mirror_over_http_and_file(server, monkeypatch, keras_home, tmp_path, x002_safetensors):
    _, body = x002_safetensors
    dl = weight_table.Download("https://weights.example.org/sets/x002.safetensors", "timm")
    server.routes["/weights.example.org/sets/x002.safetensors"] = (body, "ok")
    monkeypatch.setenv(downloads.MIRROR_ENV, server.url)
    path = downloads.download(dl, str(tmp_path / "http"))
    assert open(path, "rb").read() == body and len(server.requests) == 1

    folder = tmp_path / "mirror" / "weights.example.org" / "sets"
    folder.mkdir(parents=True)
    (folder / "x002.safetensors").write_bytes(body)
    monkeypatch.setenv(downloads.MIRROR_ENV, f"file://{tmp_path / 'mirror'}")
    path = downloads.download(dl, str(tmp_path / "file"))
    assert open(path, "rb").read() == body


def test_a_silent_server_times_out_quickly(server, monkeypatch, tmp_path):
    server.routes["/slow.bin"] = (b"x" * 100, "hang")
    monkeypatch.setenv(downloads.TIMEOUT_ENV, "0.5")
    start = time.perf_counter()
    with pytest.raises(downloads.DownloadError, match="timed out"):
        downloads.download(weight_table.Download(server.url + "/slow.bin", "timm"), str(tmp_path))
    assert time.perf_counter() - start < 2.5
    monkeypatch.setenv(downloads.TIMEOUT_ENV, "soon")
    with pytest.raises(ValueError, match="KERAS_REGNET_TIMEOUT='soon' must be a positive number"):
        downloads.timeout()


def test_large_downloads_show_progress(server, tmp_path, capsys):
    server.routes["/big.bin"] = (os.urandom(5_000_000), "ok")
    downloads.download(weight_table.Download(server.url + "/big.bin", "timm"), str(tmp_path))
    assert "100% of 5.0 MB" in capsys.readouterr().err


# --- 3. unreadable weight files ----------------------------------------------------------------

@pytest.mark.parametrize("content, reason", [
    (b"", "it is empty"), (b"garbage" * 10, "70 bytes"), ("truncated", "bytes, truncated")])
def test_unreadable_safetensors_names_the_file(content, reason, tmp_path, x002_safetensors):
    path = tmp_path / "w.safetensors"
    path.write_bytes(x002_safetensors[1][:5000] if content == "truncated" else content)
    with pytest.raises(conversion.WeightsFileError, match=reason) as err:
        keras_regnet.RegNetX002(weights=str(path))
    assert str(path) in str(err.value)


def test_garbage_keras_weights_file_names_the_file(tmp_path):
    path = tmp_path / "w.weights.h5"
    path.write_bytes(b"not hdf5 at all")
    with pytest.raises(conversion.WeightsFileError, match=f"{path} is not a readable .weights.h5"):
        keras_regnet.RegNetX002(weights=str(path))


def _cli(*args, env=None, timeout=300):
    return subprocess.run([sys.executable, "-m", "keras_regnet.cli", *args], capture_output=True,
                          text=True, timeout=timeout, env=dict(os.environ, **(env or {})))


def _one_clear_line(result, code=2):
    assert result.returncode == code, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    # Ours only: TensorFlow's C++ start-up lines (before its logging starts) are not ours.
    errors = [line for line in result.stderr.splitlines()
              if line.startswith(("train: error:", "keras-regnet: error:", "make_tfrecords: error:"))]
    assert len(errors) == 1, result.stderr[-2000:]
    return errors[0]


@pytest.mark.slow
def test_convert_garbage_is_one_line_and_writes_nothing(tmp_path):
    bad = tmp_path / "w.safetensors"
    bad.write_bytes(b"\x00" * 64)
    out = tmp_path / "out.weights.h5"
    line = _one_clear_line(_cli("convert", "--source", "timm", "--checkpoint", str(bad),
                                "--model", "RegNetX002", "--output", str(out)))
    assert str(bad) in line and not out.exists()


@pytest.mark.slow
def test_convert_verify_without_timm_writes_nothing(tmp_path, x002_safetensors):
    checkpoint = tmp_path / "w.safetensors"
    checkpoint.write_bytes(x002_safetensors[1])
    out = tmp_path / "out.weights.h5"
    blocker = tmp_path / "block"
    blocker.mkdir()
    (blocker / "sitecustomize.py").write_text(
        "import sys\nclass B:\n    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] == 'timm':\n            raise ImportError('no timm')\n"
        "sys.meta_path.insert(0, B())\n")
    env = {"PYTHONPATH": f"{blocker}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    line = _one_clear_line(_cli("convert", "--source", "timm", "--checkpoint", str(checkpoint),
                                "--model", "RegNetX002", "--output", str(out), "--verify", env=env))
    assert "timm" in line and "pip install" in line and not out.exists()


# --- 4. truncated TFRecord shards ---------------------------------------------------------------

@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory):
    return prepare(str(tmp_path_factory.mktemp("demo")))


def _truncated_copy(demo_dir, tmp_path, split):
    import shutil

    data = tmp_path / "data"
    shutil.copytree(demo_dir, data)
    shard = data_lib.split_files(str(data), split)[0]
    with open(shard, "r+b") as f:
        f.truncate(os.path.getsize(shard) // 2)
    return data, shard


def test_truncated_validation_shard_is_named(demo_dir, tmp_path):
    data, shard = _truncated_copy(demo_dir, tmp_path, "validation")
    with pytest.raises(data_lib.CorruptShardError, match=f"truncated validation shard {shard}"):
        data_lib.detect_label_offset(data_lib.split_files(str(data), "validation"), 10)
    os.remove(data / "record_counts.json")
    data, shard = _truncated_copy(demo_dir, tmp_path / "t", "train")
    with pytest.raises(data_lib.CorruptShardError, match=f"truncated train shard {shard}"):
        data_lib.count_records(data_lib.split_files(str(data), "train"))


# --- 5. and 6. the trainer's command line ------------------------------------------------------

SMALL = ["--strategy", "one_device", "--epochs", "1", "--steps_per_epoch", "2", "--batch_size",
         "16", "--image_size", "32", "--num_classes", "10", "--eval_steps", "1", "--noexport"]


@pytest.mark.parametrize("args, expected", [
    (["--data_dir=/nonexistent/records"], "No train shards matching 'train-*' in /nonexistent/records"),
    (["--model=RegNetX04"], "did you mean RegNetX004"),
    (["--model_dir=/proc/no_such_dir/run"], "/proc/no_such_dir"),
])
def test_train_user_errors_are_one_line(args, expected, demo_dir, capsys):
    base = [a for a in SMALL if not a.startswith("--batch_size") and a != "16"]
    assert expected in _one_clear_line(run_trainer_in_process(capsys, f"--data_dir={demo_dir}", *base, *args))


@pytest.mark.slow
def test_train_user_error_exit_path_in_a_fresh_process(demo_dir):
    """The real exit (status 2, one line, no traceback) once, as a user's shell sees it; the
    replica split must happen before TensorFlow starts, so this one needs its own process."""
    base = [a for a in SMALL if not a.startswith("--batch_size") and a != "16"]
    result = run_trainer([f"--data_dir={demo_dir}", *base, "--strategy=mirrored", "--cpu_replicas=2",
                          "--batch_size=15"])
    assert "--batch_size 15 does not split over 2 replicas" in _one_clear_line(result)


@pytest.mark.slow
def test_unusable_keras_home_is_one_line(demo_dir, tmp_path):
    home = tmp_path / "home"
    home.write_text("a file, not a folder")  # unusable even for root, who may write anywhere
    empty_mirror = tmp_path / "mirror"  # and nothing may reach the internet
    empty_mirror.mkdir()
    result = subprocess.run([sys.executable, TRAIN, f"--data_dir={demo_dir}", *SMALL,
                             f"--model_dir={tmp_path / 'run'}", "--init_weights=imagenet"],
                            capture_output=True, text=True, timeout=300,
                            env=dict(os.environ, KERAS_HOME=str(home),
                                     KERAS_REGNET_MIRROR=f"file://{empty_mirror}"))
    line = _one_clear_line(result)
    assert "Cannot create the weights cache" in line and "KERAS_HOME" in line


@pytest.mark.slow
def test_second_run_into_a_busy_model_dir_refuses_and_history_is_kept(demo_dir, tiny_design, tmp_path,
                                                                      capsys):
    from keras_regnet.training.lock import exclusive

    run_dir = tmp_path / "run"
    args = [f"--data_dir={demo_dir}", f"--design={tiny_design}", *SMALL, f"--model_dir={run_dir}"]
    with exclusive(str(run_dir)):  # another run holds it (a lock is per open file, not per process)
        line = _one_clear_line(run_trainer_in_process(capsys, *args))
    assert f"{run_dir} is in use by another training run (pid {os.getpid()})" in line
    assert not (run_dir / "checkpoints").exists()
    # The lock is free again; a rerun of a finished command keeps history. The second run is a
    # user's fresh process, whose console is checked below.
    assert run_trainer_in_process(capsys, *args).returncode in (0, None)
    result = run_trainer(args)
    assert result.returncode == 0, result.stderr[-2000:]
    history = (run_dir / "metrics_history.jsonl").read_text().splitlines()
    assert len(history) == 2 and json.loads(history[-1]) == json.load(open(run_dir / "metrics.json"))
    # TensorFlow's INFO chatter stays out of the user's console.
    assert "INFO:tensorflow" not in result.stderr and "Sharding callback" not in result.stderr


@pytest.mark.slow
def test_non_finite_loss_is_one_line_exit_1(demo_dir, tiny_design, tmp_path, capsys):
    args = [a for a in SMALL if a not in ("--steps_per_epoch", "2")]
    result = run_trainer_in_process(capsys, f"--data_dir={demo_dir}", f"--design={tiny_design}", *args,
                                    "--steps_per_epoch=8",
                               "--learning_rate=1e30", f"--model_dir={tmp_path}")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "train: stopped: Loss became" in result.stderr


# --- 7. make_tfrecords ---------------------------------------------------------------------------

@pytest.mark.slow
def test_make_tfrecords_skips_an_undecodable_image_naming_it(tmp_path):
    root = tmp_path / "images"
    for cls in ("a", "b"):
        (root / cls).mkdir(parents=True)
        for i in range(3):
            pixels = np.full((12, 10, 3), 40 * i, np.uint8)
            (root / cls / f"{i}.png").write_bytes(tf.io.encode_png(pixels).numpy())
    (root / "b" / "broken.jpg").write_bytes(b"\xff\xd8\xff" + b"\x00" * 50)
    out = tmp_path / "records"
    result = subprocess.run([sys.executable, os.path.join(ROOT, "training", "make_tfrecords.py"),
                             f"--train_dir={root}", f"--output_dir={out}", "--train_shards=2"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "broken.jpg" in result.stderr and "skipping" in result.stderr
    assert sorted(p.name for p in out.iterdir()) == [
        "labels.txt", "record_counts.json", "train-00000-of-00002", "train-00001-of-00002"]
    assert json.loads((out / "record_counts.json").read_text()) == {"train": 6}
    assert data_lib.count_records(data_lib.split_files(str(out), "train")) == 6


# --- 8. the served model bounds what one request costs --------------------------------------

@pytest.fixture(scope="module")
def served(tmp_path_factory):
    model = keras_regnet.RegNetX002(weights=None, input_shape=(None, None, 3))
    path = export.export_saved_model(model, str(tmp_path_factory.mktemp("s") / "m"), 1,
                                     max_pixels=1_000_000)
    return tf.saved_model.load(path)


@pytest.mark.slow  # its fixture exports a SavedModel (~10 s on 2 cores)
def test_an_image_over_the_pixel_limit_is_refused_before_decoding(served):
    # 12000 x 12000 PNG: a few hundred KB that would decode to 432 MB.
    png = tf.io.encode_png(tf.zeros([12000, 12000, 1], tf.uint8))
    assert len(png.numpy()) < 1_000_000
    start = time.perf_counter()
    with pytest.raises(tf.errors.InvalidArgumentError, match="at most 1,000,000 pixels"):
        served.signatures["serving_bytes"](image_bytes=tf.constant([png.numpy()]))
    assert time.perf_counter() - start < 5
    with pytest.raises(tf.errors.InvalidArgumentError, match="at most 1,000,000 pixels"):
        served.signatures["serving_default"](images=tf.zeros([1, 1100, 1000, 3]))


@pytest.mark.slow  # its fixture exports a SavedModel (~10 s on 2 cores)
def test_an_extreme_aspect_ratio_is_served_at_the_crops_cost(served):
    strip = tf.io.encode_jpeg(tf.fill([1, 3000, 3], tf.constant(128, tf.uint8))).numpy()
    out = served.signatures["serving_bytes"](image_bytes=tf.constant([strip] * 2))
    assert out["probabilities"].shape == (2, 1000)


def test_export_refuses_a_limit_below_the_crop(tmp_path):
    model = keras_regnet.RegNetX002(weights=None)
    with pytest.raises(ValueError, match="max_pixels must be an integer of at least"):
        export.export_saved_model(model, str(tmp_path / "m"), 1, max_pixels=100)


@pytest.mark.slow  # over ~5 s on 2 cores (the quick pass stays under 3 minutes)
def test_a_damaged_cache_entry_is_replaced(server, monkeypatch, keras_home, x002_safetensors):
    # A cached download or converted file that no longer reads (older versions could leave
    # one) is deleted and rebuilt once, with a warning; the model still loads exactly.
    reference, body = x002_safetensors
    server.routes["/w/model.safetensors"] = (body, "ok")
    _register(monkeypatch, "RegNetX002", weight_table.Download(server.url + "/w/model.safetensors", "timm"))
    keras_regnet.RegNetX002(weights="imagenet")
    cache = keras_home / "keras_regnet"
    (cache / "downloads" / "model.safetensors").write_bytes(b"<html>portal</html>")
    (cache / "RegNetX002_imagenet.weights.h5").write_bytes(b"")
    model = keras_regnet.RegNetX002(weights="imagenet", classifier_activation=None)
    images = np.random.default_rng(0).uniform(0, 255, (2, 224, 224, 3)).astype("float32")
    assert verify.max_logit_difference(model, reference, "timm", images) <= 1e-4
    assert len(server.requests) == 2  # fetched again once
    assert (cache / "downloads" / "model.safetensors").read_bytes() == body


# --- 9. writers never destroy what they did not write; one writer per target ---------------

@pytest.mark.parametrize("output", [".", "", ".."])
def test_preset_never_writes_into_the_current_directory_or_a_parent(tmp_path, monkeypatch, output):
    from keras_regnet import cli

    work = tmp_path / "work"
    work.mkdir()
    (work / "notes.txt").write_text("mine")
    monkeypatch.chdir(work)
    assert cli.main(["preset", "--model", "RegNetX002", "--weights", "none", "--output", output,
                     "--overwrite"]) == 2
    assert os.listdir(work) == ["notes.txt"]


def test_export_never_writes_into_the_folder_of_its_source(tmp_path):
    from keras_regnet.hub import write_preset

    weights = tmp_path / "tuned.weights.h5"
    keras_regnet.RegNetX002(weights=None).save_weights(weights)
    with pytest.raises(ValueError, match="it holds the source"):
        write_preset("RegNetX002", str(weights), tmp_path, overwrite=True)
    assert os.listdir(tmp_path) == ["tuned.weights.h5"]


@pytest.mark.slow
def test_a_second_writer_waits_then_refuses_to_replace_the_first_ones_export(tmp_path):
    import threading

    from keras_regnet.writers import exclusive_writer

    model = keras_regnet.RegNetX002(weights=None, input_shape=(None, None, 3))
    base = str(tmp_path / "served")
    first_holds, release, outcome = threading.Event(), threading.Event(), {}

    def first_writer():  # holds the target's lock as an export in progress does
        with exclusive_writer(os.path.join(base, "1")):
            first_holds.set()
            release.wait(60)
            export.export_saved_model(model, base + "_elsewhere", 1)  # a real write meanwhile
            os.makedirs(os.path.join(base, "1"))
            from keras_regnet.writers import mark
            mark(os.path.join(base, "1"), "saved_model")  # the first writer's result

    def second_writer():
        first_holds.wait(60)
        try:
            export.export_saved_model(model, base, 1)
            outcome["second"] = "wrote"
        except FileExistsError as err:
            outcome["second"] = str(err)

    threads = [threading.Thread(target=first_writer), threading.Thread(target=second_writer)]
    for t in threads:
        t.start()
    time.sleep(1.0)
    assert "second" not in outcome  # still waiting for the lock
    release.set()
    for t in threads:
        t.join(120)
    assert "already exists" in outcome["second"]
    assert os.listdir(os.path.join(base, "1")) == [".keras_regnet_output"]  # the first's, untouched


@pytest.mark.slow
def test_a_writer_removes_what_a_killed_writer_of_its_target_left(tmp_path):
    from keras_regnet import formats

    base = tmp_path / "served"
    (base / ".1.exporting.abc123").mkdir(parents=True)  # killed SavedModel export
    (base / ".2.exporting.zzz").mkdir()  # another version's: not this writer's target
    (tmp_path / ".m.onnx.k3j4.part").mkdir()  # killed ONNX export
    model = keras_regnet.RegNetX002(weights=None, input_shape=(None, None, 3))
    export.export_saved_model(model, str(base), 1)
    assert sorted(os.listdir(base)) == [".2.exporting.zzz", "1"]
    formats.export_keras_format(export.fold_for_inference(model), str(tmp_path / "m.onnx"), "onnx")
    assert not (tmp_path / ".m.onnx.k3j4.part").exists()


@pytest.mark.slow
def test_a_killed_checkpoint_write_is_cleaned_by_the_next_run(demo_dir, tiny_design, tmp_path, capsys):
    checkpoints = tmp_path / "run" / "checkpoints"
    (checkpoints / "ckpt-4_temp").mkdir(parents=True)
    (checkpoints / "ckpt-4_temp" / "part-00000-of-00001").write_bytes(b"half")
    result = run_trainer_in_process(capsys, f"--data_dir={demo_dir}", f"--design={tiny_design}",
                                    f"--model_dir={tmp_path / 'run'}", "--strategy", "one_device",
                                    "--epochs", "1", "--steps_per_epoch", "1",
                                    "--batch_size", "8", "--image_size", "32", "--num_classes", "10",
                                    "--eval_steps", "1", "--noexport")
    assert result.returncode in (0, None), result.stderr[-2000:]
    assert not (checkpoints / "ckpt-4_temp").exists()


def test_convert_refuses_to_overwrite_unless_asked(tmp_path, x002_safetensors):
    from keras_regnet import cli

    _, body = x002_safetensors
    (tmp_path / "x.safetensors").write_bytes(body)
    out = tmp_path / "x.weights.h5"
    out.write_bytes(b"my earlier conversion")
    args = ["convert", "--source", "timm", "--checkpoint", str(tmp_path / "x.safetensors"),
            "--model", "RegNetX002", "--output", str(out)]
    assert cli.main(args) == 2
    assert out.read_bytes() == b"my earlier conversion"
    assert cli.main([*args, "--overwrite"]) == 0 and out.read_bytes() != b"my earlier conversion"


@pytest.mark.parametrize("top_k", ["0", "-1"])
def test_export_refuses_a_top_k_below_one(tmp_path, capsys, top_k):
    from keras_regnet import cli

    assert cli.main(["export", "--model", "RegNetX002", "--weights", "none", "--top_k", top_k,
                     "--output", str(tmp_path / "m")]) == 2
    assert "--top_k must be a positive integer" in capsys.readouterr().err
    assert not (tmp_path / "m").exists()


# --- 10. the cache holds only what it verified ----------------------------------------------

@pytest.fixture(scope="module")
def y002_safetensors(tmp_path_factory):
    reference = verify.calibrated_reference("RegNetY002", "timm")
    return open(verify.save_native(reference, "timm", tmp_path_factory.mktemp("y")), "rb").read()


@pytest.mark.slow
def test_a_mirror_serving_another_models_checkpoint_is_discarded_and_the_next_tried(
        server, monkeypatch, keras_home, x002_safetensors, y002_safetensors, caplog):
    reference, body = x002_safetensors
    server.routes["/wrong/model.safetensors"] = (y002_safetensors, "ok")  # RegNetY002's file
    server.routes["/right/x002.safetensors"] = (body, "ok")
    _two_sources_load_the_reference(server, monkeypatch, reference, "/wrong/model.safetensors",
                                    "/right/x002.safetensors")
    assert _cache_files(keras_home) == ["RegNetX002_imagenet.weights.h5", "manifest.json",
                                        "x002.safetensors"]

    # A cache poisoned by an earlier version (the wrong file kept under the right name) heals:
    # the file is named in a warning, deleted, and fetched again from the (now right) source.
    cache = keras_home / "keras_regnet"
    (cache / "RegNetX002_imagenet.weights.h5").unlink()
    (cache / "manifest.json").unlink()  # earlier versions kept no hashes
    (cache / "downloads" / "x002.safetensors").write_bytes(y002_safetensors)
    with caplog.at_level("WARNING"):
        keras_regnet.RegNetX002(weights="imagenet")
    assert "x002.safetensors is not a timm checkpoint of regnetx002" in caplog.text
    assert str(cache / "downloads" / "x002.safetensors") in caplog.text
    assert (cache / "downloads" / "x002.safetensors").read_bytes() == body


def test_a_read_only_cache_that_holds_the_weights_is_used(server, monkeypatch, keras_home,
                                                          x002_safetensors):
    _, body = x002_safetensors
    server.routes["/w/model.safetensors"] = (body, "ok")
    _register(monkeypatch, "RegNetX002", weight_table.Download(server.url + "/w/model.safetensors", "timm"))
    expected = keras_regnet.RegNetX002(weights="imagenet").get_weights()
    real_access = os.access
    monkeypatch.setattr(os, "access",
                        lambda path, mode: False if mode == os.W_OK else real_access(path, mode))
    loaded = keras_regnet.RegNetX002(weights="imagenet").get_weights()
    assert all(np.array_equal(a, b) for a, b in zip(expected, loaded))
    assert len(server.requests) == 1
