"""Inference and train-step throughput of keras_regnet against every CPU peer, side by side.

Each contender runs in its own fresh interpreter (PyTorch's and TensorFlow's thread pools
disturb each other in one process), one after another, in alternating order over --rounds
rounds; a contender's figure is the median over rounds of its per-process median (--repeats
timed batches after --warmup untimed ones). Prints the CPU model and the machine's fp32 matmul
rate (TensorFlow, 2048x2048), the table, and ours / theirs ratios. No assertion: figures depend
on the machine. ``--write-docs`` puts the table into docs/performance.md.

``--interleave`` starts every contender's process at once instead and alternates them batch by
batch (each timed batch runs while the others wait idle): on a machine whose speed drifts
between minutes (a shared VM), the ratios then compare batches timed seconds apart.

    python benchmarks/bench_models.py --models RegNetX004 RegNetY032
    python benchmarks/bench_models.py --models RegNetX004 --contenders keras_regnet kimm --rounds 1
    python benchmarks/bench_models.py --interleave --contenders keras_regnet keras_regnet_torch --repeats 9
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import platform
import statistics
import subprocess
import sys
import time
from typing import Callable

import interleave  # same folder
from timing_args import check_models, timing_parser  # same folder

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = pathlib.Path(__file__).resolve().parent.parent
SLOW_STEP_S = interleave.SLOW_STEP_S  # slower per batch: 2 timed batches, not --repeats
# "mixed": Keras's mixed_bfloat16 policy / torch.autocast(bfloat16) (benchmarks/gpu.py sets it).
PRECISION = os.environ.get("BENCH_PRECISION", "fp32")


def _median_rate(step: Callable[[], object], batch: int, warmup: int, repeats: int) -> float:
    """Images/s: the median of ``repeats`` timed batches after ``warmup`` untimed ones. A
    contender slower than SLOW_STEP_S per batch (an XLA grouped conv on a CPU) gets one warm-up
    and two timed batches: the ratio is then tens, not percent."""
    step()  # the first call traces / compiles
    start = time.perf_counter()
    step()
    times = [time.perf_counter() - start]
    if times[0] < SLOW_STEP_S:
        for _ in range(max(0, warmup - 2)):
            step()
        times = []
    while len(times) < (repeats if not times or times[0] < SLOW_STEP_S else 2):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return batch / statistics.median(times)


# ---- contenders: each builds its model and returns (infer_step, train_step) -----------------

def _keras_policy() -> None:
    if PRECISION == "mixed":
        import keras

        keras.mixed_precision.set_global_policy("mixed_bfloat16")


def _keras_steps(model, batch: int, size: int, jit_compile: bool = False):
    """Keras's predict / train steps. TensorFlow runs its graph un-jitted (XLA is slower on a
    CPU); JAX must jit (``jit_compile=False`` is op-by-op eager there)."""
    import numpy as np

    x = np.random.default_rng(0).uniform(0, 255, (batch, size, size, 3)).astype("float32")
    y = np.random.default_rng(1).integers(0, 1000, (batch,))
    model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy", jit_compile=jit_compile)
    return (lambda: model.predict_on_batch(x)), (lambda: model.train_on_batch(x, y))


def _keras_regnet_on(backend: str, name: str, batch: int, size: int, jit_compile: bool = False):
    """Our builder's steps; the worker's KERAS_BACKEND must be ``backend``."""
    import keras

    import keras_regnet as kr

    assert keras.backend.backend() == backend
    _keras_policy()
    return _keras_steps(getattr(kr, name)(weights=None, input_shape=(size, size, 3)), batch, size,
                        jit_compile=jit_compile)


def keras_regnet(name: str, batch: int, size: int):
    return _keras_regnet_on("tensorflow", name, batch, size)


def keras_regnet_folded(name: str, batch: int, size: int):
    """Inference of the exported form: batch norms folded into the convs (no train step)."""
    import keras_regnet as kr

    model = kr.fold_batch_norms(getattr(kr, name)(weights=None, input_shape=(size, size, 3)))
    return _keras_steps(model, batch, size)[0], None


def keras_regnet_hub(name: str, batch: int, size: int):
    """The KerasHub task (RegNetImageClassifier) on already-sized images: the network, not the
    converter (which the builders' rows do not run either)."""
    import keras_regnet  # noqa: F401 (first, as the docs say)
    from keras_regnet.hub import RegNetBackbone, RegNetImageClassifier

    _keras_policy()
    model = RegNetImageClassifier(RegNetBackbone(name), num_classes=1000, activation="softmax")
    return _keras_steps(model, batch, size)


def _tf_keras_model(name: str, size: int, native_grouped_conv: bool):
    import tf_keras

    model = getattr(tf_keras.applications, name)(weights=None, input_shape=(size, size, 3))
    if native_grouped_conv:
        # tf-keras routes every grouped conv through an XLA-compiled function; point this
        # instance's layers at their plain convolution op to measure the native kernel.
        for layer in model.layers:
            if getattr(layer, "groups", 1) > 1:
                layer._jit_compiled_convolution_op = layer.convolution_op
    return model


def tf_keras(name: str, batch: int, size: int):
    return _keras_steps(_tf_keras_model(name, size, True), batch, size)


def tf_keras_stock(name: str, batch: int, size: int):
    return _keras_steps(_tf_keras_model(name, size, False), batch, size)


def kimm(name: str, batch: int, size: int):
    import kimm as kimm_lib

    _keras_policy()
    model = getattr(kimm_lib.models, name)(weights=None, input_shape=(size, size, 3))
    return _keras_steps(model, batch, size)


def _torch_steps(model, batch: int, size: int, channels_last: bool):
    import contextlib

    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.manual_seed(0)
    model = model.to(device)
    x = torch.rand(batch, 3, size, size, device=device)
    y = torch.randint(0, 1000, (batch,), device=device)
    if channels_last:
        model, x = model.to(memory_format=torch.channels_last), x.to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)

    def autocast():
        if PRECISION == "mixed":
            return torch.autocast(device, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def sync():
        if device == "cuda":
            torch.cuda.synchronize()

    def infer():
        model.eval()
        with torch.inference_mode(), autocast():
            model(x)
        sync()

    def train():
        model.train()
        opt.zero_grad()
        with autocast():
            loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        sync()

    return infer, train


def pycls(name: str, batch: int, size: int):
    """The reference implementation, eager PyTorch, channels-last."""
    from keras_regnet.verify import build_reference

    return _torch_steps(build_reference(name, "pycls"), batch, size, channels_last=True)


def timm(name: str, batch: int, size: int):
    import timm as timm_lib

    arch = f"regnet{name[6].lower()}_{name[7:10]}"
    return _torch_steps(timm_lib.create_model(arch, pretrained=False), batch, size, channels_last=True)


def keras_regnet_jax(name: str, batch: int, size: int):
    """Our builder on the JAX backend (per-group convs and matmul 1x1 convs; jitted steps)."""
    return _keras_regnet_on("jax", name, batch, size, jit_compile=True)


def keras_regnet_jax_dp(name: str, batch: int, size: int):
    """Our builder on JAX under ``keras.distribution.DataParallel`` over every local device: the
    batch is split across them (it must divide by their number); rates are for the whole batch."""
    import jax
    import keras

    keras.distribution.set_distribution(keras.distribution.DataParallel(devices=jax.devices()))
    infer, train = _keras_regnet_on("jax", name, batch, size, jit_compile=True)
    # Over one device (a single-GPU host, or this CPU) Keras's second train step compiles
    # again (measured, RegNetX002 at 32x32: 23 s, 23 s, then 0.05 s per step), and the timing
    # would take it for the step's cost: one untimed step here, the usual one in _median_rate.
    train()
    return infer, train


def _keras_regnet_jax_grouped(per_group: bool, name: str, batch: int, size: int):
    """Our builder on JAX with the grouped convs' form forced (conv_ops.jax_grouped_conv_per_group
    chooses by device otherwise): what the other choice would cost on a given device."""
    from keras_regnet import conv_ops

    conv_ops.jax_grouped_conv_per_group = lambda: per_group
    return _keras_regnet_on("jax", name, batch, size, jit_compile=True)


def keras_regnet_jax_native(name: str, batch: int, size: int):
    """Keras's own grouped conv (one ``feature_group_count`` conv; cuDNN's on a GPU)."""
    return _keras_regnet_jax_grouped(False, name, batch, size)


def keras_regnet_jax_per_group(name: str, batch: int, size: int):
    """One plain conv per group (what a CPU and a multi-device DataParallel run get)."""
    return _keras_regnet_jax_grouped(True, name, batch, size)


def keras_regnet_torch(name: str, batch: int, size: int):
    """Our builder on the PyTorch backend (eager: Keras's torch.compile path was slower)."""
    return _keras_regnet_on("torch", name, batch, size)


CONTENDERS = {
    "keras_regnet": ("keras_regnet (TF)", {}),
    "keras_regnet_folded": ("keras_regnet, BN folded (what export serves; TF)", {}),
    "keras_regnet_hub": ("keras_regnet KerasHub RegNetImageClassifier (TF)", {}),
    "tf_keras": ("tf-keras 2.21, grouped conv on the native kernel", {}),
    "tf_keras_stock": ("tf-keras 2.21, stock (XLA grouped conv)", {}),
    "kimm": ("kimm (Keras 3, TF)", {}),
    "pycls": ("pycls, PyTorch eager, channels-last", {}),
    "timm": ("timm, PyTorch eager, channels-last", {}),
    "keras_regnet_jax": ("keras_regnet (JAX, CPU)", {"KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu"}),
    "keras_regnet_jax_native": ("keras_regnet (JAX, CPU), Keras's feature_group_count grouped conv",
                                {"KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu"}),
    "keras_regnet_jax_per_group": ("keras_regnet (JAX, CPU), one conv per group (the default there)",
                                   {"KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu"}),
    # On a CPU, two host devices of one core each: what a data-parallel step costs here.
    "keras_regnet_jax_dp": ("keras_regnet (JAX, DataParallel, 2 CPU devices)",
                            {"KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu",
                             "XLA_FLAGS": "--xla_force_host_platform_device_count=2"}),
    "keras_regnet_torch": ("keras_regnet (PyTorch)", {"KERAS_BACKEND": "torch"}),
    # The next four run another contender's worker (SAME_WORKER) under one setting of
    # `import keras_regnet` turned off: what the allocator (keras_regnet/allocator.py) and the
    # XLA flag (keras_regnet/xla_cpu.py) are worth.
    "keras_regnet_system_malloc": ("keras_regnet (TF), glibc's malloc defaults",
                                   {"KERAS_REGNET_ALLOCATOR": "system"}),
    "keras_regnet_jax_ynnpack": ("keras_regnet (JAX, CPU), YNNPACK convolutions",
                                 {"KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu",
                                  "KERAS_REGNET_XLA_CONVOLUTIONS": "ynnpack"}),
    "keras_regnet_jax_system_malloc": ("keras_regnet (JAX, CPU), glibc's malloc defaults",
                                       {"KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu",
                                        "KERAS_REGNET_ALLOCATOR": "system"}),
    "keras_regnet_torch_system_malloc": ("keras_regnet (PyTorch), glibc's malloc defaults",
                                         {"KERAS_BACKEND": "torch", "KERAS_REGNET_ALLOCATOR": "system"}),
}


SAME_WORKER = {"keras_regnet_system_malloc": "keras_regnet", "keras_regnet_jax_ynnpack": "keras_regnet_jax",
               "keras_regnet_jax_system_malloc": "keras_regnet_jax",
               "keras_regnet_torch_system_malloc": "keras_regnet_torch"}


def steps_builder(contender: str) -> Callable:
    """The function that builds ``contender``'s steps (its own name, or SAME_WORKER's)."""
    return globals()[SAME_WORKER.get(contender, contender)]


# Keras's XLA grouped conv on a CPU: minutes per RegNetY032 train step.
XLA_CONTENDERS = {"tf_keras_stock", "kimm"}


def matmul_gflops() -> float:
    """The machine's fp32 matmul rate through TensorFlow (2048x2048, median of 10)."""
    import tensorflow as tf

    a = tf.random.normal([2048, 2048])
    tf.linalg.matmul(a, a).numpy()
    times = []
    for _ in range(10):
        start = time.perf_counter()
        tf.linalg.matmul(a, a).numpy()
        times.append(time.perf_counter() - start)
    return 2 * 2048**3 / statistics.median(times) / 1e9


def worker(contender: str, name: str, batch: int, size: int, warmup: int, repeats: int) -> dict:
    sys.path.insert(0, str(ROOT))
    infer_step, train_step = steps_builder(contender)(name, batch, size)
    return {"infer": _median_rate(infer_step, batch, warmup, repeats),
            "train": _median_rate(train_step, batch, warmup, repeats) if train_step else None}


def run_worker(args: list[str], env: dict | None = None, script: str = __file__,
               timeout: float | None = None) -> dict:
    """Runs ``script`` with ``args`` in a fresh interpreter; its last stdout line, as JSON.
    RuntimeError with the worker's last stderr line if it fails, or if it has not ended
    within ``timeout`` seconds (it is then killed)."""
    try:
        out = subprocess.run([sys.executable, script, *args], capture_output=True, text=True,
                             env={**os.environ, **(env or {})}, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"no result within {timeout:g} s") from None
    if out.returncode:
        last = out.stderr.strip().splitlines()[-1] if out.stderr.strip() else "failed"
        raise RuntimeError(last)
    return json.loads(out.stdout.strip().splitlines()[-1])


def serve(contender: str, name: str, batch: int, size: int) -> None:
    """``--interleave``'s worker: the contender's steps, served one at a time (interleave.py)."""
    sys.path.insert(0, str(ROOT))
    interleave.serve(dict(zip(("infer", "train"), steps_builder(contender)(name, batch, size))))


def interleaved_rates(name: str, contenders: list[str], common: list[str], batch: int, warmup: int,
                      repeats: int) -> dict:
    """{contender: {"infer", "train": images/s}}: every contender's process alive at once, its
    timed batches alternating with the others' (interleave.py)."""
    workers = {c: interleave.ServingWorker([sys.executable, __file__, "--worker", c, "--serve", *common],
                                           CONTENDERS[c][1]) for c in contenders}
    times = interleave.interleave(workers, {"infer": repeats, "train": repeats}, warmup,
                                  report=lambda line: print(f"  {name}{line[1:]}", flush=True))
    return {c: {k: (batch / statistics.median(ts) if ts else None) for k, ts in kinds.items()}
            for c, kinds in times.items()}


def cpu_model() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return f"{line.split(':', 1)[1].strip()}, {os.cpu_count()} logical cores"
    except OSError:
        pass
    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} logical cores"


def table(results: dict, flops: dict, matmul: float, contenders: list[str]) -> str:
    lines = ["| model | contender | infer img/s | train img/s | ours / it, infer | ours / it, train |",
             "|---|---|---:|---:|---:|---:|"]
    for name, rows in results.items():
        ours = rows.get("keras_regnet")
        for contender in contenders:
            if contender not in rows:
                continue
            r = rows[contender]
            ratios = [f"{ours[k] / r[k]:.2f}" if ours and r[k] else "-" for k in ("infer", "train")]
            train = f"{r['train']:.1f}" if r["train"] else "-"
            lines.append(f"| {name} | {CONTENDERS[contender][0]} | {r['infer']:.1f} | {train} | "
                         f"{ratios[0]} | {ratios[1]} |")
        if ours:
            share = ours["infer"] * flops[name] / 1e9 / matmul
            lines.append(f"| {name} | ours at {2 * flops[name] / 1e9:.3f} GFLOP/image | "
                         f"{ours['infer'] * 2 * flops[name] / 1e9:.0f} GFLOP/s = {2 * share:.0%} of matmul "
                         f"| | | |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = timing_parser(__doc__, models=["RegNetX004", "RegNetY032"], batch=32, size=224, warmup=2,
                           repeats=5, rounds=2)
    parser.add_argument("--contenders", nargs="+", default=list(CONTENDERS), choices=list(CONTENDERS))
    parser.add_argument("--xla-models", nargs="*", default=["RegNetX004"],
                        help="the models the XLA-grouped-conv contenders (stock tf-keras, kimm) run: "
                             "a RegNetY032 train step takes minutes there")
    parser.add_argument("--write-docs", action="store_true", help="rewrite the table in docs/performance.md")
    parser.add_argument("--interleave", action="store_true",
                        help="every contender's process alive at once, alternating batch by batch "
                             "(--repeats timed batches each; --rounds is not used)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker == "matmul":
        print(json.dumps({"gflops": matmul_gflops()}))
        return
    if args.worker and args.serve:
        serve(args.worker, args.models[0], args.batch, args.size)
        return
    if args.worker:
        rates = worker(args.worker, args.models[0], args.batch, args.size, args.warmup, args.repeats)
        print(json.dumps(rates))
        return
    args.models, args.xla_models = check_models(parser, args.models), check_models(parser, args.xla_models)

    sys.path.insert(0, str(ROOT))
    from keras_regnet.design.complexity import count
    from keras_regnet.variants import get_spec

    cpu = cpu_model()
    matmul = run_worker(["--worker", "matmul"], {})["gflops"]
    print(f"CPU: {cpu}; fp32 matmul (TensorFlow, 2048^2): {matmul:.0f} GFLOP/s", flush=True)
    flops = {name: count(get_spec(name))["flops"] for name in args.models}
    runs: dict = {name: {c: [] for c in args.contenders} for name in args.models}
    if args.interleave:
        for name in args.models:
            common = ["--models", name, "--batch", str(args.batch), "--size", str(args.size)]
            contenders = [c for c in args.contenders if c not in XLA_CONTENDERS or name in args.xla_models]
            for contender, rates in interleaved_rates(name, contenders, common, args.batch, args.warmup,
                                                      args.repeats).items():
                runs[name][contender].append(rates)
                print(f"  {name} {contender}: {rates}", flush=True)
    else:
        for round_index in range(args.rounds):
            order = args.contenders if round_index % 2 == 0 else list(reversed(args.contenders))
            for name in args.models:
                for contender in order:
                    if contender in XLA_CONTENDERS and (name not in args.xla_models or round_index > 0):
                        continue  # minutes per train step: one round, the named models only
                    common = ["--models", name, "--batch", str(args.batch), "--size", str(args.size),
                              "--warmup", str(args.warmup), "--repeats", str(args.repeats)]
                    try:
                        result = run_worker(["--worker", contender, *common], CONTENDERS[contender][1])
                    except RuntimeError as err:
                        print(f"  {name} {contender}: unavailable ({err})", flush=True)
                        continue
                    runs[name][contender].append(result)
                    print(f"  round {round_index + 1} {name} {contender}: {result}", flush=True)

    def median(values):
        values = [v for v in values if v is not None]
        return statistics.median(values) if values else None

    results = {name: {c: {k: median(r[k] for r in rs) for k in ("infer", "train")}
                      for c, rs in rows.items() if rs} for name, rows in runs.items()}
    text = table(results, flops, matmul, args.contenders)
    timing = (f"each contender's process alive at once, the median of its {args.repeats} timed batches, "
              f"alternating with the others' batch by batch, after {max(2, args.warmup)} warm-up ones"
              if args.interleave else
              f"median over {args.rounds} alternating rounds of each process's median of "
              f"{args.repeats} timed batches after {args.warmup} warm-up ones")
    header = (f"CPU: {cpu}; fp32 matmul {matmul:.0f} GFLOP/s. Batch {args.batch}, {args.size}x{args.size}, "
              f"images/s, {timing}.\n\n")
    print("\n" + header + text)
    if args.write_docs:
        from keras_regnet.tables import replace_generated

        path = ROOT / "docs" / "performance.md"
        path.write_text(replace_generated(path.read_text(), "benchmark table", header + text,
                                          command="python benchmarks/bench_models.py --write-docs"))
        print(f"rewrote {path}")


if __name__ == "__main__":
    main()
