"""The trainer: data, recipe, fault tolerance, distribution, transfer learning."""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import subprocess
import sys
import time

import keras
import numpy as np
import pytest

import keras_regnet
from conftest import (
    TRAIN,
    artifact_top1,
    free_port,
    run_trainer,
    run_trainer_in_process,
    validation_split,
    wait_for_all,
)
from keras_regnet.training import data as data_lib
from keras_regnet.training.config import PipelineConfig, Recipe, TrainConfig
from keras_regnet.training.demo import prepare
from keras_regnet.training.optim import TorchSGD

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The trainer SIGKILLed while writing a given checkpoint (tests/clients/ says how).
KILLED_IN_CHECKPOINT_WRITE = os.path.join(ROOT, "tests", "clients", "train_killed_in_checkpoint_write.py")
SMALL = ["--epochs", "2", "--steps_per_epoch", "6", "--batch_size", "16", "--image_size", "32",
         "--num_classes", "10"]


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory):
    return prepare(str(tmp_path_factory.mktemp("demo")))


def small_config(demo_dir, model_dir, **overrides) -> TrainConfig:
    base = dict(model="RegNetX002", data_dir=demo_dir, model_dir=str(model_dir), strategy="one_device",
                epochs=1, batch_size=16, image_size=32, num_classes=10, steps_per_epoch=4,
                eval_steps=2, checkpoint_every=2)
    return TrainConfig(**(base | overrides))


# --- data ------------------------------------------------------------------------------------

def _write_shards(directory, labels, base):
    from keras_regnet.training.tfrecords import write_arrays

    images = np.random.default_rng(0).integers(0, 255, (len(labels), 40, 48, 3), dtype=np.uint8)
    write_arrays(images, labels, [str(i) for i in range(10)], str(directory), "validation", 2,
                 label_base=base)
    return data_lib.split_files(str(directory), "validation")


@pytest.mark.parametrize("base", [0, 1])
def test_both_label_conventions_read_back_zero_based(tmp_path, base):
    labels = [0, 3, 9, 9, 5, 1]
    files = _write_shards(tmp_path, labels, base)
    offset = data_lib.detect_label_offset(files, num_classes=10)
    assert offset == base
    ds = data_lib.make_dataset(files, PipelineConfig(training=False, batch_size=6, image_size=32,
                                                     label_offset=offset))
    images, read = next(iter(ds))
    assert sorted(read.numpy().tolist()) == sorted(labels)
    assert images.shape == (6, 32, 32, 3) and float(images.numpy().max()) > 1.5  # 0-255, unnormalised


def test_train_pipeline_shapes_and_range(demo_dir):
    files = data_lib.split_files(demo_dir, "train")
    ds = data_lib.make_dataset(files, PipelineConfig(training=True, batch_size=8, image_size=48,
                                                     label_offset=1))
    images, labels = next(iter(ds))
    assert images.shape == (8, 48, 48, 3) and labels.shape == (8,)
    assert 0 <= float(images.numpy().min()) and float(images.numpy().max()) <= 255
    assert set(labels.numpy().tolist()) <= set(range(10))


def test_seeded_epoch_is_reproducible_and_resume_skips_exactly(demo_dir):
    files = data_lib.split_files(demo_dir, "train")

    def batches(seed, skip=0, count=2):
        ds = data_lib.make_dataset(files, PipelineConfig(training=True, batch_size=8, image_size=32,
                                                         label_offset=1, seed=seed, skip_batches=skip))
        return [(x.numpy(), y.numpy()) for x, y in ds.take(count)]

    first, again, other = batches(3), batches(3), batches(4)
    for (x, y), (x2, y2) in zip(first, again):
        np.testing.assert_array_equal(x, x2)
        np.testing.assert_array_equal(y, y2)
    assert not np.array_equal(first[0][0], other[0][0])
    resumed = batches(3, skip=1, count=1)[0]
    np.testing.assert_array_equal(resumed[0], first[1][0])
    np.testing.assert_array_equal(resumed[1], first[1][1])


@pytest.mark.slow
def test_make_tfrecords_round_trip(tmp_path):
    import tensorflow as tf

    rng = np.random.default_rng(0)
    root = tmp_path / "images"
    for cls in ("cat", "dog"):
        (root / "train" / cls).mkdir(parents=True)
        for i in range(3):
            pixels = rng.integers(0, 255, (20, 30, 3), dtype=np.uint8)
            if i == 0:  # PNG must be re-encoded as RGB JPEG
                (root / "train" / cls / f"{i}.png").write_bytes(tf.io.encode_png(pixels).numpy())
            else:
                (root / "train" / cls / f"{i}.jpg").write_bytes(tf.io.encode_jpeg(pixels).numpy())
    (root / "val").mkdir()
    grey = rng.integers(0, 255, (9, 9, 1), dtype=np.uint8)
    (root / "val" / "a.jpg").write_bytes(tf.io.encode_jpeg(grey).numpy())
    (root / "val_labels.txt").write_text("a.jpg dog\n")
    out = tmp_path / "records"
    result = subprocess.run(
        [sys.executable, os.path.join(ROOT, "training", "make_tfrecords.py"),
         f"--train_dir={root / 'train'}", f"--validation_dir={root / 'val'}",
         f"--validation_labels={root / 'val_labels.txt'}", f"--output_dir={out}",
         "--train_shards=2", "--validation_shards=1"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    # Its output is not a terminal here: every progress report is a line of its own.
    progress = [line for line in result.stderr.splitlines() if " images" in line]
    assert progress and all(re.fullmatch(r"(train|validation): \d+/\d+ images", p) for p in progress)
    assert sorted(os.listdir(out)) == ["labels.txt", "record_counts.json", "train-00000-of-00002",
                                       "train-00001-of-00002", "validation-00000-of-00001"]
    # The split sizes are stored with the shards: the trainer need not count the records.
    assert json.loads((out / "record_counts.json").read_text()) == {"train": 6, "validation": 1}
    records = [tf.io.parse_single_example(r, {
        "image/encoded": tf.io.FixedLenFeature([], tf.string),
        "image/class/label": tf.io.FixedLenFeature([], tf.int64),
        "image/class/synset": tf.io.FixedLenFeature([], tf.string)})
        for r in tf.data.TFRecordDataset(data_lib.split_files(str(out), "train"))]
    read = sorted((int(r["image/class/label"]), r["image/class/synset"].numpy().decode()) for r in records)
    assert read == [(1, "cat")] * 3 + [(2, "dog")] * 3
    for r in records:
        assert r["image/encoded"].numpy()[:3] == b"\xff\xd8\xff"  # all JPEG now
        assert tf.io.decode_jpeg(r["image/encoded"]).shape == (20, 30, 3)
    val = next(iter(tf.data.TFRecordDataset(data_lib.split_files(str(out), "validation"))))
    label = tf.io.parse_single_example(val, {"image/class/label": tf.io.FixedLenFeature([], tf.int64)})
    assert int(label["image/class/label"]) == 2


@pytest.mark.slow
def test_corrupt_shard_error_names_the_file(demo_dir, tmp_path):
    import shutil

    from keras_regnet.training.loop import run

    data = tmp_path / "data"
    shutil.copytree(demo_dir, data)
    bad = data_lib.split_files(str(data), "train")[1]
    raw = bytearray(open(bad, "rb").read())
    raw[200:260] = b"\x00" * 60
    open(bad, "wb").write(bytes(raw))
    with pytest.raises(ValueError, match=f"Corrupt or truncated training shard {bad}"):
        run(small_config(str(data), tmp_path / "run", steps_per_epoch=40), verbose=False)


# --- recipe ----------------------------------------------------------------------------------

def test_a_design_reference_names_what_is_wrong(tmp_path, tiny_design):
    assert TrainConfig(design=tiny_design).design_spec().depths == (1, 1, 1, 1)
    assert TrainConfig(design=f"{tiny_design}:1").run_name == "tiny-1"
    with pytest.raises(ValueError, match="is not a file"):
        TrainConfig(design=str(tmp_path / "missing.jsonl"))
    with pytest.raises(ValueError, match=r"holds 1 records; choose one of 1\.\.1"):
        TrainConfig(design=f"{tiny_design}:2")
    (tmp_path / "bad.jsonl").write_text('{"depths": [1, 1], "widths": [24]}\n')
    with pytest.raises(ValueError, match="record 1 is not a design-space point"):
        TrainConfig(design=str(tmp_path / "bad.jsonl"))


@pytest.mark.slow
def test_a_design_run_exports_from_its_directory(demo_dir, tiny_design, tmp_path):
    """``--design`` trains the record's network; its model.json records the design, so that
    ``keras-regnet export --weights RUN_DIR`` rebuilds that network, not ``--model``'s."""
    from keras_regnet.deployable import load_deployable
    from keras_regnet.training.loop import run

    config = small_config(demo_dir, tmp_path, steps_per_epoch=1, design=tiny_design)
    run(config, verbose=False, export=False)
    assert json.load(open(tmp_path / "model.json"))["design"]["depths"] == [1, 1, 1, 1]
    deployable = load_deployable(str(tmp_path))
    trained = keras_regnet.RegNet(config.design_spec(), weights=str(tmp_path / "final.weights.h5"),
                                  classes=10, input_shape=(None, None, 3))
    x = np.random.default_rng(0).uniform(0, 255, (2, 32, 32, 3)).astype("float32")
    np.testing.assert_allclose(deployable.model(x), trained(x), atol=1e-6)
    assert len(deployable.model.layers) == len(trained.layers) < 100  # 4 blocks; RegNetX002 has 13


def test_learning_rate_schedule_is_pycls():
    r = Recipe()
    assert r.learning_rate(0, 100, 1024) == pytest.approx(0.8 * 0.1)  # warmup factor 0.1 at epoch 0
    assert r.learning_rate(5, 100, 1024) == pytest.approx(0.4 * (1 + np.cos(np.pi * 5 / 100)))
    assert r.learning_rate(50, 100, 512) == pytest.approx(0.2)
    warm = 0.1 * 0.6 + 0.4  # epoch 2 of 5: factor rises linearly from 0.1 to 1
    assert r.learning_rate(2, 100, 128) == pytest.approx(0.05 * (1 + np.cos(np.pi * 0.02)) * warm)


def test_l2_weight_decay_matches_hand_computed_nesterov_steps():
    """Two steps with different learning rates, against PyTorch's SGD formulas written out."""
    import tensorflow as tf

    wd, momentum = 0.1, 0.9
    w0 = np.array([1.0, -2.0, 0.5], "float32")
    x = np.array([0.3, -1.0, 2.0], "float32")
    var = keras.Variable(w0)
    opt = TorchSGD(learning_rate=0.5, momentum=momentum, nesterov=True)
    opt.build([var])
    expected_w, buf = w0.astype("float64"), np.zeros(3)
    for lr in (0.5, 0.2):
        opt.learning_rate = lr
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(var * x) ** 2 + 0.5 * wd * tf.reduce_sum(var * var)
        opt.apply_gradients([(tape.gradient(loss, var), var)])
        grad = 2 * np.dot(expected_w, x) * x + wd * expected_w  # L2 enters the gradient
        buf = momentum * buf + grad
        expected_w = expected_w - lr * (grad + momentum * buf)
    np.testing.assert_allclose(var.numpy(), expected_w, rtol=1e-5)


# --- the loop, in process ------------------------------------------------------------------------

def test_overrides_reach_the_recipe_and_bad_values_are_refused():
    tuned = TrainConfig(batch_size=256, learning_rate=0.3, weight_decay=1e-4).tuned(Recipe())
    assert tuned.learning_rate(50, 100, 256) == pytest.approx(0.15)  # half of the peak mid-way
    assert tuned.weight_decay == 1e-4
    assert TrainConfig().tuned(Recipe()) == Recipe()
    with pytest.raises(ValueError, match="--learning_rate must be positive"):
        TrainConfig(learning_rate=0.0)
    with pytest.raises(ValueError, match="--weight_decay must be >= 0"):
        TrainConfig(weight_decay=-1.0)


def _scalars(model_dir, tag):
    import glob

    import tensorflow as tf

    values = {}
    for path in glob.glob(os.path.join(model_dir, "logs", "*")):
        for record in tf.data.TFRecordDataset(path):
            event = tf.compat.v1.Event.FromString(record.numpy())
            for value in event.summary.value:
                if value.tag == tag:
                    values[event.step] = float(tf.make_ndarray(value.tensor))
    return [values[k] for k in sorted(values)]


@pytest.mark.slow
def test_logged_loss_is_cross_entropy_and_l2_is_logged_apart(demo_dir, tiny_design, tmp_path):
    from keras_regnet.training.loop import run

    for decay in (1e-3, 2e-3):  # same seed: identical first step, only the L2 weight differs
        run(small_config(demo_dir, tmp_path / str(decay), steps_per_epoch=1, learning_rate=0.02,
                         weight_decay=decay, design=tiny_design), verbose=False, export=False)
    first, second = (tmp_path / str(d) for d in (1e-3, 2e-3))
    assert _scalars(first, "train/loss") == pytest.approx(_scalars(second, "train/loss"), rel=1e-6)
    assert _scalars(first, "train/loss")[0] == pytest.approx(np.log(10), abs=0.5)
    penalty = _scalars(first, "train/l2_penalty")[0]
    assert penalty > 0 and _scalars(second, "train/l2_penalty")[0] == pytest.approx(2 * penalty)
    assert _scalars(first, "train/learning_rate") == pytest.approx([0.02 * 0.1])  # warmup epoch 0


@pytest.mark.slow
def test_non_finite_loss_stops_naming_the_step(demo_dir, tiny_design, tmp_path):
    from keras_regnet.training.loop import NonFiniteLossError, run

    with pytest.raises(NonFiniteLossError, match=r"at step \d+ \(epoch 1\)"):
        run(small_config(demo_dir, tmp_path, steps_per_epoch=20, design=tiny_design),
            recipe=Recipe(base_lr_per_128=1e12, warmup_epochs=0), verbose=False)


@pytest.mark.slow
def test_transfer_learning_keeps_frozen_weights(demo_dir, tmp_path):
    from keras_regnet.training.loop import run

    pretrained = keras_regnet.RegNetX002(weights=None)
    path = tmp_path / "pre.weights.h5"
    pretrained.save_weights(path)
    config = small_config(demo_dir, tmp_path / "run", init_weights=str(path), num_classes=10,
                          freeze_stages=5)
    run(config, verbose=False)
    tuned = keras_regnet.RegNetX002(weights=None, classes=10, classifier_activation=None)
    tuned.load_weights(tmp_path / "run" / "final.weights.h5")
    for layer in tuned.layers:
        if layer.name.startswith(("stem_", "s1_", "s2_", "s3_", "s4_")):
            for a, b in zip(layer.get_weights(), pretrained.get_layer(layer.name).get_weights()):
                np.testing.assert_array_equal(a, b)  # BN statistics included
    head = tuned.get_layer("predictions").get_weights()[0]
    assert head.shape == (368, 10)
    metrics = json.load(open(tmp_path / "run" / "metrics.json"))
    assert metrics["steps"] == 4 and set(metrics) >= {"val_top1", "val_top5", "epochs", "images_per_sec"}
    assert os.path.exists(tmp_path / "run" / "export" / "1" / "saved_model.pb")


# --- subprocesses: CPU replicas, kill -9, multi-worker ------------------------------------------

def _served_top1(export_dir: str, data_dir: str) -> tuple[int, int]:
    """(correct, total) of the exported model's serving_bytes signature on the validation JPEGs."""
    import tensorflow as tf

    serve = tf.saved_model.load(export_dir).signatures["serving_bytes"]
    records = tf.data.TFRecordDataset(data_lib.split_files(data_dir, "validation"))
    correct = total = 0
    for batch in records.map(lambda r: data_lib.parse_example(r, label_offset=1)).batch(50):
        jpegs, labels = batch
        predicted = serve(image_bytes=jpegs)["classes"][:, 0].numpy()
        correct += int(np.sum(predicted == labels.numpy()))
        total += len(labels)
    return correct, total


@pytest.mark.slow
def test_the_export_scores_what_the_trainer_reported_on_non_square_images(tiny_design, tmp_path, capsys):
    """One eval transform: on 40x52 JPEGs (not square, larger than the 32 crop, so the eval
    transform resizes and crops for real) the served model gets exactly the trainer's answers.
    360 validation images at batch 64: the last batch is uneven."""
    data_dir = prepare(str(tmp_path / "data"), size=(40, 52))
    result = run_trainer_in_process(capsys, "--strategy", "one_device", f"--design={tiny_design}",
                                    f"--data_dir={data_dir}", f"--model_dir={tmp_path / 'run'}",
                                    "--epochs", "1", "--steps_per_epoch", "4", "--batch_size", "64",
                                    "--image_size", "32", "--num_classes", "10", "--crop_area_min", "0.35",
                                    "--noflip", "--export_formats", "saved_model,onnx,litert_int8")
    assert result.returncode in (0, None), result.stderr[-3000:]
    metrics = json.load(open(tmp_path / "run" / "metrics.json"))
    correct, total = _served_top1(str(tmp_path / "run" / "export" / "1"), data_dir)
    assert total == 360 and 100 * correct / total == metrics["val_top1"]
    # --export_formats: the ONNX file scores exactly the same; the int8 LiteRT file runs (its
    # accuracy on a trained model: test_int8_accuracy.py).
    images, labels = validation_split(data_dir)
    written = tmp_path / "run" / "export"
    assert artifact_top1(str(written / "tiny-1.onnx"), images, labels) == metrics["val_top1"]
    assert 0 <= artifact_top1(str(written / "tiny-1_int8.tflite"), images, labels) <= 100


@pytest.mark.slow
@pytest.mark.parametrize("replicas", [1, 2, 3])
def test_resume_after_kill_ends_where_an_uninterrupted_run_ends(demo_dir, tiny_design, tmp_path, replicas,
                                                                capsys, caplog):
    """Killed (SIGKILL, its own process) and resumed, a run ends bit-identical to the
    uninterrupted one; both of those run in this process, on the first N of its logical CPUs."""
    strategy = ["--strategy", "one_device"] if replicas == 1 else \
        ["--strategy", "mirrored", "--cpu_replicas", str(replicas)]
    batch = str(8 * replicas if replicas > 2 else 16)  # splits over the replicas

    def arguments(model_dir):
        return [*strategy, f"--design={tiny_design}", f"--data_dir={demo_dir}", f"--model_dir={model_dir}",
                "--epochs", "2", "--steps_per_epoch", "10", "--batch_size", batch, "--image_size",
                "32", "--num_classes", "10", "--checkpoint_every", "4", "--eval_steps", "1", "--noexport"]

    uninterrupted = run_trainer_in_process(capsys, *arguments(tmp_path / "whole"))
    assert uninterrupted.returncode in (0, None), uninterrupted.stderr[-3000:]
    tmp_path = tmp_path / "killed"
    args = arguments(tmp_path)
    checkpoints = tmp_path / "checkpoints"
    if replicas > 1:
        # Killed in the middle of writing checkpoint 12 (mid-epoch: data written, not merged).
        killed = subprocess.run([sys.executable, KILLED_IN_CHECKPOINT_WRITE, "12", *args],
                                capture_output=True, text=True, timeout=300)
        assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
        assert (checkpoints / "ckpt-12_temp").is_dir() and not (checkpoints / "ckpt-12.index").exists()
    else:  # killed between checkpoints, wherever the step happens to be
        proc = subprocess.Popen([sys.executable, TRAIN, *args], stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        deadline = time.time() + 240
        while time.time() < deadline and proc.poll() is None:
            written = [int(m.group(1)) for f in (os.listdir(checkpoints) if checkpoints.exists() else [])
                       if (m := re.fullmatch(r"ckpt-(\d+)\.index", f))]
            # Once checkpoint 8 is written, checkpoint 4 is registered in the manager's state
            # file (an index file alone may not be yet); 12 steps remain to kill in.
            if written and max(written) >= 8:
                break
            time.sleep(0.2)
        assert proc.poll() is None, "training ended before it could be killed"
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert not (tmp_path / "metrics.json").exists()

    with caplog.at_level(logging.INFO, logger="keras_regnet"):
        result = run_trainer_in_process(capsys, *args)
    assert result.returncode in (0, None), result.stderr[-3000:]
    assert "resumed from" in caplog.text
    metrics = json.load(open(tmp_path / "metrics.json"))
    assert metrics["steps"] == 20 and 0 < metrics["steps_this_run"] < 20
    # Seeded init, data order and augmentation, restored optimizer state: the same weights.
    _assert_same_arrays(_h5_arrays(tmp_path / "final.weights.h5"),
                        _h5_arrays(tmp_path.parent / "whole" / "final.weights.h5"))


def _run_workers(command: list[str], workers: int = 2, timeout: int = 400,
                 wait: bool = True) -> list[subprocess.Popen] | list[str]:
    """Starts ``command`` as each worker of a local cluster (TF_CONFIG); with ``wait``, waits
    for all and returns their outputs (failing on a non-zero exit), else returns the processes."""
    addresses = [f"127.0.0.1:{free_port()}" for _ in range(workers)]
    procs = []
    for index in range(workers):
        tf_config = json.dumps({"cluster": {"worker": addresses}, "task": {"type": "worker", "index": index}})
        procs.append(subprocess.Popen([sys.executable, *command], stdout=subprocess.PIPE,
                                      stderr=subprocess.STDOUT, text=True,
                                      env=dict(os.environ, TF_CONFIG=tf_config)))
    return wait_for_all(procs, timeout) if wait else procs


def _h5_arrays(path) -> dict[str, np.ndarray]:
    import h5py

    out = {}
    with h5py.File(path, "r") as f:
        f.visititems(lambda name, obj: out.__setitem__(name, obj[()])
                     if isinstance(obj, h5py.Dataset) else None)
    return out


def _assert_same_arrays(a: dict, b: dict) -> None:
    assert a.keys() == b.keys() and len(a) > 50  # the tiny design holds 87 arrays
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)  # bit for bit


@pytest.mark.slow
def test_multi_worker_two_workers_agree_and_resume_exactly_after_a_kill_mid_checkpoint(demo_dir, tiny_design,
                                                                                    tmp_path):
    """Two local workers end with identical weights; the chief SIGKILLed while writing
    checkpoint 8 (its data written, not yet merged), the other worker finishing it, then both
    restarted: they agree to resume from step 6 and end bit-identical to the uninterrupted run."""
    flags = [f"--data_dir={demo_dir}", f"--design={tiny_design}", "--strategy", "multi_worker", *SMALL,
             "--checkpoint_every", "2", "--noexport"]
    whole = tmp_path / "whole"
    _run_workers([TRAIN, f"--model_dir={whole}", *flags])
    _assert_same_arrays(_h5_arrays(whole / "final.weights.h5"),
                        _h5_arrays(whole / ".worker-1" / "final.weights.h5"))
    metrics = json.load(open(whole / "metrics.json"))
    assert metrics["steps"] == 12
    # The two workers' evaluation counted every validation record once: the same top-1 as the
    # final model evaluated on one device.
    model = keras_regnet.RegNet(TrainConfig(design=tiny_design).design_spec(),
                                weights=str(whole / "final.weights.h5"), classes=10,
                                classifier_activation=None, input_shape=(None, None, 3))
    assert metrics["val_top1"] == pytest.approx(_one_device_top1(model, demo_dir), abs=1e-9)

    killed = tmp_path / "killed"
    chief, other = _run_workers([KILLED_IN_CHECKPOINT_WRITE, "8", f"--model_dir={killed}", *flags],
                                wait=False)
    try:
        chief.wait(timeout=400)
        assert chief.returncode == -signal.SIGKILL, chief.communicate()[0][-2000:]
        # The other worker finishes checkpoint 8, then waits for the dead chief in step 9.
        deadline = time.time() + 60
        while not (killed / ".worker-1" / "checkpoints" / "ckpt-8.index").exists() and time.time() < deadline:
            time.sleep(0.2)
    finally:
        other.kill()
        other.wait()
    checkpoints = killed / "checkpoints"
    assert (checkpoints / "ckpt-8_temp").is_dir() and not (checkpoints / "ckpt-8.index").exists()
    assert (killed / ".worker-1" / "checkpoints" / "ckpt-8.index").exists()
    outputs = _run_workers([TRAIN, f"--model_dir={killed}", *flags])
    assert "resuming from it" in outputs[1] and "resumed from" in outputs[0]
    assert not (checkpoints / "ckpt-8_temp").exists()  # the interrupted write was cleaned up
    resumed = json.load(open(killed / "metrics.json"))
    assert resumed["steps"] == 12 and resumed["steps_this_run"] == 6
    _assert_same_arrays(_h5_arrays(killed / "final.weights.h5"), _h5_arrays(whole / "final.weights.h5"))


def _one_device_top1(model, data_dir: str, files: list[str] | None = None) -> float:
    pipeline = TrainConfig(model="RegNetX002", data_dir=data_dir, image_size=32,
                           num_classes=10).pipeline(False, 64, label_offset=1)
    hits = total = 0
    for x, y in data_lib.make_dataset(files or data_lib.split_files(data_dir, "validation"), pipeline):
        hits += int(np.sum(np.argmax(model(x, training=False), -1) == y.numpy()))
        total += len(y)
    return 100 * hits / total


EVAL_ON_WORKERS = """
import dataclasses, json, sys
from keras_regnet.training import data as data_lib, loop
from keras_regnet.training.config import TrainConfig

root, sizes, design = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3]
config = TrainConfig(design=design, data_dir=f"{root}/data{sizes[0]}", model_dir=f"{root}/run",
                     strategy="multi_worker", epochs=1, batch_size=8, image_size=32, num_classes=10)
session = loop.setup(config, config.tuned(loop.get_recipe("pycls")))
if session.chief:
    session.model.save_weights(f"{root}/evaluated.weights.h5")
top1 = {}
for size in sizes:
    files = data_lib.split_files(f"{root}/data{size}", "validation")
    top1[size] = loop.evaluate(dataclasses.replace(session, val_files=files))[0]
print(json.dumps(top1))
"""


@pytest.mark.slow
def test_evaluation_on_two_workers_counts_every_record_once(tiny_design, tmp_path):
    """Records are sharded over the workers one by one, 4 per worker and batch: 9, 10 and 11
    records leave the second worker 0, 1 and 1 (= N-1) in the last batch, the first 1, 1, 2."""
    from keras_regnet.training.demo import digit_images
    from keras_regnet.training.tfrecords import write_arrays

    images, labels = digit_images(32)["validation"]
    sizes = [9, 10, 11]
    names = [str(i) for i in range(10)]
    for size in sizes:
        write_arrays(images[:16], labels[:16], names, str(tmp_path / f"data{size}"), "train", 1)
        write_arrays(images[:size], labels[:size], names, str(tmp_path / f"data{size}"), "validation", 2)
    outputs = _run_workers(["-c", EVAL_ON_WORKERS, str(tmp_path), json.dumps(sizes), tiny_design])
    model = keras_regnet.RegNet(TrainConfig(design=tiny_design).design_spec(),
                                weights=str(tmp_path / "evaluated.weights.h5"), classes=10,
                                classifier_activation=None, input_shape=(None, None, 3))
    for output in outputs:
        # A worker's own line (gRPC may log after it when the other worker has gone).
        top1 = json.loads(next(line for line in output.splitlines() if line.startswith('{"')))
        for size in sizes:
            expected = _one_device_top1(model, str(tmp_path / f"data{size}"))
            assert top1[str(size)] == pytest.approx(expected, abs=1e-9), (size, top1)


@pytest.mark.slow
def test_modern_recipe_and_bfloat16_train(demo_dir, tiny_design, tmp_path):
    from keras_regnet.training.config import recipe
    from keras_regnet.training.loop import augment_batches, run

    modern = recipe("modern")
    files = data_lib.split_files(demo_dir, "train")
    pipeline = PipelineConfig(training=True, batch_size=8, image_size=32, label_offset=1)
    ds = augment_batches(data_lib.make_dataset(files, pipeline), modern, 10)
    images, labels = next(iter(ds))
    assert labels.shape == (8, 10) and np.allclose(labels.numpy().sum(1), 1.0, atol=1e-5)
    assert not np.all(labels.numpy().max(1) == 1.0)  # mixed, not one-hot
    metrics = run(small_config(demo_dir, tmp_path, precision="mixed_bfloat16", design=tiny_design),
                  recipe=modern, verbose=False, export=False)
    assert metrics["steps"] == 4 and np.isfinite(metrics["val_top1"])


@pytest.mark.slow
def test_mixed_float16_trains_with_loss_scaling(demo_dir, tiny_design, tmp_path):
    from keras_regnet.training.loop import run

    config = small_config(demo_dir, tmp_path, precision="mixed_float16", design=tiny_design)
    metrics = run(config, verbose=False, export=False)
    assert metrics["steps"] == 4 and np.isfinite(metrics["val_top1"])
    weights = keras_regnet.RegNet(config.design_spec(), weights=None, classes=10, classifier_activation=None)
    weights.load_weights(tmp_path / "final.weights.h5")  # float32 master weights, all finite
    assert all(w.dtype == np.float32 and np.isfinite(w).all() for w in weights.get_weights())


def test_input_pipeline_benchmark_reports_a_rate(demo_dir, tmp_path, capsys):
    from keras_regnet.training.benchmark import benchmark_input

    rate = benchmark_input(small_config(demo_dir, tmp_path), batches=5, warmup=1)
    assert rate > 0 and "images/s" in capsys.readouterr().out


@pytest.mark.slow
def test_tfds_imagenet2012_reader_trains_with_zero_based_labels(tiny_design, tmp_path):
    """The TFDS path, on tensorflow-datasets' own mock of imagenet2012 (random JPEGs)."""
    import tensorflow_datasets as tfds

    from keras_regnet.training.loop import run

    with tfds.testing.mock_data(num_examples=16, policy=tfds.testing.MockPolicy.USE_CODE):
        ds = data_lib.make_tfds_dataset("imagenet2012", str(tmp_path / "tfds"), "train",
                                        PipelineConfig(training=True, batch_size=4, image_size=32))
        images, labels = next(iter(ds))
        assert images.shape == (4, 32, 32, 3) and labels.dtype.name == "int32"
        assert 0 <= int(labels.numpy().min()) and int(labels.numpy().max()) < 1000
        config = TrainConfig(design=tiny_design, data_dir=str(tmp_path / "tfds"), tfds_name="imagenet2012",
                             model_dir=str(tmp_path / "run"), strategy="one_device", epochs=1,
                             batch_size=4, image_size=32, num_classes=1000, steps_per_epoch=2,
                             eval_steps=1)
        metrics = run(config, verbose=False, export=False)
    assert metrics["steps"] == 2 and 0 <= metrics["val_top1"] <= 100


def test_init_weights_with_imagenet_classes_keeps_the_pretrained_head(tmp_path):
    from keras_regnet.training.loop import build_model

    pretrained = keras_regnet.RegNetX002(weights=None)
    path = tmp_path / "pre.weights.h5"
    pretrained.save_weights(path)
    model = build_model(TrainConfig(model="RegNetX002", init_weights=str(path), num_classes=1000))
    for name in ("predictions", "s4_b7_conv3", "stem_bn"):
        for a, b in zip(model.get_layer(name).get_weights(), pretrained.get_layer(name).get_weights()):
            np.testing.assert_array_equal(a, b)


# --- the command line and the record count -----------------------------------------------------

def test_every_trainconfig_field_is_a_flag_with_the_librarys_choices():
    import dataclasses

    from absl import flags

    from keras_regnet.training import config as config_lib
    from keras_regnet.training.main import define_flags

    define_flags()
    for field in dataclasses.fields(TrainConfig):
        flag = flags.FLAGS[field.name]
        assert flag.value is None and field.metadata["help"] in flag.help
    assert list(flags.FLAGS["strategy"].parser.enum_values) == list(config_lib.STRATEGIES)
    assert list(flags.FLAGS["precision"].parser.enum_values) == list(config_lib.PRECISIONS)
    assert list(flags.FLAGS["recipe"].parser.enum_values) == list(config_lib.RECIPES)


@pytest.mark.parametrize("asked", ["--help", "-h", "--helpfull"])
def test_train_help_says_what_the_demo_runs(capsys, asked):
    from keras_regnet.training.config import DEMO_DEFAULTS

    result = run_trainer_in_process(capsys, asked)
    assert result.returncode == 0, result.stderr  # help asked for and given
    for name, value in DEMO_DEFAULTS.items():
        assert f"--{name}" in result.stdout or f"--[no]{name}" in result.stdout
        assert f"demo {value!r}" in " ".join(result.stdout.split())


@pytest.mark.parametrize("args, model_dir", [(["--model_dir", "-h"], "-h"), (["--", "-h"], None)])
def test_a_dash_h_as_a_value_or_after_the_options_is_not_help(capsys, monkeypatch, args, model_dir):
    """``-h`` means ``--help`` only where it stands as an option: ``--model_dir -h`` names a
    directory (absl's ``--flag value`` form), and after ``--`` it is a positional argument."""
    from keras_regnet.training import main as main_lib

    trained = []
    monkeypatch.setattr(main_lib, "_train",
                        lambda: trained.append(main_lib.config_from_flags().model_dir) or 0)
    result = run_trainer_in_process(capsys, *args)
    if model_dir is None:
        assert result.returncode == 2 and "unexpected arguments ['-h']" in result.stderr, result
    else:
        assert result.returncode == 0 and trained == [model_dir], (result, trained)


def test_steps_per_epoch_come_from_the_stored_record_count(demo_dir, tmp_path):
    import shutil

    from keras_regnet.training.loop import steps_per_epoch

    files = data_lib.split_files(demo_dir, "train")
    assert json.load(open(os.path.join(demo_dir, "record_counts.json")))["train"] == 1437
    assert steps_per_epoch(TrainConfig(data_dir=demo_dir, batch_size=100), files) == 14
    assert steps_per_epoch(TrainConfig(data_dir=demo_dir, batch_size=100, train_records=250), files) == 2
    # Without the counts file the records are counted (here: 1,437 of them).
    copy = tmp_path / "copy"
    shutil.copytree(demo_dir, copy)
    os.remove(copy / "record_counts.json")
    files = data_lib.split_files(str(copy), "train")
    assert steps_per_epoch(TrainConfig(data_dir=str(copy), batch_size=100), files) == 14
    with pytest.raises(ValueError, match="larger than the 1437 training images"):
        steps_per_epoch(TrainConfig(data_dir=str(copy), batch_size=2000), files)


def test_keras_regnet_train_runs_the_trainer(demo_dir, tiny_design, tmp_path):
    """``keras-regnet train`` hands its flags to the trainer (the console script's fresh
    process: test_cli.py)."""
    from absl import flags

    from keras_regnet import cli

    flags.FLAGS.unparse_flags()
    try:
        with pytest.raises(SystemExit) as exited:
            cli.main(["train", "--strategy", "one_device", f"--design={tiny_design}",
                      f"--data_dir={demo_dir}", f"--model_dir={tmp_path}", "--epochs", "1",
                      "--batch_size", "512", "--image_size", "32", "--num_classes", "10", "--eval_steps", "1",
                      "--noexport"])
    finally:
        flags.FLAGS.unparse_flags()
    assert exited.value.code in (0, None)
    metrics = json.load(open(tmp_path / "metrics.json"))
    assert metrics["steps"] == 1437 // 512  # one pass over the stored record count


def _evaluate_on_replicas(replicas: int, root: str, design: str) -> dict[int, dict]:
    """The trainer's evaluation on ``replicas`` mirrored CPU replicas (this process holds
    three logical CPUs: conftest) against the same model on one device, for validation sizes
    whose last global batch leaves the last replica 0, 1 and N-1 examples."""
    import dataclasses

    from keras_regnet.training import loop
    from keras_regnet.training.demo import digit_images
    from keras_regnet.training.tfrecords import write_arrays

    per_replica = 4
    images, labels = digit_images(32)["validation"]
    names = [str(i) for i in range(10)]
    sizes = sorted({per_replica * (2 * replicas - 1) + extra for extra in (0, 1, replicas - 1)})
    for size in sizes:
        write_arrays(images[:size], labels[:size], names, f"{root}/data{size}", "validation", 2)
    write_arrays(images[:16], labels[:16], names, f"{root}/data{sizes[0]}", "train", 1)
    config = TrainConfig(design=design, data_dir=f"{root}/data{sizes[0]}", model_dir=f"{root}/run",
                         strategy="mirrored", cpu_replicas=replicas, epochs=1,
                         batch_size=per_replica * replicas, image_size=32, num_classes=10)
    session = loop.setup(config, config.tuned(loop.get_recipe("pycls")))
    assert session.strategy.num_replicas_in_sync == replicas
    out = {}
    for size in sizes:
        files = data_lib.split_files(f"{root}/data{size}", "validation")
        top1, _ = loop.evaluate(dataclasses.replace(session, val_files=files))
        # The same model over the same records on one device, batch by batch.
        pipeline = config.pipeline(False, 16, label_offset=session.label_offset)
        hits = total = 0
        for x, y in data_lib.make_dataset(files, pipeline):
            hits += int(np.sum(np.argmax(session.model(x, training=False), -1) == y.numpy()))
            total += len(y)
        out[size] = {"top1": top1, "expected": 100 * hits / total, "records": total}
    return out


@pytest.mark.slow
@pytest.mark.parametrize("replicas", [1, 2, 3])
def test_evaluation_counts_every_record_once_whatever_the_last_replica_gets(tiny_design, tmp_path, replicas):
    """The last global batch can leave a replica 0, 1 or N-1 examples (0 once crashed the
    trainer at its epoch-end evaluation): every record is counted once, as on one device."""
    out = _evaluate_on_replicas(replicas, str(tmp_path), tiny_design)
    assert len(out) >= 2
    for size, r in out.items():
        assert r["records"] == size
        assert r["top1"] == pytest.approx(r["expected"], abs=1e-9), (size, r)


@pytest.mark.slow
def test_digits_accuracy_floor_that_every_earlier_trainer_met(demo_dir, tmp_path):
    """The digits TFRecords with the library's default augmentation (Inception crops from 8% of
    the area, flips), 15 epochs at batch 64 on 2 replicas: every trainer since the first one
    (2026-11-26) ended at 74-76% validation top-1 on a 2-core AMD EPYC (docs/training.md).
    The same run's console, its export (served answers equal the trainer's) and a second export
    of its directory from the CLI are checked too (int8 accuracy: test_int8_accuracy.py, on
    the demo's 40-epoch model and a fine-tune of it)."""
    result = run_trainer(["--strategy", "mirrored", "--cpu_replicas", "2", f"--data_dir={demo_dir}",
                          f"--model_dir={tmp_path / 'run'}", "--num_classes", "10", "--model", "RegNetX002",
                          "--image_size", "32", "--epochs", "15", "--batch_size", "64"], timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "with 2 replicas" in result.stderr
    metrics = json.load(open(tmp_path / "run" / "metrics.json"))
    assert metrics["steps"] == 15 * (1437 // 64) and metrics["val_top1"] >= 70.0
    # Not a terminal: one line per epoch ("epoch 3/15: 22/22 steps, lr ..., loss 2.1, N images/s").
    losses = [float(m.group(1)) for m in re.finditer(r"^epoch \d+/15: 22/22 steps, lr [\d.]+, loss ([\d.]+), "
                                                     r"[\d.]+ images/s$", result.stdout, re.M)]
    assert len(losses) == 15
    # The shown loss is pycls's cross-entropy (no L2 term): about ln(10) while the head is fresh.
    assert abs(losses[0] - np.log(10)) < 0.5 and np.mean(losses[-2:]) < losses[0], losses
    # One eval transform: the served model gets exactly the trainer's answers, image for image.
    correct, total = _served_top1(str(tmp_path / "run" / "export" / "1"), demo_dir)
    assert total == 360 and 100 * correct / total == metrics["val_top1"]
    # The run's directory exports again from the CLI (model, classes, transform, labels from
    # its model.json), and that export serves the same answers with the digits' names.
    from keras_regnet import cli

    assert cli.main(["export", "--weights", str(tmp_path / "run"), "--output", str(tmp_path / "again")]) == 0
    assert _served_top1(str(tmp_path / "again" / "1"), demo_dir) == (correct, total)
    labels = (tmp_path / "again" / "1" / "assets" / "labels.txt").read_text().split()
    assert labels == [str(i) for i in range(10)]
