"""Where the int8 files' time goes: float32 against int8 per layer role, in ONNX Runtime and OpenVINO.

bench_deploy.py says how much faster each int8 file is; this says why, from each runtime's own
profiler: the kernel time of every node, grouped by the role of the layer it computes (the
stem, the 1x1 convs, the grouped 3x3 convs, squeeze-excitation, the input normalisation's
mean subtraction, the head, ...), for the float32 file and the int8 one (quantise and
dequantise nodes count with the layer they feed or leave; a node that fuses several layers
counts under the first one its name gives: ONNX Runtime's float32 convs take in the residual
add and ReLU after them). Each file runs in its own
process; prints the CPU, its int8 instructions and one table per runtime, no assertion. Both
runtimes read the same two ONNX files, the folded float32 one and the QDQ int8 one (OpenVINO
converts them as it loads them, as its int8 IR is made, except that the IR also subsamples
before its strided 1x1 convs: keras_regnet.int8.subsample_strided_pointwise, measured as fast):
its float IR written from Keras keeps no layer names.

    python benchmarks/profile_int8.py --model RegNetX004
    python benchmarks/profile_int8.py --model RegNetY004 --runtimes openvino --batch 1 --steps 20
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import pathlib
import tempfile
import time

from timing_args import check_models  # same folder

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
THREADS = 2
WARMUP = 2  # untimed calls before the profiled ones
RUNTIMES = {"onnxruntime": "ONNX Runtime", "openvino": "OpenVINO"}
# Layer-name parts (keras_regnet's names survive every exporter) -> role, first match wins.
ROLES = (("preprocessing", "input normalisation (x - mean)"), ("stem", "stem 3x3 conv"),
         ("_se_", "squeeze-excitation"), ("conv1", "1x1 conv (conv1)"),
         ("conv2", "3x3 grouped conv (conv2)"), ("conv3", "1x1 conv (conv3)"),
         ("shortcut", "1x1 shortcut conv"), ("_add", "residual add"), ("_out", "residual add"),
         ("pool", "head"), ("predictions", "head"), ("softmax", "head"))
OTHER = "nodes with no layer name (layout reorders, quantisation arithmetic)"


def role(node_name: str) -> str:
    """The role of the layer a runtime's node computes, from the Keras layer name in it."""
    name = node_name.lower()
    return next((label for part, label in ROLES if part in name), OTHER)


def _onnxruntime_profile(path: str, x, steps: int) -> dict:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = THREADS
    options.enable_profiling = True
    options.profile_file_prefix = os.path.join(tempfile.mkdtemp(), "ort")
    session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    feed = {session.get_inputs()[0].name: x}
    for _ in range(WARMUP):
        session.run(None, feed)
    start = time.perf_counter()
    for _ in range(steps):
        session.run(None, feed)
    wall = time.perf_counter() - start
    events = json.loads(pathlib.Path(session.end_profiling()).read_text())
    # The profile holds every call since the session began: keep the timed ones, those after
    # the last warm-up call's "model_run" ends.
    runs = sorted((e["ts"], e["ts"] + e["dur"]) for e in events if e.get("name") == "model_run")
    timed_from = runs[WARMUP - 1][1]
    totals: collections.Counter = collections.Counter()
    for event in events:
        if (event.get("cat") == "Node" and event["name"].endswith("_kernel_time")
                and event["ts"] >= timed_from):
            totals[role(event["name"])] += event["dur"] / 1000 / steps
    return {"wall": 1000 * wall / steps, "roles": dict(totals)}


def _openvino_profile(path: str, x, steps: int) -> dict:
    import openvino as ov

    compiled = ov.Core().compile_model(path, "CPU", {"INFERENCE_PRECISION_HINT": "f32",
                                                     "INFERENCE_NUM_THREADS": THREADS, "PERF_COUNT": True})
    request = compiled.create_infer_request()
    for _ in range(WARMUP):
        request.infer([x])
    totals: collections.Counter = collections.Counter()
    wall = 0.0
    for _ in range(steps):
        start = time.perf_counter()
        request.infer([x])
        wall += time.perf_counter() - start
        for node in request.get_profiling_info():  # the last call's times
            totals[role(node.node_name)] += node.real_time.total_seconds() * 1000 / steps
    return {"wall": 1000 * wall / steps, "roles": dict(totals)}


def worker(runtime: str, path: str, batch: int, size: int, steps: int) -> dict:
    import numpy as np

    x = np.random.default_rng(0).uniform(0, 255, (batch, size, size, 3)).astype("float32")
    return (_onnxruntime_profile if runtime == "onnxruntime" else _openvino_profile)(path, x, steps)


def table(runtime: str, fp32: dict, int8: dict) -> str:
    """One runtime: ms per call of each role, float32 and int8, and the speed-up."""
    labels = list(dict.fromkeys([label for _, label in ROLES] + [OTHER]))
    rows = [f"| {RUNTIMES[runtime]} | fp32 ms | int8 ms | int8 speed-up |", "|---|---:|---:|---:|"]
    for label in labels:
        a, b = fp32["roles"].get(label, 0.0), int8["roles"].get(label, 0.0)
        if a or b:
            rows.append(f"| {label} | {a:.1f} | {b:.1f} | {f'{a / b:.2f}x' if a and b else '-'} |")
    a, b = sum(fp32["roles"].values()), sum(int8["roles"].values())
    rows.append(f"| all nodes | {a:.1f} | {b:.1f} | {a / b:.2f}x |")
    rows.append(f"| call, wall clock (profiled) | {fp32['wall']:.1f} | {int8['wall']:.1f} | "
                f"{fp32['wall'] / int8['wall']:.2f}x |")
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="RegNetX004")
    parser.add_argument("--runtimes", nargs="+", default=list(RUNTIMES), choices=list(RUNTIMES))
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--worker", choices=list(RUNTIMES), help=argparse.SUPPRESS)
    parser.add_argument("--path", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.path, args.batch, args.size, args.steps)))
        return

    import bench_deploy
    from bench_models import cpu_model, run_worker

    (args.model,) = check_models(parser, [args.model])
    common = ["--batch", str(args.batch), "--size", str(args.size), "--steps", str(args.steps)]
    with tempfile.TemporaryDirectory() as directory:
        paths = bench_deploy.export_all(args.model, directory, args.size, {"onnx", "onnx_int8"})
        profiles = {(r, kind): run_worker(["--worker", r, "--path", paths["onnx" + kind], *common],
                                          script=__file__)
                    for r in args.runtimes for kind in ("", "_int8")}
    print(f"CPU: {cpu_model()} (int8 instructions: {bench_deploy.int8_instructions()}). {args.model}, "
          f"batch {args.batch}, {args.size}x{args.size}, {THREADS} threads; kernel time per call "
          f"from each runtime's profiler, mean over {args.steps} calls after {WARMUP} untimed ones.\n")
    for r in args.runtimes:
        print(table(r, profiles[r, ""], profiles[r, "_int8"]) + "\n")


if __name__ == "__main__":
    main()
