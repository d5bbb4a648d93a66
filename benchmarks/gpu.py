"""GPU throughput: keras_regnet on the TensorFlow, JAX and PyTorch backends against timm, same card,
and JAX data-parallel over all of the host's GPUs (keras.distribution.DataParallel).

First, per backend (fp32): each model's logits on the GPU against the same model, same weights,
on the host's CPU (TF32 and the GPU kernels' order of sums show there). Then each (contender,
precision) runs in its own interpreter through benchmarks/bench_models.py's worker: fp32 for
every model first, then "mixed" (Keras mixed_bfloat16 policy; torch.autocast bfloat16).
Contenders whose framework is missing (TensorFlow on a JAX-only machine) are reported as
unavailable, and so is a worker that has not finished within --worker-timeout. Last, the serving check
(benchmarks/serve_gpu_check.py): each model's SavedModel served on the GPU by plain TensorFlow in a
fresh process, against the Keras model on the CPU. ``--json`` keeps every figure in a file,
rewritten after each one (a run cut short keeps what it measured).

    python benchmarks/gpu.py --models RegNetX004 RegNetY032 --batch 128
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_models  # noqa: E402
from timing_args import check_models, timing_parser  # noqa: E402

# JAX on the GPU: the CPU contender's JAX_PLATFORMS=cpu is dropped.
# keras_regnet_jax_dp: DataParallel over every GPU of the host (the batch split across them).
# keras_regnet_jax_per_group: one plain conv per group (the CPU's and multi-device form) in place
# of XLA's own grouped conv, which one GPU gets (conv_ops.jax_grouped_conv_per_group).
GPU_CONTENDERS = {"keras_regnet": {}, "keras_regnet_jax": {"KERAS_BACKEND": "jax"},
                  "keras_regnet_jax_per_group": {"KERAS_BACKEND": "jax"},
                  "keras_regnet_jax_dp": {"KERAS_BACKEND": "jax"},
                  "keras_regnet_torch": {"KERAS_BACKEND": "torch"}, "timm": {}}
PARITY_BACKENDS = ("tensorflow", "jax", "torch")
PARITY_BATCH = 4


def logits_on_gpu_and_cpu(name: str, size: int) -> dict:
    """The parity worker (its process's KERAS_BACKEND): ``name``'s logits for PARITY_BATCH
    images on the default device (the GPU) and on the CPU, same weights; max |difference|."""
    sys.path.insert(0, str(bench_models.ROOT))
    import keras
    import numpy as np

    import keras_regnet
    from keras_regnet.deterministic import set_deterministic_weights

    images = np.random.default_rng(0).uniform(0, 255, (PARITY_BATCH, size, size, 3)).astype("float32")
    options = {"weights": None, "input_shape": (size, size, 3), "classifier_activation": None}
    on_gpu = getattr(keras_regnet, name)(**options)
    set_deterministic_weights(on_gpu)  # batch norms and branches that do work (its docstring)
    gpu_logits = keras.ops.convert_to_numpy(on_gpu(images, training=False))
    with keras.device("cpu:0"):
        on_cpu = getattr(keras_regnet, name)(**options)
        on_cpu.set_weights(on_gpu.get_weights())
        cpu_logits = keras.ops.convert_to_numpy(on_cpu(images, training=False))
    return {"max_difference": float(np.abs(gpu_logits - cpu_logits).max()),
            "max_logit": float(np.abs(cpu_logits).max())}


def gpu_names() -> str:
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return "no nvidia-smi"
    return "; ".join(out.stdout.strip().splitlines()) or "nvidia-smi listed no GPU"


def main() -> None:
    parser = timing_parser(__doc__, models=["RegNetX004", "RegNetY032"], batch=128, size=224, warmup=3,
                           repeats=10)
    parser.add_argument("--precisions", nargs="+", default=["fp32", "mixed"], choices=["fp32", "mixed"])
    parser.add_argument("--contenders", nargs="+", default=list(GPU_CONTENDERS), choices=list(GPU_CONTENDERS))
    parser.add_argument("--parity", nargs="*", default=list(PARITY_BACKENDS), choices=PARITY_BACKENDS,
                        help="backends whose GPU logits are checked against the CPU's (none: skip)")
    parser.add_argument("--serving", action=argparse.BooleanOptionalAction, default=True,
                        help="the TF SavedModel serving check (--no-serving: skip)")
    parser.add_argument("--worker-timeout", type=float, default=600,
                        help="seconds one worker may take before it is killed and reported unavailable")
    parser.add_argument("--json", help="file to keep every figure in (rewritten after each)")
    parser.add_argument("--parity-worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.parity_worker:
        print(json.dumps(logits_on_gpu_and_cpu(args.parity_worker, args.size)))
        return
    args.models = check_models(parser, args.models)
    figures: dict = {"gpu": gpu_names(), "host_cpu": bench_models.cpu_model(), "batch": args.batch,
                     "size": args.size, "parity": [], "rows": [], "serving": []}

    def keep(kind: str, record: dict) -> None:
        figures[kind].append(record)
        if args.json:
            partial = args.json + ".partial"
            with open(partial, "w") as f:
                json.dump(figures, f, indent=1)
            os.replace(partial, args.json)

    print(f"GPU: {figures['gpu']}; host CPU: {figures['host_cpu']}", flush=True)

    def measure(label: str, worker_args: list[str], env: dict | None = None,
                script: str = bench_models.__file__) -> dict | None:
        """One worker's figures, or None (said as unavailable: missing framework, failure, timeout)."""
        try:
            return bench_models.run_worker(worker_args, env, script=script, timeout=args.worker_timeout)
        except RuntimeError as err:
            print(f"  {label}: unavailable ({err})", flush=True)
            return None

    for backend in args.parity:
        for name in args.models:
            r = measure(f"logits {name} {backend}", ["--parity-worker", name, "--size", str(args.size)],
                        {"KERAS_BACKEND": backend}, script=__file__)
            if r is not None:
                keep("parity", {"model": name, "backend": backend, **r})
                print(f"  logits {name} {backend}: GPU against CPU max |difference| "
                      f"{r['max_difference']:.2g} (largest logit {r['max_logit']:.3g})", flush=True)
    for precision in args.precisions:
        for name in args.models:
            for contender in args.contenders:
                common = ["--models", name, "--batch", str(args.batch), "--size", str(args.size),
                          "--warmup", str(args.warmup), "--repeats", str(args.repeats)]
                r = measure(f"{name} {precision} {contender}", ["--worker", contender, *common],
                            {**GPU_CONTENDERS[contender], "BENCH_PRECISION": precision})
                if r is not None:
                    keep("rows", {"model": name, "precision": precision, "contender": contender, **r})
                    print(f"  {name} {precision} {contender}: infer {r['infer']:.1f}, "
                          f"train {r['train']:.1f} img/s", flush=True)
    serving_check = os.path.join(os.path.dirname(os.path.abspath(__file__)), "serve_gpu_check.py")
    for name in args.models if args.serving else []:
        r = measure(f"serving {name}", [name, "--batch", str(min(args.batch, 32))], script=serving_check)
        if r is not None:
            keep("serving", {"model": name, **r})
            print(f"  serving {name}: TF SavedModel on the GPU, {r['rate']:.1f} images/s, max "
                  f"|difference| against Keras on the CPU {r['max_difference']:.2g}", flush=True)
    print(f"\nGPU: {figures['gpu']}\nbatch {args.batch}, {args.size}x{args.size}, images/s (median of "
          f"{args.repeats} after {args.warmup} warm-up batches)")
    print("| model | precision | contender | infer | train |\n|---|---|---|---:|---:|")
    for row in figures["rows"]:
        print(f"| {row['model']} | {row['precision']} | {row['contender']} | {row['infer']:.1f} | "
              f"{row['train']:.1f} |")


if __name__ == "__main__":
    main()
