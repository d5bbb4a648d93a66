"""Where a train (or inference) step's time goes: keras_regnet on TensorFlow beside pycls on
PyTorch, or beside tf-keras's RegNet on TensorFlow (``--against tf_keras``).

Each side runs in its own interpreter and is traced by its framework's profiler (TensorFlow's
with one inter-op thread, so that op times add up to the step instead of overlapping); op
times are grouped into the same classes on both sides and printed as milliseconds per step.
The convolution kernels are oneDNN's on every side: this says which class of work differs.
tf-keras runs its grouped convs on TensorFlow's native kernel (as bench_models' ``tf_keras``).

    python benchmarks/profile_ops.py --model RegNetX004
    python benchmarks/profile_ops.py --model RegNetX004 --mode infer --folded
    python benchmarks/profile_ops.py --model RegNetX004 --mode infer --against tf_keras
"""

from __future__ import annotations

import argparse
import collections
import glob
import json
import os
import pathlib
import sys
import tempfile
import time

from timing_args import check_models  # same folder

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = pathlib.Path(__file__).resolve().parent.parent
ELEMENTWISE = "elementwise (add, relu, scale)"
CLASSES = ("conv forward", "conv gradients", "matmul", "batch norm", "batch norm gradient",
           "relu gradient", "pad / slice", ELEMENTWISE, "other")


def tf_class(op_type: str) -> str:
    """An op type as TensorFlow's CPU profile names it (oneDNN prefixes included) -> class."""
    if "Backprop" in op_type and "Conv2D" in op_type:
        return "conv gradients"
    if "Conv2D" in op_type:
        return "conv forward"
    if "MatMul" in op_type:
        return "matmul"
    if "BatchNormGrad" in op_type:
        return "batch norm gradient"
    if "BatchNorm" in op_type:
        return "batch norm"
    if op_type == "ReluGrad":
        return "relu gradient"
    if op_type in ("Pad", "Slice"):
        return "pad / slice"
    if op_type in ("AddV2", "Add", "Relu", "BiasAdd", "Mul", "Sub"):
        return ELEMENTWISE
    return "other"


def torch_class(op_name: str) -> str:
    """A PyTorch profiler ``aten::`` op (self time) -> class."""
    return {"aten::convolution_backward": "conv gradients", "aten::mkldnn_convolution": "conv forward",
            "aten::native_batch_norm_backward": "batch norm gradient",
            "aten::native_batch_norm": "batch norm", "aten::threshold_backward": "relu gradient",
            "aten::addmm": "matmul", "aten::mm": "matmul", "aten::add": ELEMENTWISE,
            "aten::add_": ELEMENTWISE, "aten::relu": ELEMENTWISE, "aten::relu_": ELEMENTWISE,
            "aten::clamp_min": ELEMENTWISE, "aten::clamp_min_": ELEMENTWISE,
            "aten::mul": ELEMENTWISE}.get(op_name, "other")


def _tf_op_times(logdir: str, steps: int) -> dict:
    """Per-class milliseconds per step from the TF profiler's XSpace (ops are 'name:Type' events
    on the executor threads)."""
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    space = xplane_pb2.XSpace()
    trace = sorted(glob.glob(f"{logdir}/**/*.xplane.pb", recursive=True))[-1]
    space.ParseFromString(pathlib.Path(trace).read_bytes())
    totals: collections.Counter = collections.Counter()
    for plane in space.planes:
        for line in plane.lines:
            if not line.name.startswith("tf_Compute"):
                continue
            for event in line.events:
                name = plane.event_metadata[event.metadata_id].name
                if ":" in name and "::" not in name:
                    totals[tf_class(name.rsplit(":", 1)[1])] += event.duration_ps / 1e9 / steps
    return dict(totals)


def _timed(step, steps: int) -> float:
    """Milliseconds per call of ``step`` over ``steps`` calls."""
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return (time.perf_counter() - start) / steps * 1000


def tensorflow_worker(contender_name: str, model_name: str, mode: str, batch: int, steps: int) -> dict:
    """A bench_models contender on TensorFlow (ours, folded or not, or tf-keras), profiled."""
    # keras_regnet first: it turns on TensorFlow's oneDNN kernels, which load with TensorFlow
    # (for tf-keras too, so that both sides run the same kernels).
    import keras_regnet  # noqa: I001, F401
    import tensorflow as tf

    import bench_models

    tf.config.threading.set_inter_op_parallelism_threads(1)  # before the runtime starts
    contender = getattr(bench_models, contender_name)
    infer, train = contender(model_name, batch, 224)
    step = train if mode == "train" else infer
    for _ in range(2):
        step()
    with tempfile.TemporaryDirectory() as logdir:
        tf.profiler.experimental.start(logdir)
        wall = _timed(step, steps)
        tf.profiler.experimental.stop()
        return {"wall": wall, "classes": _tf_op_times(logdir, steps)}


def pycls_worker(model_name: str, mode: str, batch: int, steps: int) -> dict:
    import bench_models
    import torch

    infer, train = bench_models.pycls(model_name, batch, 224)
    step = train if mode == "train" else infer
    for _ in range(2):
        step()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as profile:
        wall = _timed(step, steps)
    totals: collections.Counter = collections.Counter()
    for event in profile.key_averages():
        totals[torch_class(event.key)] += event.self_cpu_time_total / 1000 / steps
    return {"wall": wall, "classes": dict(totals)}


def table(ours: dict, theirs: dict, against: str = "pycls") -> str:
    rows = [f"| class | keras_regnet ms/step | {against} ms/step | ours / {against} |",
            "|---|---:|---:|---:|"]
    for name in CLASSES:
        a, b = ours["classes"].get(name, 0.0), theirs["classes"].get(name, 0.0)
        ratio = f"{a / b:.2f}" if b else "-"
        rows.append(f"| {name} | {a:.0f} | {b:.0f} | {ratio} |")
    a, b = sum(ours["classes"].values()), sum(theirs["classes"].values())
    rows.append(f"| all ops | {a:.0f} | {b:.0f} | {a / b:.2f} |")
    a, b = ours["wall"], theirs["wall"]
    rows.append(f"| step, wall clock (profiled) | {a:.0f} | {b:.0f} | {a / b:.2f} |")
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="RegNetX004")
    parser.add_argument("--mode", choices=("train", "infer"), default="train")
    parser.add_argument("--folded", action="store_true",
                        help="profile the BN-folded model (what export serves)")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--against", choices=("pycls", "tf_keras"), default="pycls",
                        help="pycls on PyTorch (default) or tf-keras's RegNet on TensorFlow")
    parser.add_argument("--worker", choices=("keras_regnet", "keras_regnet_folded", "tf_keras", "pycls"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.folded and args.mode == "train":
        parser.error("--folded is inference only (the folded model has no batch norms to train)")
    sys.path.insert(0, str(ROOT))
    if args.worker in ("keras_regnet", "keras_regnet_folded", "tf_keras"):
        print(json.dumps(tensorflow_worker(args.worker, args.model, args.mode, args.batch, args.steps)))
        return
    if args.worker == "pycls":
        print(json.dumps(pycls_worker(args.model, args.mode, args.batch, args.steps)))
        return

    from bench_models import cpu_model, run_worker

    (args.model,) = check_models(parser, [args.model])

    common = ["--model", args.model, "--mode", args.mode, "--batch", str(args.batch),
              "--steps", str(args.steps)]
    ours = run_worker(["--worker", "keras_regnet_folded" if args.folded else "keras_regnet", *common],
                      script=__file__)
    theirs = run_worker(["--worker", args.against, *common], script=__file__)
    print(f"CPU: {cpu_model()}. {args.model} {args.mode} step, batch {args.batch}, 224x224, "
          f"{'BN folded, ' if args.folded else ''}mean over {args.steps} profiled steps after 2 "
          f"warm-up ones.\n")
    print(table(ours, theirs, args.against))


if __name__ == "__main__":
    main()
