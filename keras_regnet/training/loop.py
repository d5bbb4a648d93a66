"""The training loop: a custom loop over ``strategy.run`` that works for every strategy.

Keras's ``model.fit`` fails under MultiWorkerMirroredStrategy with Keras 3, so training runs a
plain ``tf.function`` step through ``strategy.run``. The loop checkpoints during the epoch and
resumes exactly (same total steps, same data order and crops), stops on a non-finite loss naming the
step, logs to TensorBoard, evaluates top-1/top-5 and exports.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import time

import keras
import numpy as np
import tensorflow as tf

from keras_regnet.files import atomic_path
from keras_regnet.model import RegNet, load_weights_into
from keras_regnet.training import data as data_lib
from keras_regnet.training.config import Recipe, TrainConfig
from keras_regnet.training.config import recipe as get_recipe
from keras_regnet.training.distribute import make_strategy
from keras_regnet.training.optim import TorchSGD
from keras_regnet.weights import EvalTransform, save_keras_weights

log = logging.getLogger(__name__)
IMAGENET_TRAIN_RECORDS = 1_281_167


class NonFiniteLossError(FloatingPointError):
    pass


def build_model(config: TrainConfig, spec=None) -> keras.Model:
    """The network for training: logits head named like the builders' (``predictions``).

    ``spec`` (a RegNetSpec / AnyNetSpec) replaces ``config.model`` for design-space sweeps.
    """
    weights = config.init_weights
    # With ImageNet's classes the pretrained classifier is kept: the whole network is loaded
    # once, after the head is attached; otherwise the backbone loads the weights without it.
    keep_head = weights is not None and config.num_classes == 1000
    # Any input size: the same network evaluates and serves at other resolutions.
    backbone = RegNet(spec or config.model, include_top=False,
                      weights=None if keep_head else weights, input_shape=(None, None, 3))
    x = keras.layers.GlobalAveragePooling2D(name="head_pool")(backbone.output)
    logits = keras.layers.Dense(
        config.num_classes, name="predictions", dtype="float32",  # float32 logits always
        kernel_initializer=keras.initializers.RandomNormal(stddev=0.01))(x)
    model = keras.Model(backbone.input, logits, name=backbone.name)
    if keep_head:
        load_weights_into(model, weights, None if spec else config.model)
    freeze(model, config.freeze_stages)
    return model


def freeze(model: keras.Model, stages: int) -> None:
    """Freezes the stem (``stages >= 1``) and stages 1 .. ``stages - 1``; frozen BN runs in
    inference mode."""
    prefixes = tuple(["stem_"] + [f"s{i}_" for i in range(1, stages)]) if stages else ()
    for layer in model.layers:
        if prefixes and layer.name.startswith(prefixes):
            layer.trainable = False


def _steps_per_epoch(config: TrainConfig, files: list[str], global_batch: int) -> int:
    if config.steps_per_epoch:
        return config.steps_per_epoch
    if config.tfds_name:
        records = data_lib.tfds_split_size(config.tfds_name, config.data_dir, "train")
    elif len(files) == 1024 and files[0].endswith("-of-01024"):
        records = IMAGENET_TRAIN_RECORDS  # counting 1.28M records would read 140 GB
    else:
        records = data_lib.count_records(files)
    steps = records // global_batch
    if steps < 1:
        raise ValueError(f"--batch_size {global_batch} is larger than the {records} training images.")
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


def run(config: TrainConfig, recipe: Recipe | None = None, verbose: bool = True, spec=None,
        export: bool = True) -> dict:
    """Trains, evaluates and exports; returns the metrics written to ``metrics.json``.

    ``spec`` trains a design-space point instead of ``config.model``; ``export=False`` skips
    the SavedModel (sweeps).
    """
    recipe = config.tuned(recipe or get_recipe(config.recipe))
    strategy = make_strategy(config.strategy, config.cpu_replicas, config.tpu)
    keras.utils.set_random_seed(config.seed)  # same initial weights for the same --seed
    chief = _is_chief(strategy)
    out_dir = config.model_dir if chief else os.path.join(
        config.model_dir, f".worker-{strategy.cluster_resolver.task_id}")
    os.makedirs(out_dir, exist_ok=True)

    if config.tfds_name:  # TFDS labels are 0-based
        train_files, val_files, offset = [], [], 0
    else:
        train_files = data_lib.split_files(config.data_dir, "train")
        val_files = data_lib.split_files(config.data_dir, "validation")
        offset = config.label_offset
        if offset is None:
            offset = data_lib.detect_label_offset(val_files, config.num_classes)
            log.info("label offset detected: %d", offset)
    global_batch = config.batch_size
    steps_per_epoch = _steps_per_epoch(config, train_files, global_batch)

    with _precision(config.precision), strategy.scope():
        model = build_model(config, spec)
        ema = dict(use_ema=True, ema_momentum=recipe.ema_decay) if recipe.ema_decay else {}
        if recipe.optimizer == "adamw":
            optimizer = keras.optimizers.AdamW(learning_rate=0.0, weight_decay=recipe.weight_decay, **ema)
        else:
            optimizer = TorchSGD(learning_rate=0.0, momentum=recipe.momentum, nesterov=recipe.nesterov,
                                 **ema)
        if config.precision == "mixed_float16":
            optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
        optimizer.build(model.trainable_variables)
        step = tf.Variable(0, dtype=tf.int64, trainable=False, name="global_step")

    checkpoint = tf.train.Checkpoint(model=model, optimizer=optimizer, step=step)
    manager = tf.train.CheckpointManager(checkpoint, os.path.join(out_dir, "checkpoints"), max_to_keep=2)
    if manager.latest_checkpoint:
        checkpoint.restore(manager.latest_checkpoint).expect_partial()
        log.info("resumed from %s at step %d", manager.latest_checkpoint, int(step.numpy()))

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
        """One global step; returns (cross-entropy, L2 penalty) summed over the replicas."""
        images, labels = next(iterator)
        losses = strategy.run(step_fn, args=(images, labels))
        return strategy.reduce("SUM", losses, axis=None)

    writer = tf.summary.create_file_writer(os.path.join(out_dir, "logs")) if chief else None
    start_step = int(step.numpy())
    start_time, images_seen = time.perf_counter(), 0
    for epoch in range(start_step // steps_per_epoch, config.epochs):
        done_in_epoch = int(step.numpy()) - epoch * steps_per_epoch
        lr = recipe.learning_rate(epoch, config.epochs, global_batch)
        (optimizer.inner_optimizer if hasattr(optimizer, "inner_optimizer") else optimizer).learning_rate = lr

        def dataset_fn(ctx, epoch=epoch, skip=done_in_epoch):
            ds = _dataset(config, train_files, offset, "train", training=True,
                          batch_size=ctx.get_per_replica_batch_size(global_batch),
                          seed=config.seed + epoch, shuffle_buffer=config.shuffle_buffer,
                          num_shards=ctx.num_input_pipelines, shard_index=ctx.input_pipeline_id,
                          skip_batches=skip, crop_area_min=config.crop_area_min, flip=config.flip)
            return augment_batches(ds, recipe, config.num_classes).repeat()

        iterator = iter(strategy.distribute_datasets_from_function(dataset_fn))
        # "loss" is shown as this epoch's mean cross-entropy so far: Keras's Progbar would show the
        # last step's value alone on the epoch's final line.
        progbar = keras.utils.Progbar(steps_per_epoch, verbose=1 if (verbose and chief) else 0,
                                      stateful_metrics=["loss"])
        loss_sum, loss_count = 0.0, 0
        if verbose and chief:
            print(f"epoch {epoch + 1}/{config.epochs}  lr {lr:.5f}")
        progbar.update(done_in_epoch)
        for _ in range(done_in_epoch, steps_per_epoch):
            try:
                loss, penalty = (float(x) for x in train_step(iterator))
            except tf.errors.DataLossError as err:
                bad = data_lib.find_corrupt_file(train_files) if train_files else None
                raise ValueError(f"Corrupt training shard {bad or '(unknown)'}: {err.message}") from err
            current = int(step.assign_add(1).numpy())
            images_seen += global_batch
            if not (math.isfinite(loss) and math.isfinite(penalty)):
                raise NonFiniteLossError(
                    f"Loss became {loss} (L2 penalty {penalty}) at step {current} (epoch {epoch + 1}); "
                    f"stopped. Lower --learning_rate or the batch size, or check the data; the last "
                    f"good checkpoint is in {manager.directory}.")
            loss_sum, loss_count = loss_sum + loss, loss_count + 1
            progbar.update(current - epoch * steps_per_epoch, [("loss", loss_sum / loss_count)])
            if writer is not None:
                with writer.as_default(step=current):
                    tf.summary.scalar("train/loss", loss)
                    tf.summary.scalar("train/l2_penalty", penalty)
                    tf.summary.scalar("train/learning_rate", lr)
            if current % config.checkpoint_every == 0:
                manager.save(checkpoint_number=current)
        manager.save(checkpoint_number=int(step.numpy()))
    elapsed = time.perf_counter() - start_time
    if recipe.ema_decay:
        optimizer.finalize_variable_values(model.trainable_variables)  # evaluate the EMA weights

    top1, top5 = evaluate(model, strategy, val_files, config, offset)
    metrics = {"val_top1": top1, "val_top5": top5, "epochs": config.epochs, "steps": int(step.numpy()),
               "steps_this_run": int(step.numpy()) - start_step,
               "images_per_sec": images_seen / elapsed if elapsed > 0 and images_seen else None}
    if writer is not None:
        with writer.as_default(step=int(step.numpy())):
            tf.summary.scalar("val/top1", top1)
            tf.summary.scalar("val/top5", top5)
        writer.flush()
    if chief:
        finish(model, config, metrics, export)
    else:  # kept so that the replicas can be compared
        save_keras_weights(model, os.path.join(out_dir, "final.weights.h5"))
    if verbose and chief:
        print(json.dumps(metrics))
    return metrics


def _dataset(config: TrainConfig, files: list[str], offset: int, split: str, **kwargs):
    """The TFRecord or TFDS pipeline of a split, per the config."""
    common = dict(image_size=config.image_size, eval_resize=config.eval_resize, **kwargs)
    if config.tfds_name:
        return data_lib.make_tfds_dataset(config.tfds_name, config.data_dir, split, **common)
    return data_lib.make_dataset(files, label_offset=offset, **common)


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


def evaluate(model, strategy, files, config: TrainConfig, offset: int) -> tuple[float, float]:
    """Top-1 / top-5 accuracy (%) over the whole validation split."""
    ds = _dataset(config, files, offset, "validation", training=False, batch_size=config.batch_size)
    if config.eval_steps:
        ds = ds.take(config.eval_steps)

    @tf.function
    def counts(images, labels):
        logits = model(images, training=False)
        k = min(5, config.num_classes)
        top = tf.math.top_k(logits, k=k).indices
        hits = tf.cast(tf.equal(top, labels[:, None]), tf.float32)
        return tf.reduce_sum(hits[:, 0]), tf.reduce_sum(hits), tf.cast(tf.shape(labels)[0], tf.float32)

    totals = np.zeros(3)
    for images, labels in ds:
        totals += np.array([float(t) for t in counts(images, labels)])
    return 100 * totals[0] / totals[2], 100 * totals[1] / totals[2]


def finish(model: keras.Model, config: TrainConfig, metrics: dict, export: bool = True) -> None:
    """metrics.json, final.weights.h5 and the SavedModel in model_dir/export/N."""
    from keras_regnet.export import export_saved_model

    with atomic_path(os.path.join(config.model_dir, "metrics.json")) as tmp, open(tmp, "w") as f:
        json.dump(metrics, f, indent=2)
    save_keras_weights(model, os.path.join(config.model_dir, "final.weights.h5"))
    if not export:
        return
    probabilities = keras.Model(model.input, keras.layers.Softmax(name="probabilities")(model.output))
    export_dir = os.path.join(config.model_dir, "export")
    version = 1 + max([int(v) for v in os.listdir(export_dir) if v.isdigit()], default=0) \
        if os.path.isdir(export_dir) else 1
    class_names = config_class_names(config)
    export_saved_model(probabilities, export_dir, version, model_name=config.model.lower(),
                       class_names=class_names,
                       transform=EvalTransform(config.eval_resize, config.image_size))


def config_class_names(config: TrainConfig) -> list[str] | None:
    path = os.path.join(config.data_dir, "labels.txt") if config.data_dir else None
    if path and os.path.exists(path):
        names = open(path, encoding="utf-8").read().split()
        if len(names) == config.num_classes:
            return names
    return None
