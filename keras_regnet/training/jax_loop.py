"""Data-parallel training on the JAX backend: ``--strategy data_parallel`` (KERAS_BACKEND=jax).

The model is replicated over every device of every process by ``keras.distribution.DataParallel``
(processes meet in :mod:`~keras_regnet.training.rendezvous`, then join through
``jax.distributed.initialize``: ``--num_processes``,
``--process_id``, ``--coordinator_address``), and one global step is a jitted
``stateless_call`` + ``optimizer.stateless_apply`` whose batch is split over the devices; XLA
adds the gradient all-reduce. What the tf.distribute loop (:mod:`keras_regnet.training.loop`)
does is shared: config, TFRecord/TFDS input, recipes, the model and optimizer, the metrics
files, the final weights.

Two things differ on purpose:

* **Input**: every process reads the same record stream and decodes only its slice of each
  global batch (``PipelineConfig.slices``), so a global batch holds the same images whatever
  the number of processes, and N processes take exactly the steps one process would.
* **Checkpoints**: one ``checkpoints/ckpt-STEP.npz`` of every variable, written atomically by
  process 0 (the model directory is shared storage when the processes are on several hosts);
  a run resumes from it with any number of processes.

Example (two processes on one host)::

    KERAS_BACKEND=jax python training/train.py --strategy data_parallel --num_processes 2 \\
        --process_id 0 --coordinator_address 127.0.0.1:9876 &
    KERAS_BACKEND=jax python training/train.py --strategy data_parallel --num_processes 2 \\
        --process_id 1 --coordinator_address 127.0.0.1:9876
"""

from __future__ import annotations

import contextlib
import dataclasses
import glob
import json
import logging
import os
import time
from typing import Any

import keras
import numpy as np

from keras_regnet.files import atomic_path
from keras_regnet.training import data as data_lib
from keras_regnet.training import lock, rendezvous
from keras_regnet.training.config import Recipe, TrainConfig
from keras_regnet.training.config import recipe as get_recipe
from keras_regnet.training.loop import (
    augment_batches,
    build_model,
    data_files,
    finish,
    log_step,
    make_optimizer,
    print_epoch,
    set_learning_rate,
    steps_per_epoch,
    stop_unless_finite,
)

log = logging.getLogger(__name__)
CHECKPOINT_DIR = "checkpoints"
CHECKPOINTS_KEPT = 2


def initialize(config: TrainConfig) -> None:
    """Devices and processes, before JAX runs anything: ``--cpu_replicas`` host devices, and
    with several processes, the job met (one-line errors) and joined through JAX."""
    import jax

    if keras.backend.backend() != "jax":
        raise ValueError(f"--strategy data_parallel runs on the JAX backend; this process has "
                         f"KERAS_BACKEND={keras.backend.backend()}. Start it with KERAS_BACKEND=jax.")
    if config.cpu_replicas:
        try:
            jax.config.update("jax_num_cpu_devices", config.cpu_replicas)
        except RuntimeError as err:  # JAX's devices exist already in this process
            raise ValueError(f"--cpu_replicas {config.cpu_replicas} must be applied before JAX starts its "
                             f"devices ({err}); run the trainer in a fresh process.") from None
    if config.num_processes > 1:
        # Met first (a missing process is one line, not JAX's abort), then joined through JAX:
        # what keras.distribution.initialize does, with the run's --join_timeout (its random
        # seed agreement is not needed: setup sets the run's seed).
        log.info("process %d of %d: waiting up to %d s for the job to meet at %s", config.process_id,
                 config.num_processes, config.join_timeout, config.coordinator_address)
        rendezvous.meet(config.coordinator_address, config.process_id, config.num_processes,
                        config.join_timeout)
        jax.config.update("jax_cpu_collectives_implementation", "gloo")  # CPU devices across processes
        jax.distributed.initialize(config.coordinator_address, config.num_processes, config.process_id,
                                   initialization_timeout=config.join_timeout)


@dataclasses.dataclass
class JaxSession:
    """What a data-parallel run holds: model, optimizer, shardings, data files, and the
    training state as a (trainable, non-trainable, optimizer) tuple of global arrays."""

    config: TrainConfig
    recipe: Recipe
    model: keras.Model
    optimizer: keras.optimizers.Optimizer
    replicated: Any  # jax.sharding.NamedSharding
    batch_sharded: Any
    state: tuple
    step: int
    train_files: list[str]
    val_files: list[str]
    label_offset: int
    steps_per_epoch: int
    chief: bool

    @property
    def process(self) -> int:
        return self.config.process_id

    def dataset(self, split: str, pipeline):
        if self.config.tfds_name:
            return data_lib.make_tfds_dataset(self.config.tfds_name, self.config.data_dir, split, pipeline)
        return data_lib.make_dataset(self.train_files if split == "train" else self.val_files, pipeline)


def _variables(model: keras.Model, optimizer) -> tuple[list, list, list]:
    return list(model.trainable_variables), list(model.non_trainable_variables), list(optimizer.variables)


def _local(array) -> np.ndarray:
    """A replicated global array's value, read from this process's own copy."""
    return np.asarray(array.addressable_data(0))


def _place(values: list[np.ndarray], sharding) -> list:
    import jax

    return [jax.make_array_from_callback(v.shape, sharding, lambda index, v=v: v[index]) for v in values]


def state_values(s: JaxSession) -> list[list[np.ndarray]]:
    """The training state as numpy arrays: [trainable, non-trainable, optimizer]."""
    return [[_local(a) for a in part] for part in s.state]


def sync_to_keras(s: JaxSession) -> None:
    """Writes the training state into the Keras variables (for saving, EMA, the learning rate)."""
    for variables, values in zip(_variables(s.model, s.optimizer), state_values(s)):
        for variable, value in zip(variables, values):
            variable.assign(value)


def sync_from_keras(s: JaxSession) -> None:
    s.state = tuple(_place([np.asarray(v) for v in part], s.replicated)
                    for part in _variables(s.model, s.optimizer))


def setup(config: TrainConfig, recipe: Recipe, resources: contextlib.ExitStack) -> JaxSession:
    """Devices, data files, model, optimizer, shardings; resumes from the latest checkpoint."""
    import jax
    from jax.sharding import NamedSharding, PartitionSpec

    initialize(config)
    devices = jax.device_count()
    if config.batch_size % devices:
        nearest = devices * max(1, config.batch_size // devices)
        raise ValueError(f"--batch_size {config.batch_size} does not split over {devices} devices: "
                         f"use a multiple of {devices}, e.g. {nearest}.")
    distribution = keras.distribution.DataParallel()
    mesh = distribution.device_mesh.backend_mesh
    replicated = NamedSharding(mesh, PartitionSpec())
    batch_sharded = NamedSharding(mesh, PartitionSpec(distribution.batch_dim_name))
    chief = config.process_id == 0
    if chief:  # only process 0 writes into the model directory
        resources.enter_context(lock.exclusive(config.model_dir))
        for partial in glob.glob(os.path.join(config.model_dir, CHECKPOINT_DIR, ".ckpt-*")):
            os.remove(partial)  # a write a killed run left unfinished (atomic_path's temporary)

    train_files, val_files, offset = data_files(config)

    # Built unsharded with the run's seed: every process draws the same initial weights; the
    # state is then placed replicated on the mesh (DataParallel's variable layout).
    keras.utils.set_random_seed(config.seed)
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy({"fp32": "float32"}.get(config.precision, config.precision))
    try:
        model = build_model(config, config.design_spec())
        optimizer = make_optimizer(recipe, config.precision)
        optimizer.build(model.trainable_variables)
    finally:
        keras.config.set_dtype_policy(previous)
    s = JaxSession(config, recipe, model, optimizer, replicated, batch_sharded, (), 0, train_files,
                   val_files, offset, steps_per_epoch(config, train_files), chief)
    step = _agreed_checkpoint_step(config)
    if step:
        restore(s, step)
        log.info("resumed from %s at step %d", checkpoint_path(config, step), step)
    sync_from_keras(s)
    s.step = step
    log.info("data_parallel over %d devices in %d processes", devices, jax.process_count())
    return s


def checkpoint_path(config: TrainConfig, step: int) -> str:
    return os.path.join(config.model_dir, CHECKPOINT_DIR, f"ckpt-{step}.npz")


def checkpoint_steps(config: TrainConfig) -> list[int]:
    found = glob.glob(os.path.join(config.model_dir, CHECKPOINT_DIR, "ckpt-*.npz"))
    return sorted(int(os.path.basename(p)[5:-4]) for p in found if os.path.basename(p)[5:-4].isdigit())


def _agreed_checkpoint_step(config: TrainConfig) -> int:
    """Process 0's latest checkpoint step, the same in every process (0: start afresh)."""
    steps = checkpoint_steps(config)
    latest = steps[-1] if steps else 0
    if config.num_processes == 1:
        return latest
    from jax.experimental import multihost_utils

    return int(multihost_utils.broadcast_one_to_all(np.int64(latest)))


def save_checkpoint(s: JaxSession, writer=None) -> None:
    """Process 0 writes every variable at the current step (atomically), keeping the last two,
    and flushes the logs: a run killed later still has every step's loss up to here."""
    if not s.chief:
        return
    if writer is not None:
        writer.flush()
    arrays = {"step": np.int64(s.step)}
    for name, values in zip(("trainable", "non_trainable", "optimizer"), state_values(s)):
        arrays |= {f"{name}/{i}": value for i, value in enumerate(values)}
    path = checkpoint_path(s.config, s.step)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with atomic_path(path, suffix=".npz") as tmp:
        np.savez(tmp, **arrays)
    for old in checkpoint_steps(s.config)[:-CHECKPOINTS_KEPT]:
        os.remove(checkpoint_path(s.config, old))


def restore(s: JaxSession, step: int) -> None:
    """Loads checkpoint ``step`` into the Keras variables, checking that it fits the model."""
    path = checkpoint_path(s.config, step)
    if not os.path.exists(path):
        raise FileNotFoundError(f"Process {s.process} cannot read {path}, the checkpoint process 0 "
                                f"resumes from: with processes on several hosts, --model_dir must be "
                                f"storage they all share.")
    with np.load(path) as saved:
        for name, variables in zip(("trainable", "non_trainable", "optimizer"),
                                   _variables(s.model, s.optimizer)):
            for i, variable in enumerate(variables):
                value = saved[f"{name}/{i}"]
                if tuple(value.shape) != tuple(variable.shape):
                    raise ValueError(f"{path} does not belong to this model ({variable.path}: "
                                     f"{value.shape} saved, {variable.shape} here); give the run a "
                                     f"fresh --model_dir.")
                variable.assign(value)


def make_train_step(s: JaxSession):
    """One global step, jitted: (state, images, labels) -> (state, [cross-entropy, L2 penalty]).

    The loss is the mean over the global batch, as in the tf.distribute loop; pycls's weight
    decay is L2 in the loss (so it passes through momentum)."""
    import jax
    import jax.numpy as jnp

    model, optimizer, recipe = s.model, s.optimizer, s.recipe
    l2 = recipe.weight_decay if recipe.optimizer == "sgd" else 0.0

    def loss_fn(trainable, non_trainable, images, labels):
        logits, non_trainable = model.stateless_call(trainable, non_trainable, images, training=True)
        if recipe.soft_labels:
            per_example = keras.losses.categorical_crossentropy(
                labels, logits, from_logits=True, label_smoothing=recipe.label_smoothing)
        else:
            per_example = keras.losses.sparse_categorical_crossentropy(labels, logits, from_logits=True)
        data_loss = jnp.mean(per_example)
        penalty = jnp.zeros((), "float32")
        if l2:
            penalty = 0.5 * l2 * sum(jnp.sum(jnp.square(v.astype("float32"))) for v in trainable)
        return data_loss + penalty, (data_loss, penalty, non_trainable)

    def step(state, images, labels):
        trainable, non_trainable, optimizer_variables = state
        (_, (data_loss, penalty, non_trainable)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
            trainable, non_trainable, images, labels)
        trainable, optimizer_variables = optimizer.stateless_apply(optimizer_variables, grads, trainable)
        return (trainable, non_trainable, optimizer_variables), jnp.stack([data_loss, penalty])

    return jax.jit(step, donate_argnums=0, out_shardings=(s.replicated, s.replicated))


def train_epoch(s: JaxSession, epoch: int, train_step, writer, verbose: bool) -> int:
    """Trains one epoch (the rest of it, when resumed); returns the images trained on."""
    import jax

    config = s.config
    done_in_epoch = s.step - epoch * s.steps_per_epoch
    lr = s.recipe.learning_rate(epoch, config.epochs, config.batch_size)
    sync_to_keras(s)
    set_learning_rate(s.optimizer, lr)
    sync_from_keras(s)
    pipeline = config.pipeline(True, config.batch_size, label_offset=s.label_offset, seed=config.seed + epoch,
                               skip_batches=done_in_epoch, slices=config.num_processes,
                               slice_index=config.process_id)
    batches = augment_batches(s.dataset("train", pipeline), s.recipe, config.num_classes).repeat()
    started, loss_sum, steps = time.perf_counter(), 0.0, s.steps_per_epoch - done_in_epoch
    with data_lib.naming_corrupt_shards(s.train_files, "training"):
        iterator = batches.as_numpy_iterator()
        for _ in range(steps):
            images, labels = next(iterator)
            images, labels = (jax.make_array_from_process_local_data(s.batch_sharded, a)
                              for a in (images, labels))
            s.state, losses = train_step(s.state, images, labels)
            loss, penalty = (float(x) for x in _local(losses))
            s.step += 1
            stop_unless_finite(loss, penalty, s.step, epoch, os.path.join(config.model_dir, CHECKPOINT_DIR))
            loss_sum += loss
            log_step(writer, s.step, loss, penalty, lr)
            if s.step % config.checkpoint_every == 0:
                save_checkpoint(s, writer)
    save_checkpoint(s, writer)
    if verbose and s.chief:
        print_epoch(config, epoch, steps, s.steps_per_epoch, lr, loss_sum,
                    steps * config.batch_size / max(time.perf_counter() - started, 1e-9))
    return steps * config.batch_size


def evaluate(s: JaxSession) -> tuple[float, float]:
    """Top-1 / top-5 (%) over the whole validation split: each process evaluates its share of
    the records on its own first device (batches padded to one shape: one compile), and the
    counts are summed over the processes."""
    import jax

    config, model = s.config, s.model
    k = min(5, config.num_classes)
    trainable, non_trainable, _ = state_values(s)
    predict = jax.jit(lambda t, n, x: model.stateless_call(t, n, x, training=False)[0])
    batch = max(1, config.batch_size // config.num_processes)
    pipeline = config.pipeline(False, batch, label_offset=s.label_offset, num_shards=config.num_processes,
                               shard_index=config.process_id)
    ds = s.dataset("validation", pipeline)
    if config.eval_steps:
        ds = ds.take(config.eval_steps)
    totals = np.zeros(3)
    with data_lib.naming_corrupt_shards(s.val_files, "validation"):
        for images, labels in ds.as_numpy_iterator():
            n = len(labels)
            padded = np.concatenate([images, np.zeros((batch - n, *images.shape[1:]), images.dtype)])
            logits = np.asarray(predict(trainable, non_trainable, padded))[:n]
            top = np.argsort(-logits, axis=-1, kind="stable")[:, :k]
            hits = top == labels[:, None]
            totals += [hits[:, 0].sum(), hits.sum(), n]
    if config.num_processes > 1:
        from jax.experimental import multihost_utils

        # Gathered as float32 (JAX's default): counts stay exact up to 2^24 images.
        totals = np.asarray(multihost_utils.process_allgather(totals), np.float64).reshape(-1, 3).sum(0)
    if not totals[2]:
        raise ValueError("The validation split is empty: nothing to evaluate.")
    return float(100 * totals[0] / totals[2]), float(100 * totals[1] / totals[2])


def run(config: TrainConfig, recipe: Recipe | None = None, verbose: bool = True) -> dict:
    """Trains, evaluates and writes the run's files (process 0); returns the metrics.

    The end-of-run export is TensorFlow's: on JAX the run writes final.weights.h5 and model.json,
    and ``keras-regnet export --weights MODEL_DIR`` exports them (it prints the command).

    Example (in a process started with KERAS_BACKEND=jax)::

        metrics = run(TrainConfig(strategy="data_parallel", model="RegNetY016",
                                  data_dir="/data/imagenet-tfrecords"))
    """
    import tensorflow as tf

    with contextlib.ExitStack() as resources:
        s = setup(config, config.tuned(recipe or get_recipe(config.recipe)), resources)
        writer = tf.summary.create_file_writer(os.path.join(config.model_dir, "logs")) if s.chief else None
        train_step = make_train_step(s)
        start_step, started, images = s.step, time.perf_counter(), 0
        for epoch in range(start_step // s.steps_per_epoch, config.epochs):
            images += train_epoch(s, epoch, train_step, writer, verbose)
        elapsed = time.perf_counter() - started
        sync_to_keras(s)
        if s.recipe.ema_decay:
            s.optimizer.finalize_variable_values(s.model.trainable_variables)  # evaluate the EMA weights
            sync_from_keras(s)
        top1, top5 = evaluate(s)
        metrics = {"val_top1": top1, "val_top5": top5, "epochs": config.epochs, "steps": s.step,
                   "steps_this_run": s.step - start_step,
                   "images_per_sec": images / elapsed if elapsed > 0 and images else None,
                   "processes": config.num_processes}
        if s.chief:
            with writer.as_default(step=s.step):
                tf.summary.scalar("val/top1", top1)
                tf.summary.scalar("val/top5", top5)
            writer.flush()
            finish(s.model, config, metrics, export=False, spec=config.design_spec())
            if verbose:
                if config.export:
                    print(f"export (TensorFlow): keras-regnet export --weights {config.model_dir}",
                          flush=True)
                print(json.dumps(metrics), flush=True)
        return metrics
