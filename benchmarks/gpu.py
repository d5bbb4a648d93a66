"""GPU throughput: keras_regnet on the TensorFlow, JAX and PyTorch backends against timm, same card,
and JAX data-parallel over all of the host's GPUs (keras.distribution.DataParallel).

Ready for the day a GPU is at hand; no GPU figure has been measured yet (docs/performance.md).
Each (contender, precision) runs in its own interpreter through benchmarks/bench_models.py's
worker: fp32, then "mixed" (Keras mixed_bfloat16 policy; torch.autocast bfloat16). Contenders
whose framework is missing (TensorFlow on a JAX-only machine) are reported as unavailable.
Then the serving check (benchmarks/serve_gpu_check.py): each model's SavedModel served on the
GPU by plain TensorFlow in a fresh process, against the Keras model on the CPU.

    python benchmarks/gpu.py --models RegNetX004 RegNetY032 --batch 128
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_models  # noqa: E402
from timing_args import check_models, timing_parser  # noqa: E402

# JAX on the GPU: the CPU contender's JAX_PLATFORMS=cpu is dropped.
# keras_regnet_jax_dp: DataParallel over every GPU of the host (the batch split across them).
GPU_CONTENDERS = {"keras_regnet": {}, "keras_regnet_jax": {"KERAS_BACKEND": "jax"},
                  "keras_regnet_jax_dp": {"KERAS_BACKEND": "jax"},
                  "keras_regnet_torch": {"KERAS_BACKEND": "torch"}, "timm": {}}


def main() -> None:
    parser = timing_parser(__doc__, models=["RegNetX004", "RegNetY032"], batch=128, size=224, warmup=3,
                           repeats=10)
    parser.add_argument("--precisions", nargs="+", default=["fp32", "mixed"], choices=["fp32", "mixed"])
    parser.add_argument("--contenders", nargs="+", default=list(GPU_CONTENDERS), choices=list(GPU_CONTENDERS))
    args = parser.parse_args()
    args.models = check_models(parser, args.models)

    rows = []
    for name in args.models:
        for precision in args.precisions:
            for contender in args.contenders:
                env = GPU_CONTENDERS[contender]
                common = ["--models", name, "--batch", str(args.batch), "--size", str(args.size),
                          "--warmup", str(args.warmup), "--repeats", str(args.repeats)]
                try:
                    env = {**env, "BENCH_PRECISION": precision}
                    r = bench_models.run_worker(["--worker", contender, *common], env)
                except RuntimeError as err:
                    print(f"  {name} {precision} {contender}: unavailable ({err})", flush=True)
                    continue
                rows.append((name, precision, contender, r))
                print(f"  {name} {precision} {contender}: infer {r['infer']:.1f}, "
                      f"train {r['train']:.1f} img/s", flush=True)
    for name in args.models:
        check = os.path.join(os.path.dirname(os.path.abspath(__file__)), "serve_gpu_check.py")
        try:
            r = bench_models.run_worker([name, "--batch", str(min(args.batch, 32))], script=check)
            print(f"  serving {name}: TF SavedModel on the GPU, {r['rate']:.1f} images/s, max "
                  f"|difference| against Keras on the CPU {r['max_difference']:.2g}", flush=True)
        except RuntimeError as err:
            print(f"  serving {name}: unavailable ({err})", flush=True)
    print(f"\nbatch {args.batch}, {args.size}x{args.size}, images/s (median of {args.repeats} after "
          f"{args.warmup} warm-up batches)")
    print("| model | precision | contender | infer | train |\n|---|---|---|---:|---:|")
    for name, precision, contender, r in rows:
        print(f"| {name} | {precision} | {contender} | {r['infer']:.1f} | {r['train']:.1f} |")


if __name__ == "__main__":
    main()
