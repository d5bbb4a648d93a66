"""The training loop: a custom loop over ``strategy.run`` that works for every strategy.

Keras's ``model.fit`` fails under MultiWorkerMirroredStrategy with Keras 3, so training runs a
plain ``tf.function`` step through ``strategy.run``. In parts: :func:`setup` (strategy, data,
model, optimizer from :func:`make_optimizer`, checkpoint), :func:`train_epoch`,
:func:`evaluate` (distributed like training) and :func:`finish` (metrics, weights, export);
:func:`run` strings them together. The loop checkpoints during the epoch and
resumes exactly (same total steps, same data order and crops), stops on a non-finite loss naming the
step, logs to TensorBoard, evaluates top-1/top-5 and exports.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import os
import shutil
import sys
import time
from typing import Any, Callable

import keras
import numpy as np
import tensorflow as tf

from keras_regnet.applications import RegNet
from keras_regnet.files import atomic_path
from keras_regnet.training import data as data_lib
from keras_regnet.training import lock
from keras_regnet.training.config import Recipe, TrainConfig
from keras_regnet.training.config import recipe as get_recipe
from keras_regnet.training.distribute import make_strategy
from keras_regnet.training.errors import NonFiniteLossError  # noqa: F401 (raised here; its old home)
from keras_regnet.training.optim import TorchSGD
from keras_regnet.weight_choice import resolve_weights
from keras_regnet.weights import load_weights, save_keras_weights

log = logging.getLogger(__name__)
METRICS_HISTORY = "metrics_history.jsonl"


def build_model(config: TrainConfig, spec=None) -> keras.Model:
    """The network for training: logits head named like the builders' (``predictions``).

    ``spec`` (a RegNetSpec / AnyNetSpec) replaces ``config.model`` for design-space sweeps.
    """
    weights = resolve_weights(config.init_weights, None if spec else config.model)
    # With ImageNet's classes the pretrained classifier is kept: the whole network is loaded
    # once, after the head is attached; otherwise the backbone loads the weights without it.
    keep_head = weights.pretrained and config.num_classes == 1000
    # Any input size: the same network evaluates and serves at other resolutions.
    backbone = RegNet(spec or config.model, include_top=False,
                      weights=None if keep_head else weights, input_shape=(None, None, 3))
    x = keras.layers.GlobalAveragePooling2D(name="head_pool")(backbone.output)
    logits = keras.layers.Dense(
        config.num_classes, name="predictions", dtype="float32",  # float32 logits always
        kernel_initializer=keras.initializers.RandomNormal(stddev=0.01))(x)
    model = keras.Model(backbone.input, logits, name=backbone.name)
    if keep_head:
        load_weights(model, weights)
    freeze(model, config.freeze_stages)
    return model


def freeze(model: keras.Model, stages: int) -> None:
    """Freezes the stem (``stages >= 1``) and stages 1 .. ``stages - 1``; frozen BN runs in
    inference mode."""
    prefixes = tuple(["stem_"] + [f"s{i}_" for i in range(1, stages)]) if stages else ()
    for layer in model.layers:
        if prefixes and layer.name.startswith(prefixes):
            layer.trainable = False


def steps_per_epoch(config: TrainConfig, files: list[str]) -> int:
    """--steps_per_epoch, else one pass over the training records (their count comes from
    --train_records, the TFDS metadata, the shards' record_counts.json, or counting)."""
    if config.steps_per_epoch:
        return config.steps_per_epoch
    if config.train_records:
        records = config.train_records
    elif config.tfds_name:
        records = data_lib.tfds_split_size(config.tfds_name, config.data_dir, "train")
    else:
        records = data_lib.split_record_count(config.data_dir, "train", files)
    steps = records // config.batch_size
    if steps < 1:
        raise ValueError(f"--batch_size {config.batch_size} is larger than the {records} training images.")
    return steps


@contextlib.contextmanager
def _precision(policy: str):
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy({"fp32": "float32"}.get(policy, policy))
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


def _is_chief(strategy) -> bool:
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.cluster_spec().as_dict():
        return True
    return resolver.task_type in (None, "chief") or (
        resolver.task_type == "worker" and resolver.task_id == 0
        and "chief" not in resolver.cluster_spec().as_dict())


def make_optimizer(recipe: Recipe, precision: str) -> keras.optimizers.Optimizer:
    """The recipe's optimizer (learning rate set per epoch), loss-scaled for float16."""
    ema = dict(use_ema=True, ema_momentum=recipe.ema_decay) if recipe.ema_decay else {}
    if recipe.optimizer == "adamw":
        optimizer = keras.optimizers.AdamW(learning_rate=0.0, weight_decay=recipe.weight_decay, **ema)
    else:
        optimizer = TorchSGD(learning_rate=0.0, momentum=recipe.momentum, nesterov=recipe.nesterov,
                             **ema)
    if precision == "mixed_float16":
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    return optimizer


def set_learning_rate(optimizer, lr: float) -> None:
    (optimizer.inner_optimizer if hasattr(optimizer, "inner_optimizer") else optimizer).learning_rate = lr


@dataclasses.dataclass
class Session:
    """What a run holds while it trains: strategy, model, optimizer, checkpoints, data."""

    config: TrainConfig
    recipe: Recipe
    strategy: tf.distribute.Strategy
    model: keras.Model
    optimizer: keras.optimizers.Optimizer
    step: tf.Variable
    manager: tf.train.CheckpointManager
    train_files: list[str]
    val_files: list[str]
    label_offset: int
    steps_per_epoch: int
    chief: bool
    out_dir: str
    writer: Any = None  # TensorBoard summary writer (chief only)

    def pipeline(self, training: bool, ctx: tf.distribute.InputContext, **changes):
        return self.config.pipeline(
            training, ctx.get_per_replica_batch_size(self.config.batch_size),
            label_offset=self.label_offset, num_shards=ctx.num_input_pipelines,
            shard_index=ctx.input_pipeline_id, **changes)

    def dataset(self, split: str, pipeline) -> tf.data.Dataset:
        """The TFRecord or TFDS pipeline of a split."""
        if self.config.tfds_name:
            return data_lib.make_tfds_dataset(self.config.tfds_name, self.config.data_dir, split, pipeline)
        return data_lib.make_dataset(self.train_files if split == "train" else self.val_files, pipeline)


def setup(config: TrainConfig, recipe: Recipe, spec=None,
          resources: contextlib.ExitStack | None = None) -> Session:
    """Strategy, data files, model, optimizer; restores the latest checkpoint if there is one.

    The run's directory is locked for as long as ``resources`` (the caller's ExitStack) lives:
    a second run into it refuses at once.
    """
    spec = spec or config.design_spec()
    strategy = make_strategy(config.strategy, config.cpu_replicas, config.tpu)
    replicas = strategy.num_replicas_in_sync
    if config.batch_size % replicas:
        nearest = replicas * max(1, config.batch_size // replicas)
        raise ValueError(f"--batch_size {config.batch_size} does not split over {replicas} replicas: "
                         f"use a multiple of {replicas}, e.g. {nearest}.")
    keras.utils.set_random_seed(config.seed)  # same initial weights for the same --seed
    chief = _is_chief(strategy)
    out_dir = config.model_dir if chief else os.path.join(
        config.model_dir, f".worker-{strategy.cluster_resolver.task_id}")
    if resources is not None:
        resources.enter_context(lock.exclusive(out_dir))
        _remove_interrupted_checkpoint_writes(os.path.join(out_dir, "checkpoints"))

    train_files, val_files, offset = data_files(config)

    with _precision(config.precision), strategy.scope():
        model = build_model(config, spec)
        optimizer = make_optimizer(recipe, config.precision)
        optimizer.build(model.trainable_variables)
        step = tf.Variable(0, dtype=tf.int64, trainable=False, name="global_step")
    checkpoint = tf.train.Checkpoint(model=model, optimizer=optimizer, step=step)
    manager = tf.train.CheckpointManager(checkpoint, os.path.join(out_dir, "checkpoints"), max_to_keep=2)
    resume_from = _checkpoint_every_worker_holds(strategy, manager)
    if resume_from:
        checkpoint.restore(resume_from).expect_partial()
        log.info("resumed from %s at step %d", resume_from, int(step.numpy()))
    writer = tf.summary.create_file_writer(os.path.join(out_dir, "logs")) if chief else None
    return Session(config, recipe, strategy, model, optimizer, step, manager, train_files, val_files,
                   offset, steps_per_epoch(config, train_files), chief, out_dir, writer)


def data_files(config: TrainConfig) -> tuple[list[str], list[str], int]:
    """The run's training and validation shards and its label offset (none for TFDS, whose
    labels are 0-based)."""
    if config.tfds_name:
        return [], [], 0
    train_files = data_lib.split_files(config.data_dir, "train")
    val_files = data_lib.split_files(config.data_dir, "validation")
    offset = config.label_offset
    if offset is None:
        offset = data_lib.detect_label_offset(val_files, config.num_classes)
        log.info("label offset detected: %d", offset)
    return train_files, val_files, offset


def _checkpoint_step(path: str) -> int:
    return int(path.rsplit("-", 1)[1])


def _checkpoint_every_worker_holds(strategy, manager: tf.train.CheckpointManager) -> str | None:
    """The checkpoint to resume from: the latest one, or with several workers the latest step
    that every worker holds.

    Each worker saves its own checkpoints, and a worker killed while writing step N (power
    lost, SIGKILL) leaves N unwritten while the others finished it: resuming each from its own
    latest would start the workers at different steps. They agree on the smallest latest step
    (an all-gather before any training step) and each restores that one.
    """
    latest = manager.latest_checkpoint
    workers = strategy.extended._num_workers if hasattr(strategy.extended, "_num_workers") else 1
    if workers <= 1:
        return latest
    own = _checkpoint_step(latest) if latest else 0

    @tf.function
    def gather_latest_steps():
        def replica_fn():
            value = tf.constant([own], tf.int64)
            return tf.distribute.get_replica_context().all_gather(value, axis=0)
        return strategy.run(replica_fn)

    agreed = int(tf.reduce_min(strategy.experimental_local_results(gather_latest_steps())[0]))
    if agreed == own:
        return latest
    if agreed == 0:
        raise RuntimeError(
            f"Another worker has no checkpoint while this one resumes from {latest}: the workers' "
            f"runs do not belong together. Give them a fresh --model_dir.")
    held = {_checkpoint_step(path): path for path in manager.checkpoints}
    if agreed not in held:
        raise RuntimeError(
            f"The workers' latest common checkpoint is step {agreed}, which this worker no longer "
            f"holds in {manager.directory} (it has steps {sorted(held)}); resume is impossible "
            f"without it. Give the run a fresh --model_dir.")
    log.info("another worker's latest checkpoint is step %d: resuming from it, not %s", agreed, latest)
    return held[agreed]


def _remove_interrupted_checkpoint_writes(directory: str) -> None:
    """A run killed while saving leaves TensorFlow's ``ckpt-N_temp`` folder; the next run
    (holding the directory's lock, so no writer is active) removes it."""
    if not os.path.isdir(directory):
        return
    for entry in os.listdir(directory):
        if "_temp" in entry and entry.startswith("ckpt-"):
            log.info("removing %s, left by an interrupted checkpoint write", entry)
            path = os.path.join(directory, entry)
            shutil.rmtree(path, ignore_errors=True) if os.path.isdir(path) else os.remove(path)


def make_train_step(s: Session) -> Callable:
    """One global step as a ``tf.function``: returns (cross-entropy, L2 penalty), summed over
    the replicas."""
    recipe, model, optimizer = s.recipe, s.model, s.optimizer
    global_batch = s.config.batch_size
    l2 = recipe.weight_decay if recipe.optimizer == "sgd" else 0.0
    trainable = model.trainable_variables

    def step_fn(images, labels):
        with tf.GradientTape() as tape:
            logits = model(images, training=True)
            if recipe.soft_labels:
                per_example = keras.losses.categorical_crossentropy(
                    labels, logits, from_logits=True, label_smoothing=recipe.label_smoothing)
            else:
                per_example = keras.losses.sparse_categorical_crossentropy(
                    labels, logits, from_logits=True)
            data_loss = tf.nn.compute_average_loss(per_example, global_batch_size=global_batch)
            penalty = tf.constant(0.0)
            if l2:
                # L2 in the loss gives gradient l2 * w, which then passes through momentum:
                # pycls's weight decay (Keras's weight_decay would be decoupled instead).
                penalty = tf.nn.scale_regularization_loss(
                    0.5 * l2 * tf.add_n([tf.reduce_sum(tf.square(tf.cast(v, tf.float32)))
                                         for v in trainable]))
            total = data_loss + penalty
            scaled = optimizer.scale_loss(total) if hasattr(optimizer, "scale_loss") else total
        grads = tape.gradient(scaled, trainable)
        optimizer.apply_gradients(zip(grads, trainable))
        return tf.stack([data_loss, penalty])

    @tf.function
    def train_step(iterator):
        images, labels = next(iterator)
        losses = s.strategy.run(step_fn, args=(images, labels))
        return s.strategy.reduce("SUM", losses, axis=None)

    return train_step


def train_epoch(s: Session, epoch: int, train_step: Callable, verbose: bool) -> int:
    """Trains one epoch (the rest of it, when resumed); returns the images trained on."""
    config = s.config
    done_in_epoch = int(s.step.numpy()) - epoch * s.steps_per_epoch
    lr = s.recipe.learning_rate(epoch, config.epochs, config.batch_size)
    set_learning_rate(s.optimizer, lr)

    def dataset_fn(ctx):
        # A resumed epoch skips what its steps consumed: each global step took one batch per
        # replica that this input pipeline feeds (per-replica batches, not global ones).
        skip = done_in_epoch * ctx.num_replicas_in_sync // ctx.num_input_pipelines
        pipeline = s.pipeline(True, ctx, seed=config.seed + epoch, skip_batches=skip)
        return augment_batches(s.dataset("train", pipeline), s.recipe, config.num_classes).repeat()

    iterator = iter(s.strategy.distribute_datasets_from_function(dataset_fn))
    show = verbose and s.chief
    # On a terminal, Keras's progress bar; in a log file (CI, nohup), where the bar's rewritten
    # line reads as one step per epoch, one line at each epoch's end instead.
    live = show and sys.stdout.isatty()
    # "loss" is shown as this epoch's mean cross-entropy so far: Keras's Progbar would show the
    # last step's value alone on the epoch's final line.
    progbar = keras.utils.Progbar(s.steps_per_epoch, verbose=1 if live else 0, stateful_metrics=["loss"])
    if live:
        print(f"epoch {epoch + 1}/{config.epochs}  lr {lr:.5f}")
    started = time.perf_counter()
    progbar.update(done_in_epoch)
    loss_sum, images = 0.0, 0
    for count in range(1, s.steps_per_epoch - done_in_epoch + 1):
        with data_lib.naming_corrupt_shards(s.train_files, "training"):
            loss, penalty = (float(x) for x in train_step(iterator))
        current = int(s.step.assign_add(1).numpy())
        images += config.batch_size
        stop_unless_finite(loss, penalty, current, epoch, s.manager.directory)
        loss_sum += loss
        progbar.update(current - epoch * s.steps_per_epoch, [("loss", loss_sum / count)])
        log_step(s.writer, current, loss, penalty, lr)
        if current % config.checkpoint_every == 0:
            s.manager.save(checkpoint_number=current)
    s.manager.save(checkpoint_number=int(s.step.numpy()))
    if show and not live:
        print_epoch(config, epoch, s.steps_per_epoch - done_in_epoch, s.steps_per_epoch, lr, loss_sum,
                    images / max(time.perf_counter() - started, 1e-9))
    return images


def stop_unless_finite(loss: float, penalty: float, step: int, epoch: int, checkpoints: str) -> None:
    """Raises NonFiniteLossError, naming the step, unless the step's losses are finite."""
    if not (math.isfinite(loss) and math.isfinite(penalty)):
        raise NonFiniteLossError(
            f"Loss became {loss} (L2 penalty {penalty}) at step {step} (epoch {epoch + 1}); "
            f"stopped. Lower --learning_rate or the batch size, or check the data; the last "
            f"good checkpoint is in {checkpoints}.")


def log_step(writer, step: int, loss: float, penalty: float, lr: float) -> None:
    """The step's TensorBoard scalars (``writer`` None: not the chief, nothing)."""
    if writer is not None:
        with writer.as_default(step=step):
            tf.summary.scalar("train/loss", loss)
            tf.summary.scalar("train/l2_penalty", penalty)
            tf.summary.scalar("train/learning_rate", lr)


def print_epoch(config: TrainConfig, epoch: int, steps: int, steps_per_epoch: int, lr: float,
                loss_sum: float, rate: float) -> None:
    """The epoch's one line where no progress bar is shown (a log file, CI)."""
    print(f"epoch {epoch + 1}/{config.epochs}: {steps}/{steps_per_epoch} steps, lr {lr:.5f}, "
          f"loss {loss_sum / max(steps, 1):.4f}, {rate:.1f} images/s", flush=True)


def run(config: TrainConfig, recipe: Recipe | None = None, verbose: bool = True, spec=None,
        export: bool = True) -> dict:
    """Trains, evaluates and exports; returns the metrics written to ``metrics.json``.

    ``spec`` trains a design-space point instead of ``config.model``; ``export=False`` skips
    the SavedModel (sweeps).
    """
    spec = spec or config.design_spec()
    with contextlib.ExitStack() as resources:
        s = setup(config, config.tuned(recipe or get_recipe(config.recipe)), spec, resources)
        return _train_evaluate_finish(s, verbose, export, spec)


def _train_evaluate_finish(s: Session, verbose: bool, export: bool, spec=None) -> dict:
    config = s.config
    train_step = make_train_step(s)
    start_step, start_time, images = int(s.step.numpy()), time.perf_counter(), 0
    for epoch in range(start_step // s.steps_per_epoch, config.epochs):
        images += train_epoch(s, epoch, train_step, verbose)
    elapsed = time.perf_counter() - start_time
    if s.recipe.ema_decay:
        s.optimizer.finalize_variable_values(s.model.trainable_variables)  # evaluate the EMA weights

    top1, top5 = evaluate(s)
    steps = int(s.step.numpy())
    metrics = {"val_top1": top1, "val_top5": top5, "epochs": config.epochs, "steps": steps,
               "steps_this_run": steps - start_step,
               "images_per_sec": images / elapsed if elapsed > 0 and images else None}
    if s.writer is not None:
        with s.writer.as_default(step=steps):
            tf.summary.scalar("val/top1", top1)
            tf.summary.scalar("val/top5", top5)
        s.writer.flush()
    if s.chief:
        finish(s.model, config, metrics, export and config.export, spec)
    else:  # kept so that the replicas can be compared
        save_keras_weights(s.model, os.path.join(s.out_dir, "final.weights.h5"))
    if verbose and s.chief:
        print(json.dumps(metrics))
    return metrics


def augment_batches(ds: tf.data.Dataset, recipe: Recipe, num_classes: int) -> tf.data.Dataset:
    """The modern recipe's batch-level augmentations, all Keras 3 built-in layers."""
    if recipe.randaugment:
        randaugment = keras.layers.RandAugment(value_range=(0, 255))
        ds = ds.map(lambda x, y: (randaugment(x, training=True), y), num_parallel_calls=tf.data.AUTOTUNE)
    if recipe.soft_labels:
        ds = ds.map(lambda x, y: (x, tf.one_hot(y, num_classes)))
    mixers = ([keras.layers.MixUp(alpha=recipe.mixup)] if recipe.mixup else []) + (
        [keras.layers.CutMix(factor=recipe.cutmix)] if recipe.cutmix else [])

    def apply(mixer, x, y):
        out = mixer({"images": x, "labels": y}, training=True)
        return out["images"], out["labels"]

    def mix(x, y):
        if len(mixers) == 1:
            return apply(mixers[0], x, y)
        # Both enabled: one or the other per batch, as is usual.
        return tf.cond(tf.random.uniform([]) < 0.5, lambda: apply(mixers[0], x, y),
                       lambda: apply(mixers[1], x, y))

    if mixers:
        ds = ds.map(mix, num_parallel_calls=tf.data.AUTOTUNE)
    return ds


def evaluate(s: Session) -> tuple[float, float]:
    """Top-1 / top-5 accuracy (%) over the whole validation split, on every replica.

    Each input pipeline reads its share of the records (every record exactly once); each
    replica counts its hits and the counts are summed over replicas and workers.
    """
    config, strategy, model = s.config, s.strategy, s.model
    k = min(5, config.num_classes)

    def dataset_fn(ctx):
        ds = s.dataset("validation", s.pipeline(False, ctx))
        return ds.take(config.eval_steps) if config.eval_steps else ds

    def replica_counts(images, labels):
        # A replica's share of the last batch can be empty, and a batch that is empty in its
        # static shape breaks Keras's TensorFlow add (a (0, 1, 1, C) tensor passes its bias
        # test). The model gets a batch of unknown size instead, one dummy image when the
        # share is empty, and only the real rows are counted.
        n = tf.shape(labels)[0]
        one = tf.zeros(tf.concat([[1], tf.shape(images)[1:]], 0), images.dtype)
        batch = tf.cond(n > 0, lambda: images, lambda: one)
        logits = model(batch, training=False)[:n]
        top = tf.math.top_k(logits, k=k).indices
        hits = tf.cast(tf.equal(top, tf.cast(labels[:, None], top.dtype)), tf.float32)
        return tf.stack([tf.reduce_sum(hits[:, 0]), tf.reduce_sum(hits),
                         tf.cast(tf.shape(labels)[0], tf.float32)])

    @tf.function
    def counts(batch):
        return strategy.reduce("SUM", strategy.run(replica_counts, args=batch), axis=None)

    totals = np.zeros(3)
    with data_lib.naming_corrupt_shards(s.val_files, "validation"):
        for batch in strategy.distribute_datasets_from_function(dataset_fn):
            totals += counts(batch).numpy()
    if not totals[2]:
        raise ValueError("The validation split is empty: nothing to evaluate.")
    return 100 * totals[0] / totals[2], 100 * totals[1] / totals[2]


def finish(model: keras.Model, config: TrainConfig, metrics: dict, export: bool = True,
           spec=None) -> None:
    """metrics.json (this run), metrics_history.jsonl (every run), final.weights.h5, model.json
    (``spec``, a design-space point, recorded in it) and the SavedModel in model_dir/export/N."""
    from keras_regnet.deployable import write_run_description
    from keras_regnet.design.sampling import record
    from keras_regnet.export import export_saved_model

    with atomic_path(os.path.join(config.model_dir, "metrics.json")) as tmp, open(tmp, "w") as f:
        json.dump(metrics, f, indent=2)
    # Every finished run's metrics, oldest first: rerunning a command keeps what it found.
    history = os.path.join(config.model_dir, METRICS_HISTORY)
    earlier = open(history, encoding="utf-8").read() if os.path.exists(history) else ""
    with atomic_path(history) as tmp, open(tmp, "w", encoding="utf-8") as f:
        f.write(earlier + json.dumps(metrics) + "\n")
    save_keras_weights(model, os.path.join(config.model_dir, "final.weights.h5"))
    class_names = config_class_names(config)
    # What `keras-regnet export --weights MODEL_DIR` needs to export these weights again.
    name = config.model if spec is None else config.run_name if config.design else "design"
    write_run_description(config.model_dir, name, config.num_classes,
                          config.eval_transform, class_names,
                          design=record("design", spec) if spec is not None else None)
    if not export:
        return
    probabilities = keras.Model(model.input, keras.layers.Softmax(name="probabilities")(model.output))
    export_dir = os.path.join(config.model_dir, "export")
    formats = config.export_format_list
    if "saved_model" in formats:
        version = 1 + max([int(v) for v in os.listdir(export_dir) if v.isdigit()], default=0) \
            if os.path.isdir(export_dir) else 1
        export_saved_model(probabilities, export_dir, version, model_name=config.run_name.lower(),
                           class_names=class_names, transform=config.eval_transform)
    files = [f for f in formats if f != "saved_model"]
    if files:
        export_files(probabilities, config, export_dir, files)


def export_files(model: keras.Model, config: TrainConfig, export_dir: str, formats: list[str]) -> list[str]:
    """The run's ONNX / LiteRT / OpenVINO files (``export_dir/NAME[_int8].suffix``, replacing
    an earlier run's); the int8 ones calibrated on this run's training images through the
    eval transform, as they will be served."""
    from keras_regnet import int8
    from keras_regnet.calibration import calibration_images
    from keras_regnet.export import export_tflite, fold_for_inference
    from keras_regnet.export_choices import DEFAULT_CALIBRATION_IMAGES
    from keras_regnet.formats import SUFFIXES, export_keras_format

    calibration = None
    if any(f.endswith("_int8") for f in formats):
        calibration = calibration_images(config.data_dir, config.eval_transform, DEFAULT_CALIBRATION_IMAGES,
                                         seed=config.seed)
    written = []
    for fmt in formats:
        base = fmt.removesuffix("_int8")
        path = os.path.join(export_dir, f"{config.run_name.lower()}{fmt[len(base):]}{SUFFIXES[base]}")
        if fmt == "litert_int8":
            export_tflite(model, path, "int8", overwrite=True, image_size=config.image_size,
                          calibration=calibration)
        elif fmt == "onnx_int8":
            int8.export_onnx_int8(model, path, calibration, overwrite=True)
        elif fmt == "openvino_int8":
            int8.export_openvino_int8(model, path, calibration, overwrite=True)
        else:
            export_keras_format(fold_for_inference(model), path, base, overwrite=True)
        log.info("wrote %s", path)
        written.append(path)
    return written


def config_class_names(config: TrainConfig) -> list[str] | None:
    path = os.path.join(config.data_dir, "labels.txt") if config.data_dir else None
    if path and os.path.exists(path):
        names = open(path, encoding="utf-8").read().split()
        if len(names) == config.num_classes:
            return names
    return None
