"""Train a RegNet: ``python training/train.py --strategy mirrored [--data_dir ...]``.

With no --data_dir it trains on the embedded handwritten-digits demo (32x32, 10 classes) on
2 logical CPU replicas, then evaluates and exports: the whole job runs in a few minutes on a
laptop CPU. With --data_dir it reads ImageNet-format TFRecords (train-*, validation-*).
``--help`` lists the flags, generated from ``keras_regnet.training.config.TrainConfig``;
``keras-regnet train`` runs the same entry point.
"""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

if __name__ == "__main__":
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
    from keras_regnet.training.main import run_main

    run_main()
