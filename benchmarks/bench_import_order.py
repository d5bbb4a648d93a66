"""Does speed depend on what the user imported first? Train and infer, each order its own process.

``import keras_regnet`` first turns on TensorFlow's oneDNN kernels (on CPUs where TensorFlow
leaves them off: AVX2 ones); ``import tensorflow`` (or keras, keras_hub) first leaves them off
for the process. Each order runs in a fresh interpreter, alternating, and prints images/s and
the ratio of the two orders. ``--root`` measures another checkout (e.g. a worktree of an older
commit) the same way. No assertion: figures depend on the machine.

    python benchmarks/bench_import_order.py --model RegNetX004 --batch 32
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import sys

from timing_args import check_models, timing_parser  # same folder

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = pathlib.Path(__file__).resolve().parent.parent
ORDERS = ("keras_regnet_first", "tensorflow_first")


def worker(order: str, root: str, model: str, batch: int, size: int, repeats: int) -> dict:
    import importlib

    if order == "tensorflow_first":
        importlib.import_module("tensorflow")  # the point: TensorFlow loads before keras_regnet
    sys.path.insert(0, root)
    keras_regnet = importlib.import_module("keras_regnet")  # before anything below loads TensorFlow
    from bench_models import _keras_steps, _median_rate  # same folder
    from tensorflow.python.util import _pywrap_util_port

    infer, train = _keras_steps(keras_regnet.RegNet(model, weights=None, input_shape=(size, size, 3)),
                                batch, size)
    return {"onednn": bool(_pywrap_util_port.IsMklEnabled()),
            "infer": _median_rate(infer, batch, 2, repeats), "train": _median_rate(train, batch, 2, repeats)}


def main() -> None:
    parser = timing_parser(__doc__, model="RegNetX004", batch=32, size=224, repeats=5, rounds=2)
    parser.add_argument("--root", default=str(ROOT), help="the checkout whose keras_regnet to measure")
    parser.add_argument("--worker", choices=ORDERS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.root, args.model, args.batch, args.size, args.repeats)))
        return
    (args.model,) = check_models(parser, [args.model])

    from bench_models import cpu_model, run_worker  # same folder

    # The variable is left unset, as in a user's shell: keras_regnet sets it when imported first.
    env = {k: v for k, v in os.environ.items() if k != "TF_ENABLE_ONEDNN_OPTS"}
    runs: dict[str, list[dict]] = {order: [] for order in ORDERS}
    for round_ in range(args.rounds):
        for order in ORDERS if round_ % 2 == 0 else ORDERS[::-1]:
            result = run_worker(["--worker", order, "--root", args.root, "--model", args.model,
                                 "--batch", str(args.batch), "--size", str(args.size),
                                 "--repeats", str(args.repeats)], env=env, script=__file__)
            runs[order].append(result)
            print(order, result, flush=True)
    print(f"\n{args.model}, batch {args.batch}, {args.size}x{args.size}, images/s (median over "
          f"{args.rounds} rounds); {cpu_model()}; checkout {args.root}")
    print("| import order | oneDNN | infer | train |\n|---|---|---:|---:|")
    medians = {}
    for order, results in runs.items():
        medians[order] = {k: sorted(r[k] for r in results)[len(results) // 2] for k in ("infer", "train")}
        print(f"| {order} | {results[0]['onednn']} | {medians[order]['infer']:.1f} | "
              f"{medians[order]['train']:.1f} |")
    first, second = medians[ORDERS[0]], medians[ORDERS[1]]
    print(f"tensorflow first / keras_regnet first: infer {second['infer'] / first['infer']:.2f}, "
          f"train {second['train'] / first['train']:.2f}")


if __name__ == "__main__":
    main()
