"""Inference and train-step throughput: keras_regnet vs tf-keras (and timm when installed).

Prints images/s (median of --repeats timed runs after --warmup untimed ones) for each model and
framework, measured in this one process, and the ratios ours / anchor. No assertion: figures
depend on the machine.

    python benchmarks/bench_models.py --models RegNetX004 RegNetY032 --batch 32
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import statistics
import subprocess
import sys
import time
from typing import Callable

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _median_rate(fn: Callable[[], object], batch: int, warmup: int, repeats: int) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return batch / statistics.median(times)


def bench_keras(builder, batch: int, size: int, warmup: int, repeats: int) -> tuple[float, float]:
    """Images/s of predict_on_batch and train_on_batch for a Keras (3 or tf-keras) builder."""
    import numpy as np

    model = builder()
    x = np.random.uniform(0, 255, (batch, size, size, 3)).astype("float32")
    y = np.random.randint(0, 1000, (batch,))
    infer = _median_rate(lambda: model.predict_on_batch(x), batch, warmup, repeats)
    model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy", jit_compile=False)
    train = _median_rate(lambda: model.train_on_batch(x, y), batch, warmup, repeats)
    print(f"  {model.name}: infer {infer:.1f} img/s, train {train:.1f} img/s", flush=True)
    return infer, train


def bench_timm(arch: str, batch: int, size: int, warmup: int, repeats: int) -> tuple[float, float]:
    import timm
    import torch

    model = timm.create_model(arch, pretrained=False)
    x = torch.rand(batch, 3, size, size)
    y = torch.randint(0, 1000, (batch,))
    model.eval()

    def infer_step():
        with torch.inference_mode():
            model(x)

    infer = _median_rate(infer_step, batch, warmup, repeats)
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)

    def train_step():
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()

    return infer, _median_rate(train_step, batch, warmup, repeats)


def _tf_keras_model(name: str, shape: tuple, unforce: bool):
    import tf_keras

    model = getattr(tf_keras.applications, name)(weights=None, input_shape=shape)
    if unforce:
        # tf-keras routes every grouped conv through an XLA-compiled function; point this
        # instance's layers at their plain convolution op to measure the native kernel.
        for layer in model.layers:
            if getattr(layer, "groups", 1) > 1:
                layer._jit_compiled_convolution_op = layer.convolution_op
    return model


ANCHORS = {
    "tf_keras": lambda name, shape, common: bench_keras(
        functools.partial(_tf_keras_model, name, shape, False), **common),
    "tf_keras_unforced": lambda name, shape, common: bench_keras(
        functools.partial(_tf_keras_model, name, shape, True), **common),
    "timm": lambda name, shape, common: _in_subprocess("bench_timm", f"regnet{name[6].lower()}_{name[7:10]}",
                                                       **common),
}


def _in_subprocess(function: str, *args, **kwargs) -> tuple[float, float]:
    """Runs a bench function of this file in a fresh interpreter and returns its result.

    PyTorch gets its own process: loaded next to TensorFlow its thread pools slow both down,
    and torchvision imported after TensorFlow crashes the process.
    """
    code = (f"import json, sys; sys.path.insert(0, {os.path.dirname(__file__)!r}); "
            f"import bench_models as b; print(json.dumps(b.{function}(*{args!r}, **{kwargs!r})))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    if out.returncode:
        raise ImportError(out.stderr.strip().splitlines()[-1] if out.stderr.strip() else "failed")
    infer, train = json.loads(out.stdout.strip().splitlines()[-1])
    print(f"  {args[0]} (subprocess): infer {infer:.1f} img/s, train {train:.1f} img/s", flush=True)
    return infer, train


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+", default=["RegNetX004", "RegNetY032"])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--anchors", nargs="*", default=["tf_keras_unforced", "timm"],
                        choices=sorted(ANCHORS),
                        help="tf_keras = stock tf-keras 2.21 (its grouped conv is jit-compiled: "
                             "very slow to train on CPU); tf_keras_unforced = the same model "
                             "with its grouped convs calling the native kernel")
    args = parser.parse_args()

    import keras_regnet

    rows = []
    for name in args.models:
        common = dict(batch=args.batch, size=args.size, warmup=args.warmup, repeats=args.repeats)
        shape = (args.size, args.size, 3)
        ours = functools.partial(getattr(keras_regnet, name), weights=None, input_shape=shape)
        results = {"keras_regnet": bench_keras(ours, **common)}
        for anchor in args.anchors:
            try:
                results[anchor] = ANCHORS[anchor](name, shape, common)
            except ImportError as err:
                print(f"{anchor} anchor unavailable: {err}")
        rows.append((name, results))

    print(f"\nbatch {args.batch}, {args.size}x{args.size}, median of {args.repeats} after "
          f"{args.warmup} warm-up runs; images/s (higher is better)")
    print(f"{'model':<12} {'framework':<14} {'infer':>8} {'train':>8} {'infer x':>8} {'train x':>8}")
    for name, results in rows:
        ours = results["keras_regnet"]
        for framework, (infer, train) in results.items():
            print(f"{name:<12} {framework:<14} {infer:8.1f} {train:8.1f} "
                  f"{ours[0] / infer:8.2f} {ours[1] / train:8.2f}")
    print("'x' columns: keras_regnet / that row (>1 means keras_regnet is faster)")


if __name__ == "__main__":
    main()
