"""Library side of the trainer: config, data, distribution strategy, training loop.

``training/train.py`` is a thin absl entry point over :func:`keras_regnet.training.loop.run`.
"""
