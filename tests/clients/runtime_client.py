"""Runs an exported file in its own runtime, in a process that never imports keras_regnet.

    python runtime_client.py FILE[,FILE...] IMAGES.npy [IMAGES.npy ...]

``.onnx``: onnxruntime; ``.tflite``: ai-edge-litert (a full-integer model's input quantised
and its output dequantised with the file's own parameters); ``.xml``: OpenVINO (float32);
``/`` (a directory): TensorFlow's ``tf.saved_model.load`` and its ``serve`` endpoint (what
Keras's ``model.export(format="tf_saved_model")`` writes). Prints one JSON line mapping each
file to its outputs, one per input batch (batches of different sizes exercise the dynamic
dimensions), or ``{"error": "..."}``.
"""

import json
import os
import sys

import numpy as np


def runner(path: str):
    if path.endswith(".onnx"):
        import onnxruntime as ort

        session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
        return lambda x: session.run(None, {session.get_inputs()[0].name: x})[0]
    if path.endswith(".tflite"):
        from ai_edge_litert.interpreter import Interpreter

        interpreter = Interpreter(model_path=path)

        def run(x):
            given, produced = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
            interpreter.resize_tensor_input(given["index"], x.shape)
            interpreter.allocate_tensors()
            if given["dtype"] != np.float32:  # a full-integer model: its input's own scale
                scale, zero_point = given["quantization"]
                bounds = np.iinfo(given["dtype"])
                x = np.clip(np.round(x / scale + zero_point), bounds.min, bounds.max).astype(given["dtype"])
            interpreter.set_tensor(given["index"], x)
            interpreter.invoke()
            out = interpreter.get_tensor(produced["index"])
            if produced["dtype"] != np.float32:
                scale, zero_point = produced["quantization"]
                out = (out.astype(np.float32) - zero_point) * scale
            return out
        return run
    if path.endswith(".xml"):
        import openvino as ov

        compiled = ov.Core().compile_model(path, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
        return lambda x: np.asarray(compiled(x)[0])
    if os.path.isdir(path):
        import tensorflow as tf

        loaded = tf.saved_model.load(path)
        return lambda x: loaded.serve(tf.constant(x)).numpy()
    raise ValueError(f"unknown artifact {path}")


if __name__ == "__main__":
    try:
        batches = [np.load(f).astype("float32") for f in sys.argv[2:]]
        result = {}
        for path in sys.argv[1].split(","):
            run = runner(path)
            result[path] = [np.asarray(run(x)).tolist() for x in batches]
        if any(m.startswith("keras_regnet") for m in sys.modules):
            result = {"error": "the client imported keras_regnet"}
    except Exception as err:  # reported to the test, which prints it
        result = {"error": f"{type(err).__name__}: {err}"}
    print(json.dumps(result))
