"""One factory for tf.distribute strategies."""

from __future__ import annotations

import logging

import tensorflow as tf

log = logging.getLogger(__name__)


def split_cpu(replicas: int) -> None:
    """Splits the CPU into ``replicas`` logical devices, so mirrored runs that many replicas.

    Must run before TensorFlow initialises its devices (before any op), unless the process
    already holds at least ``replicas`` logical CPUs (split earlier): mirrored then runs on
    the first ``replicas`` of them. One process can train at one replica count only:
    TensorFlow numbers every mirrored strategy's collective groups from the same key, so a
    later strategy of another size fails to join them. Lists
    no device itself: that would start TensorFlow's runtime, before a multi-worker strategy
    could configure it.

    Example::

        split_cpu(2)  # then: tf.distribute.MirroredStrategy() over 2 CPU replicas
    """
    cpus = tf.config.list_physical_devices("CPU")
    configured = tf.config.get_logical_device_configuration(cpus[0])
    if (len(configured) if configured else 1) < replicas:  # unsplit: one logical device
        try:
            tf.config.set_logical_device_configuration(
                cpus[0], [tf.config.LogicalDeviceConfiguration() for _ in range(replicas)])
        except RuntimeError as err:
            raise RuntimeError(
                f"--cpu_replicas must be applied before TensorFlow starts running ops: {err}") from err


def make_strategy(name: str, cpu_replicas: int = 0, tpu: str | None = None) -> tf.distribute.Strategy:
    """``mirrored`` | ``multi_worker`` (TF_CONFIG) | ``tpu`` | ``one_device``."""
    if cpu_replicas > 0 and name in ("mirrored", "multi_worker"):
        split_cpu(cpu_replicas)
    if name == "mirrored":
        gpus = tf.config.list_logical_devices("GPU")
        cpus = tf.config.list_logical_devices("CPU")[:cpu_replicas or None]
        devices = [d.name for d in gpus or cpus]
        strategy = tf.distribute.MirroredStrategy(devices)
    elif name == "multi_worker":
        strategy = tf.distribute.MultiWorkerMirroredStrategy()
    elif name == "tpu":
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu or "")
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
        strategy = tf.distribute.TPUStrategy(resolver)
    elif name == "one_device":
        gpus = tf.config.list_logical_devices("GPU")
        strategy = tf.distribute.OneDeviceStrategy(gpus[0].name if gpus else "/cpu:0")
    else:
        raise ValueError(f"Unknown strategy {name!r}.")
    log.info("strategy %s with %d replicas", name, strategy.num_replicas_in_sync)
    return strategy
