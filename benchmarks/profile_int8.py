"""Where the int8 files' time goes: float32 against int8 per layer role, in ONNX Runtime, OpenVINO and LiteRT.

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

LiteRT has no per-node profiler in its Python API, and XNNPACK runs a whole graph as one
delegated node; so for LiteRT each role's layers of the folded model (with the paddings and
ReLUs they fuse) are converted as a graph of their own, every tensor they take from another
role an input of its real shape, float32 and full-integer int8 (int8 inputs and outputs:
no quantise or dequantise at the edges), and the two files are called alternately in one
process. The whole files' call (one image at a time for int8: the full-integer file has a
fixed batch of one) is timed the same way.

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
RUNTIMES = {"onnxruntime": "ONNX Runtime", "openvino": "OpenVINO", "litert": "LiteRT (XNNPACK)"}
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


def write_litert_files(model_name: str, directory: str, batch: int, size: int) -> None:
    """Each role's float32 and int8 LiteRT files and the whole model's, listed in
    ``directory/litert.json``: {"model": name, "roles": {role: [float32 file, int8 file]},
    "whole": [float32 file, int8 file]}."""
    import bench_deploy
    import keras
    import numpy as np
    import tensorflow as tf

    import keras_regnet
    from keras_regnet import export
    from keras_regnet.formats import quiet_converters

    model = export.fold_for_inference(
        keras_regnet.RegNet(model_name, weights=None, input_shape=(size, size, 3)))
    by_role: dict[str, list] = collections.defaultdict(list)
    for layer in model.layers:
        if not isinstance(layer, keras.layers.InputLayer):
            by_role[role(layer.name)].append(layer)
    rng = np.random.default_rng(0)
    roles = {}
    for number, (label, members) in enumerate(by_role.items()):
        graph = _role_graph(members, batch)
        # Images (0-255) where the role reads the model's input, unit-scale activations elsewhere.
        # Given by name: the converted file orders its inputs its own way.
        samples = [{t.name: (rng.uniform(0, 255, t.shape) if t.shape[1:] == (size, size, 3)
                             else rng.standard_normal(t.shape)).astype("float32") for t in graph.inputs}
                   for _ in range(4)]
        roles[label] = []
        for kind in ("fp32", "int8"):
            converter = tf.lite.TFLiteConverter.from_keras_model(graph)
            if kind == "int8":
                converter.optimizations = [tf.lite.Optimize.DEFAULT]
                converter.representative_dataset = lambda: iter(samples)  # noqa: B023 (used at once)
                converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
                converter.inference_input_type = converter.inference_output_type = tf.int8
            with quiet_converters():
                flatbuffer = converter.convert()
            path = os.path.join(directory, f"role{number}_{kind}.tflite")
            pathlib.Path(path).write_bytes(flatbuffer)
            roles[label].append(path)
    whole = bench_deploy.export_all(model_name, directory, size, {"litert", "litert_int8"})
    listing = {"model": model_name, "roles": roles, "whole": [whole["litert"], whole["litert_int8"]]}
    pathlib.Path(directory, "litert.json").write_text(json.dumps(listing))


def _role_graph(members: list, batch: int):
    """The layers ``members`` (in the model's order) as a Keras model of their own: each tensor
    they take from a layer outside them becomes an input of the same shape (batch ``batch``),
    and each tensor none of them reads an output."""
    import keras

    made: dict[int, object] = {}  # id(the model's tensor) -> the same tensor in this graph
    inputs, read = [], set()
    for layer in members:
        given = layer.input if isinstance(layer.input, list) else [layer.input]
        for tensor in given:
            if id(tensor) not in made:
                made[id(tensor)] = keras.Input(batch_shape=(batch, *tensor.shape[1:]),
                                               name=f"in{len(inputs):03d}")
                inputs.append(made[id(tensor)])
            read.add(id(tensor))
        args = [made[id(t)] for t in given]
        made[id(layer.output)] = layer(args if isinstance(layer.input, list) else args[0])
    return keras.Model(inputs, [made[id(layer.output)] for layer in members if id(layer.output) not in read])


def _litert_profile(directory: str, batch: int, size: int, steps: int) -> dict:
    """{"fp32": profile, "int8": profile} of the files write_litert_files listed, float32 and int8
    called alternately (the order swapped every step), each a median over ``steps`` calls."""
    import statistics

    import bench_deploy
    import numpy as np
    from ai_edge_litert.interpreter import Interpreter

    rng = np.random.default_rng(0)
    listing = json.loads(pathlib.Path(directory, "litert.json").read_text())

    def role_call(path: str):
        interpreter = Interpreter(model_path=path, num_threads=THREADS)
        interpreter.allocate_tensors()
        for given in interpreter.get_input_details():
            info = np.iinfo(given["dtype"]) if np.issubdtype(given["dtype"], np.integer) else None
            values = (rng.integers(info.min, info.max, given["shape"], endpoint=True) if info
                      else rng.uniform(0, 255, given["shape"]))
            interpreter.set_tensor(given["index"], values.astype(given["dtype"]))
        return interpreter.invoke

    def whole_call(path: str):  # as bench_deploy.py times the file (the int8 one image by image)
        run = bench_deploy._runner("litert", path, listing["model"], size)
        images = rng.uniform(0, 255, (batch, size, size, 3)).astype("float32")
        return lambda: run(images)

    calls = {label: [role_call(path) for path in paths] for label, paths in listing["roles"].items()}
    calls["whole"] = [whole_call(path) for path in listing["whole"]]
    times: dict = {label: ([], []) for label in calls}
    for step in range(WARMUP + steps):
        for label, pair in calls.items():
            for kind in ((0, 1) if step % 2 else (1, 0)):
                start = time.perf_counter()
                pair[kind]()
                if step >= WARMUP:
                    times[label][kind].append(1000 * (time.perf_counter() - start))
    return {kind: {"wall": statistics.median(times["whole"][k]),
                   "roles": {label: statistics.median(t[k]) for label, t in times.items()
                             if label != "whole"}}
            for k, kind in enumerate(("fp32", "int8"))}


def worker(runtime: str, path: str, batch: int, size: int, steps: int) -> dict:
    import numpy as np

    if runtime == "litert":
        return _litert_profile(path, batch, size, steps)
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
    profiles = {}
    with tempfile.TemporaryDirectory() as directory:
        onnx_readers = [r for r in args.runtimes if r != "litert"]
        if onnx_readers:
            paths = bench_deploy.export_all(args.model, directory, args.size, {"onnx", "onnx_int8"})
            profiles = {(r, kind): run_worker(["--worker", r, "--path", paths["onnx" + kind], *common],
                                              script=__file__)
                        for r in onnx_readers for kind in ("", "_int8")}
        if "litert" in args.runtimes:
            write_litert_files(args.model, directory, args.batch, args.size)
            both = run_worker(["--worker", "litert", "--path", directory, *common], script=__file__)
            profiles["litert", ""], profiles["litert", "_int8"] = both["fp32"], both["int8"]
    print(f"CPU: {cpu_model()} (int8 instructions: {bench_deploy.int8_instructions()}). {args.model}, "
          f"batch {args.batch}, {args.size}x{args.size}, {THREADS} threads; kernel time per call "
          f"from each runtime's profiler, mean over {args.steps} calls after {WARMUP} untimed ones"
          + ("; LiteRT: each role's graph called alone, the median of as many calls"
             if "litert" in args.runtimes else "") + ".\n")
    for r in args.runtimes:
        print(table(r, profiles[r, ""], profiles[r, "_int8"]) + "\n")


if __name__ == "__main__":
    main()
