"""Input-pipeline throughput alone (``train.py --benchmark_input``)."""

from __future__ import annotations

import time

from keras_regnet.training import data as data_lib
from keras_regnet.training.config import TrainConfig


def benchmark_input(config: TrainConfig, batches: int = 50, warmup: int = 5) -> float:
    """Prints and returns the training pipeline's images/s (decode + augment + batch)."""
    files = data_lib.split_files(config.data_dir, "train")
    pipeline = config.pipeline(True, config.batch_size, label_offset=config.label_offset or 0)
    iterator = iter(data_lib.make_dataset(files, pipeline).repeat())
    for _ in range(warmup):
        next(iterator)
    start = time.perf_counter()
    for _ in range(batches):
        next(iterator)
    rate = batches * config.batch_size / (time.perf_counter() - start)
    print(f"input pipeline: {rate:.0f} images/s ({config.image_size}x{config.image_size}, "
          f"batch {config.batch_size}, {batches} batches after {warmup} warm-up)")
    return rate
