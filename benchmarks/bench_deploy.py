"""Batch-1 and batch-32 latency of every deployment format, each runtime in its own process.

Exports each model once (folded: SavedModel, ONNX, LiteRT, OpenVINO), then times it in a
fresh interpreter per runtime, as a deployment runs it, never importing keras_regnet there:
plain TensorFlow with oneDNN off (its default on AVX2 CPUs) and on, onnxruntime, LiteRT
(XNNPACK, 2 threads) and OpenVINO (float32), beside PyTorch eager (timm) in float32. Median
of --repeats calls after warm-up; prints the CPU and a table, no assertion. ``--write-docs``
puts the table into docs/deploy.md.

``--int8`` adds the int8 files (LiteRT full integer, ONNX Runtime QDQ, OpenVINO from the QDQ file),
calibrated on 32 demo images, PyTorch's own int8 path (timm's network through torch.ao's FX
post-training quantisation, x86 backend, calibrated in its worker on random pixels: latency does
not depend on them), and a second table: fp32 vs int8 per runtime, with the speed-up
(``--write-docs`` then writes that table only, into the block of docs/deploy.md for CPUs with
VNNI or for those without: int8 kernels gain far more with it).

``--interleave`` keeps every runtime's process alive at once and alternates their timed calls
one by one (benchmarks/interleave.py), for machines whose speed drifts within minutes.

    python benchmarks/bench_deploy.py --models RegNetX004 RegNetY032
    python benchmarks/bench_deploy.py --models RegNetX004 RegNetY004 --int8 --write-docs
    python benchmarks/bench_deploy.py --models RegNetX004 --int8 --interleave --runtimes litert openvino
    python benchmarks/bench_deploy.py --worker litert --path m.tflite --model RegNetX004
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import statistics
import sys
import tempfile
import time

import interleave  # same folder
from timing_args import check_models, timing_parser  # same folder

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = pathlib.Path(__file__).resolve().parent.parent
THREADS = 2
RUNTIMES = {  # name -> (column title, environment)
    "tf_onednn_off": ("TF SavedModel, oneDNN off", {"TF_ENABLE_ONEDNN_OPTS": "0"}),
    "tf_onednn_on": ("TF SavedModel, oneDNN on", {"TF_ENABLE_ONEDNN_OPTS": "1"}),
    "onnxruntime": ("onnxruntime", {}),
    "litert": ("LiteRT (XNNPACK)", {}),
    "openvino": ("OpenVINO", {}),
    "timm": ("PyTorch eager (timm)", {}),
}
INT8_RUNTIMES = {"onnxruntime_int8": ("onnxruntime int8 (QDQ)", {}), "litert_int8": ("LiteRT int8", {}),
                 "openvino_int8": ("OpenVINO int8 (from QDQ)", {}),
                 "timm_int8": ("PyTorch int8 (timm, torch.ao FX, x86)", {})}
FILES = {"tf_onednn_off": "saved_model", "tf_onednn_on": "saved_model", "onnxruntime": "onnx",
         "litert": "litert", "openvino": "openvino", "onnxruntime_int8": "onnx_int8",
         "litert_int8": "litert_int8", "openvino_int8": "openvino_int8"}
TIMM_NAMES = {"RegNetX002": "regnetx_002", "RegNetX004": "regnetx_004", "RegNetY004": "regnety_004",
              "RegNetY002": "regnety_002", "RegNetY032": "regnety_032"}


def _median_ms(call, repeats: int, warmup: int) -> float:
    for _ in range(warmup):
        call()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def _runner(runtime: str, path: str, model: str, size: int = 224):
    """A function images -> probabilities, built the way the runtime's users build it."""
    if runtime.startswith("tf_"):
        import tensorflow as tf

        serve = tf.saved_model.load(path).signatures["serving_default"]
        return lambda x: serve(images=tf.constant(x))["probabilities"].numpy()
    if runtime == "timm_int8":
        return _torch_int8_runner(model, size)
    runtime = runtime.removesuffix("_int8")  # the same runtime, an int8 file
    if runtime == "onnxruntime":
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = THREADS
        session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        return lambda x: session.run(None, {session.get_inputs()[0].name: x})[0]
    if runtime == "litert":
        import numpy as np
        from ai_edge_litert.interpreter import Interpreter

        interpreter = Interpreter(model_path=path, num_threads=THREADS)
        given = interpreter.get_input_details()[0]
        index, dtype, shape, one_at_a_time = given["index"], given["dtype"], [None], [False]

        def run(x):
            if one_at_a_time[0] and len(x) > 1:  # as that file's users must run a batch
                return np.concatenate([run(image[None]) for image in x])
            if shape[0] != x.shape:
                try:
                    interpreter.resize_tensor_input(index, x.shape)
                    interpreter.allocate_tensors()
                except RuntimeError:  # a fixed-shape (int8) file XNNPACK cannot re-batch
                    interpreter.resize_tensor_input(index, (1, *x.shape[1:]))
                    interpreter.allocate_tensors()
                    shape[0], one_at_a_time[0] = (1, *x.shape[1:]), True
                    return run(x)
                shape[0] = x.shape
            interpreter.set_tensor(index, x.astype(dtype))  # an int8 file takes the uint8 pixels
            interpreter.invoke()
            return interpreter.get_tensor(interpreter.get_output_details()[0]["index"])
        return run
    if runtime == "openvino":
        import openvino as ov

        compiled = ov.Core().compile_model(path, "CPU", {"INFERENCE_PRECISION_HINT": "f32",
                                                         "INFERENCE_NUM_THREADS": THREADS})
        return lambda x: compiled(x)[0]
    if runtime == "timm":
        import torch

        return _torch_runner(_timm_net(model).to(memory_format=torch.channels_last))
    raise ValueError(f"unknown runtime {runtime!r}")


def _timm_net(model: str):
    """timm's network of ``model`` (random weights), on THREADS threads, for inference."""
    import timm
    import torch

    torch.set_num_threads(THREADS)
    return timm.create_model(TIMM_NAMES[model], pretrained=False).eval()


def _torch_runner(net):
    """images (NHWC float32) -> probabilities through a PyTorch network, channels-last."""
    import torch

    def run(x):
        with torch.inference_mode():
            tensor = torch.from_numpy(x).permute(0, 3, 1, 2).contiguous(memory_format=torch.channels_last)
            return net(tensor).softmax(-1).numpy()
    return run


def _torch_int8_runner(model: str, size: int):
    """timm's network quantised by PyTorch itself: torch.ao's FX graph-mode post-training
    quantisation (x86 backend: per-channel int8 weights, uint8 activations), calibrated on 8
    batches of random pixels. torch.ao.quantization is deprecated in favour of torchao, which
    is not installed here; it still ships and runs in this torch."""
    import warnings

    import torch

    net = _timm_net(model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # its deprecation notice, once per call
        from torch.ao.quantization import get_default_qconfig_mapping
        from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

        example = torch.rand(1, 3, size, size) * 255
        prepared = prepare_fx(net, get_default_qconfig_mapping("x86"), (example,))
        with torch.inference_mode():
            for _ in range(8):
                prepared(torch.rand(4, 3, size, size) * 255)
        return _torch_runner(convert_fx(prepared))


BATCHES = ((1, 4, 3), (32, 1, 1))  # (batch, timed calls per --repeats, warm-up calls)


def _calls(runtime: str, path: str, model: str, size: int) -> dict:
    """{"b1", "b32": a call of the runtime's file on a batch of that many random images}."""
    import numpy as np

    run = _runner(runtime, path, model, size)
    rng = np.random.default_rng(0)
    batches = {f"b{b}": rng.uniform(0, 255, (b, size, size, 3)).astype("float32") for b, _, _ in BATCHES}
    return {kind: (lambda x=x: run(x)) for kind, x in batches.items()}


def worker(runtime: str, path: str, model: str, size: int, repeats: int) -> dict:
    calls = _calls(runtime, path, model, size)
    return {f"b{batch}_ms": _median_ms(calls[f"b{batch}"], repeats * per_repeat, warm)
            for batch, per_repeat, warm in BATCHES}


def interleaved_latencies(model: str, runtimes: list[str], paths: dict, size: int, repeats: int) -> dict:
    """{runtime: {"b1_ms", "b32_ms"}}: every runtime's process alive at once, their timed calls
    alternating one by one (interleave.py)."""
    workers = {r: interleave.ServingWorker(
        [sys.executable, __file__, "--worker", r, "--serve", "--path", paths.get(FILES.get(r, ""), ""),
         "--model", model, "--size", str(size)], {**RUNTIMES, **INT8_RUNTIMES}[r][1]) for r in runtimes}
    times = interleave.interleave(workers, {f"b{b}": repeats * n for b, n, _ in BATCHES},
                                  report=lambda line: print(f"{model}{line[1:]}", flush=True))
    return {r: {f"{kind}_ms": 1000 * statistics.median(ts) for kind, ts in kinds.items() if ts}
            for r, kinds in times.items()}


def export_all(model_name: str, directory: str, size: int, wanted: set[str]) -> dict:
    """The files the runtimes read, {format: path}, for the formats in ``wanted`` (FILES'
    values; the int8 ones calibrated on 32 digit images)."""
    sys.path.insert(0, str(ROOT))
    import keras_regnet
    from keras_regnet import export, formats
    from keras_regnet import int8 as int8_lib
    from keras_regnet.preprocessing import EvalTransform

    model = keras_regnet.RegNet(model_name, weights=None, input_shape=(None, None, 3))
    folded = export.fold_for_inference(model)
    paths = {}
    if "saved_model" in wanted:
        paths["saved_model"] = export.export_saved_model(
            model, os.path.join(directory, "saved"), 1, transform=EvalTransform.for_size(size))
    for fmt in ("onnx", "litert", "openvino"):
        if fmt in wanted:
            paths[fmt] = formats.export_keras_format(
                folded, os.path.join(directory, f"{model_name}{formats.SUFFIXES[fmt]}"), fmt)
    if wanted & {"litert_int8", "onnx_int8", "openvino_int8"}:
        import numpy as np

        from keras_regnet.training.demo import digit_images

        # Latency does not depend on what calibrated the file; digits are real images at hand.
        calibration = digit_images(size)["validation"][0][:32].astype(np.float32)
        stem = os.path.join(directory, f"{model_name}_int8")
        if "litert_int8" in wanted:
            paths["litert_int8"] = export.export_tflite(model, stem + ".tflite", "int8", image_size=size,
                                                        calibration=calibration)
        if "onnx_int8" in wanted:
            paths["onnx_int8"] = int8_lib.export_onnx_int8(model, stem + ".onnx", calibration)
        if "openvino_int8" in wanted:
            paths["openvino_int8"] = int8_lib.export_openvino_int8(model, stem + ".xml", calibration)
    return paths


NO_INT8_INSTRUCTIONS = "no VNNI or AMX"


def int8_instructions() -> str:
    """The CPU's int8 dot-product instructions, which decide what an int8 kernel can gain: VNNI
    multiplies and accumulates 8-bit values in one instruction, AMX in tiles; AVX2 has neither."""
    try:
        flags = next((line.split(":", 1)[1].split() for line in open("/proc/cpuinfo")
                      if line.startswith("flags")), [])
    except OSError:
        flags = []
    found = [label for flag, label in (("amx_int8", "AMX-INT8"), ("avx512_vnni", "AVX-512 VNNI"),
                                       ("avx_vnni", "AVX-VNNI")) if flag in flags]
    return ", ".join(found) if found else NO_INT8_INSTRUCTIONS


def int8_docs_block(instructions: str) -> str:
    """Each class of CPU keeps its own int8 table in docs/deploy.md: with and without VNNI."""
    return "int8-latency" if instructions == NO_INT8_INSTRUCTIONS else "int8-latency-vnni"


def table(results: dict, cpu: str, size: int) -> str:
    columns = [r for r in RUNTIMES if any(r in per for per in results.values())]
    lines = [f"Batch-1 / batch-32 latency in ms (median), {size}x{size}, float32, {THREADS} threads; {cpu}.",
             "", "| model | " + " | ".join(RUNTIMES[c][0] for c in columns) + " |",
             "|---" * (len(columns) + 1) + "|"]
    for model, per in results.items():
        cells = [f"{per[c]['b1_ms']:.1f} / {per[c]['b32_ms']:.0f}" if c in per else "-" for c in columns]
        lines.append(f"| {model} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def int8_table(results: dict, cpu: str, size: int) -> str:
    """fp32 vs int8 per runtime, with the speed-up, beside PyTorch eager (timm) fp32."""
    lines = [f"Batch-1 / batch-32 latency in ms (median), {size}x{size}, {THREADS} threads; {cpu}.", "",
             "| model | runtime | fp32 | int8 | int8 speed-up |", "|---|---|---:|---:|---:|"]
    for model, per in results.items():
        for fp32 in ("litert", "onnxruntime", "openvino", "timm"):
            q = per.get(f"{fp32}_int8")
            if fp32 not in per or q is None:
                continue
            f = per[fp32]
            lines.append(f"| {model} | {RUNTIMES[fp32][0]} | {f['b1_ms']:.1f} / {f['b32_ms']:.0f} | "
                         f"{q['b1_ms']:.1f} / {q['b32_ms']:.0f} | {f['b1_ms'] / q['b1_ms']:.2f}x / "
                         f"{f['b32_ms'] / q['b32_ms']:.2f}x |")
        if "timm" in per and "timm_int8" not in per:
            t = per["timm"]
            timm = f"{t['b1_ms']:.1f} / {t['b32_ms']:.0f}"
            lines.append(f"| {model} | {RUNTIMES['timm'][0]} | {timm} | - | - |")
    return "\n".join(lines) + "\n"


def write_docs(text: str, block: str = "latency") -> None:
    path = ROOT / "docs" / "deploy.md"
    begin, end = f"<!-- BEGIN GENERATED: {block} -->", f"<!-- END GENERATED: {block} -->"
    doc = path.read_text(encoding="utf-8")
    head, rest = doc.split(begin)
    path.write_text(head + begin + "\n" + text + end + rest.split(end)[1], encoding="utf-8")


def main() -> None:
    parser = timing_parser(__doc__, models=["RegNetX004", "RegNetY032"], size=224, repeats=5)
    parser.add_argument("--runtimes", nargs="+", default=list(RUNTIMES), choices=list(RUNTIMES))
    parser.add_argument("--int8", action="store_true", help="also the int8 files of each runtime")
    parser.add_argument("--write-docs", action="store_true")
    parser.add_argument("--worker", choices=list(RUNTIMES) + list(INT8_RUNTIMES), help=argparse.SUPPRESS)
    parser.add_argument("--path", help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    parser.add_argument("--interleave", action="store_true",
                        help="every runtime's process alive at once, their timed calls alternating")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker and args.serve:
        interleave.serve(_calls(args.worker, args.path, args.model, args.size))
        return
    if args.worker:
        print(json.dumps(worker(args.worker, args.path, args.model, args.size, args.repeats)))
        return
    args.models = check_models(parser, args.models)

    from bench_models import cpu_model, run_worker  # same folder

    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for model in args.models:
            runtimes = args.runtimes + [f"{r}_int8" for r in args.runtimes
                                        if args.int8 and f"{r}_int8" in INT8_RUNTIMES]
            paths = export_all(model, os.path.join(tmp, model), args.size,
                               {FILES[r] for r in runtimes if r in FILES})
            if args.interleave:
                results[model] = interleaved_latencies(model, runtimes, paths, args.size, args.repeats)
                print(model, results[model], flush=True)
                continue
            results[model] = {}
            for runtime in runtimes:
                path = paths.get(FILES.get(runtime, ""), "")
                results[model][runtime] = run_worker(
                    ["--worker", runtime, "--path", path, "--model", model, "--size", str(args.size),
                     "--repeats", str(args.repeats)], env={**RUNTIMES, **INT8_RUNTIMES}[runtime][1],
                    script=__file__)
                print(model, runtime, results[model][runtime], flush=True)
    cpu = cpu_model()
    instructions = int8_instructions()
    float32 = {m: {r: v for r, v in per.items() if r in RUNTIMES} for m, per in results.items()}
    text = table(float32, cpu, args.size)
    print(text)
    if args.int8:
        quantized = int8_table(results, f"{cpu} (int8 instructions: {instructions})", args.size)
        print(quantized)
    if args.write_docs:  # an --int8 run writes its own table (its models may differ)
        write_docs(quantized, int8_docs_block(instructions)) if args.int8 else write_docs(text)


if __name__ == "__main__":
    main()
