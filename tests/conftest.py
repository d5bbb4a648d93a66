"""Shared fixtures: the reference figures and the variants table as test parameters."""

from __future__ import annotations

import contextlib
import csv
import functools
import http.server
import itertools
import os
import pathlib
import subprocess
import sys
import tempfile
import threading
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# The suite's fresh JAX processes share XLA's compiled programs through JAX's on-disk cache:
# building a model on JAX compiles ~90 random-initialiser kernels (20 s of a RegNetY002 build),
# the same in every process. Compile time only; what runs is the same.
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR",
                      os.path.join(tempfile.gettempdir(), "keras_regnet-tests-jax"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")
# XLA's LLVM optimisation off in every test process and the fresh ones they start (JAX's
# compiles, TensorFlow's jit_compile): compiles dominate what the tests run (gpu.py's JAX
# worker on RegNetX002 at 32x32: 129 s with it, 73 s without); the HLO passes still run.
# XLA's CPU fusion emitters off too (its older loop emitters compile faster): six variants'
# jitted predicts compiled in 19.7 s instead of 30.6 s on this suite's 2-core Xeon.
XLA_TEST_FLAGS = "--xla_backend_optimization_level=0 --xla_cpu_use_fusion_emitters=false"
os.environ.setdefault("XLA_FLAGS", XLA_TEST_FLAGS)

import pytest  # noqa: E402

import keras_regnet  # noqa: E402
from keras_regnet import verify  # noqa: E402
from keras_regnet.design.complexity import count  # noqa: E402
from keras_regnet.deterministic import set_deterministic_weights  # noqa: E402
from keras_regnet.layers import DenseConv2D, GroupedConv2D, PointwiseConv2D  # noqa: E402
from keras_regnet.variants import VARIANTS  # noqa: E402

# The tests import torchvision themselves (reference metadata) after TensorFlow.
verify.hide_triton()

# Published pycls model-zoo figures, verbatim from the reference (shipped with the package
# because the weights registry reports their top-1).
REFERENCE_CSV = pathlib.Path(keras_regnet.__file__).parent / "data" / "pycls_model_zoo.csv"
# Parameter counts torchvision publishes for the three sizes whose rounding differs.
TORCHVISION_PARAMS = {"regnet_x_400mf": 5495976, "regnet_y_800mf": 6432512, "regnet_y_8gf": 39381472}


# Our convolutions against Keras's (tests/other_backends), in both layouts; test_backends.py
# counts them.
CONV_CASES = [  # (layer class, filters, kernel, strides, padding, groups)
    (GroupedConv2D, 32, 3, 1, "same", 4),
    (GroupedConv2D, 48, 3, 2, "valid", 3),
    (PointwiseConv2D, 24, 1, 1, "valid", 1),
    (PointwiseConv2D, 24, 1, 2, "valid", 1),
    # Three input channels (the stem's): on JAX a matmul over patches. "same" with stride 2 on
    # odd and even sides pads unevenly, as Keras does (PyTorch: padded before its conv).
    (DenseConv2D, 16, 3, 2, "valid", 1),
    (DenseConv2D, 16, 3, 2, "same", 1),
    (DenseConv2D, 16, 3, 1, "same", 1),
]


def keras_backend() -> str:
    import keras  # after keras_regnet (imported above): it turns on TensorFlow's oneDNN kernels

    return keras.backend.backend()


ON_TENSORFLOW = keras_backend() == "tensorflow"

# The JAX/PyTorch-only checks: test_backends.py runs them in one fresh pytest per backend.
collect_ignore = ["other_backends"] if ON_TENSORFLOW else []

# Three logical CPUs in every test process, split before TensorFlow runs an op: mirrored
# trainer runs of 1-3 replicas then run in the test's own process (on the first N of them);
# only what needs a fresh process (a kill, several workers, the user's console) starts one.
TEST_PROCESS_CPU_REPLICAS = 3
if ON_TENSORFLOW:
    from keras_regnet.training.distribute import split_cpu

    split_cpu(TEST_PROCESS_CPU_REPLICAS)


def pytest_addoption(parser):
    parser.addoption("--conversion-matrix", action="store_true",
                     help="also run numeric conversion parity for every (variant, library) pair "
                          "(~25 min on 2 cores); by default one model per library and block kind")


def pytest_collection_modifyitems(config, items):
    """Tests marked ``conversion_matrix`` are deselected unless --conversion-matrix is given;
    on JAX and PyTorch, tests marked ``tensorflow_only(reason)`` are skipped, saying why."""
    if not ON_TENSORFLOW:
        for item in items:
            marker = item.get_closest_marker("tensorflow_only")
            if marker:
                item.add_marker(pytest.mark.skip(reason=f"TensorFlow only: {marker.args[0]}"))
    if config.getoption("--conversion-matrix"):
        return
    selected = [item for item in items if "conversion_matrix" not in item.keywords]
    deselected = [item for item in items if "conversion_matrix" in item.keywords]
    if deselected:
        config.hook.pytest_deselected(items=deselected)
        items[:] = selected


_tests_run = itertools.count(1)


@pytest.fixture(autouse=True)
def fresh_collective_keys():
    """Every test's mirrored strategies take collective group keys no earlier test in this
    process used: TensorFlow numbers each strategy's groups from the same start, and a
    3-replica run in a process where a 2-replica run made group 1 fails to join it
    ("joining a group with size3, but that group has size 2"). `_collective_key_base` is
    the attribute TensorFlow keeps for tests to do this."""
    if ON_TENSORFLOW:
        import tensorflow as tf

        tf.distribute.MirroredStrategy._collective_key_base = 100_000 * next(_tests_run)
    yield


@pytest.fixture(scope="session")
def built_model():
    """``built_model(name)``: the variant's default model (``weights=None``), built once per
    session and shared by the tests that only read it (building all 27 twice cost minutes)."""
    @functools.cache
    def build(name: str):
        return getattr(keras_regnet, name)(weights=None)

    return build


def reference_rows() -> dict[str, dict[str, str]]:
    with open(REFERENCE_CSV, newline="") as f:
        return {row["model"]: row for row in csv.DictReader(f)}


# Variants above this many multiply-adds are `slow` in variant-parametrised tests: the quick
# pass builds the small ones, the full suite (CI) every one.
QUICK_PASS_FLOPS = 0.7e9  # X/Y 200-600MF and X004TV: the quick pass stays under 3 minutes


def quick_pass_marks(name: str) -> list:
    return [pytest.mark.slow] if count(VARIANTS[name].spec)["flops"] > QUICK_PASS_FLOPS else []


def variant_params():
    """pytest params over the whole variants table (the large ones marked slow)."""
    return [pytest.param(name, id=name, marks=quick_pass_marks(name)) for name in VARIANTS]


def randomize_batch_norms(model, seed: int = 0) -> None:
    """Gives every BatchNormalization of a Keras model random statistics and affine weights, so
    that a test comparing outputs also checks what the BNs do (fresh ones are identities)."""
    import keras
    import numpy as np

    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            gamma, beta, mean, var = layer.get_weights()
            layer.set_weights([rng.uniform(0.5, 1.5, gamma.shape), rng.normal(0, 0.2, beta.shape),
                               rng.normal(0, 0.2, mean.shape), rng.uniform(0.5, 2.0, var.shape)])


@contextlib.contextmanager
def initial_weights_skipped():
    """Models built inside start with zero kernels: for a test that sets every weight next
    (set_deterministic_weights), drawing them (up to half of a large variant's build) is waste.
    Only Keras's weight creation runs; the builders' layers, shapes and names are unchanged."""
    from unittest import mock

    import keras
    import numpy as np

    from keras_regnet.layers import ConvInitializer

    def zeros(self, shape, dtype=None):  # NumPy's (lazily zeroed pages): no per-shape compile on JAX
        return keras.ops.convert_to_tensor(np.zeros(shape, "float32"), dtype=dtype or keras.config.floatx())

    with mock.patch.object(ConvInitializer, "__call__", zeros), \
            mock.patch.object(keras.initializers.RandomNormal, "__call__", zeros):
        yield


def deterministic_variant(name: str):
    """The variants table's ``name`` with ``set_deterministic_weights``' weights, logits out,
    any input size: what the cross-backend logits comparison builds on each backend."""
    with initial_weights_skipped():
        model = getattr(keras_regnet, name)(weights=None, input_shape=(None, None, 3),
                                            classifier_activation=None)
    set_deterministic_weights(model)
    return model


def smallest_per_family() -> list[str]:
    """The cheapest X and Y model of the table (for tests that run many configurations)."""
    best: dict[bool, str] = {}
    for name, v in VARIANTS.items():
        key = v.spec.se_ratio > 0
        if key not in best or count(v.spec)["flops"] < count(VARIANTS[best[key]].spec)["flops"]:
            best[key] = name
    return [best[False], best[True]]


class _LoopbackHandler(http.server.BaseHTTPRequestHandler):
    """Serves ``server.routes[path] = (body, mode)``. Modes: "ok"; "truncate" (announces the
    full Content-Length, sends half); "no-length-cut" (no Content-Length, half the body, then
    the connection closes); "hang" (answers after 3 s)."""

    def do_GET(self):  # noqa: N802 (http.server's naming)
        self.server.requests.append(self.path)
        if self.path not in self.server.routes:
            self.send_error(404)
            return
        body, mode = self.server.routes[self.path]
        if mode == "hang":
            time.sleep(3)
        self.send_response(200)
        if mode == "no-length-cut":
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(body[: len(body) // 2])
            return
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body[: len(body) // 2] if mode == "truncate" else body)

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    """A loopback HTTP server (127.0.0.1 only): ``server.url``, ``.routes``, ``.requests``."""
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _LoopbackHandler)
    httpd.routes, httpd.requests = {}, []
    httpd.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


def shallow(name: str):
    """The variant's stages (widths, group widths, bottleneck, SE) at depth 1 each: the same
    layer kinds in 4 blocks, for tests of what wraps a network (trainer, exporters) rather than
    of the network itself. Tracing, converting and optimising cost about a third of RegNetX002's."""
    import dataclasses

    anynet = VARIANTS[name].spec.to_anynet()
    return dataclasses.replace(anynet, depths=(1,) * len(anynet.depths))


@pytest.fixture(scope="session")
def tiny_design(tmp_path_factory) -> str:
    """A ``--design`` file holding ``shallow("RegNetX002")``, for trainer runs that test
    resuming, replicas or errors."""
    import json

    from keras_regnet.design.sampling import record

    path = tmp_path_factory.mktemp("design") / "tiny.jsonl"
    path.write_text(json.dumps(record("tiny", shallow("RegNetX002"))) + "\n")
    return str(path)


CLIENTS = pathlib.Path(__file__).parent / "clients"
TRAIN = str(pathlib.Path(__file__).resolve().parent.parent / "training" / "train.py")


def free_port() -> int:
    """A localhost port nothing listens on, for a local cluster's addresses."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_all(procs: list[subprocess.Popen], timeout: int = 400) -> list[str]:
    """Waits for every process of a local job and returns their outputs; kills what is left
    on a timeout, and fails unless all exited 0 (their outputs' ends in the message)."""
    outputs = []
    try:
        for proc in procs:
            outputs.append(proc.communicate(timeout=timeout)[0])
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
    assert all(p.returncode == 0 for p in procs), "\n".join(o[-3000:] for o in outputs)
    return outputs


def run_trainer(args, timeout: int = 300, env: dict | None = None, **kwargs):
    """``python training/train.py ARGS`` as a user starts it: a fresh process (for what only
    one shows: its console, its exit status, a kill, several replicas); its output captured."""
    return subprocess.run([sys.executable, TRAIN, *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})}, **kwargs)


def run_trainer_in_process(capsys, *args) -> subprocess.CompletedProcess:
    """The trainer's command line run in this process (its flags reset first): what a
    subprocess would return, without a fresh TensorFlow start for each error message."""
    from absl import flags

    from keras_regnet.training.main import run_main

    flags.FLAGS.unparse_flags()
    capsys.readouterr()
    try:
        with pytest.raises(SystemExit) as exited:
            run_main(["train.py", *args])
    finally:
        flags.FLAGS.unparse_flags()  # leaves no parsed values behind for later tests
    captured = capsys.readouterr()
    return subprocess.CompletedProcess(args, exited.value.code, captured.out, captured.err)


def validation_split(data_dir: str):
    """(images, labels) of a TFRecord directory's validation split through the trainer's eval
    transform at 32x32 (labels 1-based in the records, 0-based here)."""
    import numpy as np

    from keras_regnet.training import data as data_lib
    from keras_regnet.training.config import TrainConfig

    config = TrainConfig(data_dir=data_dir, image_size=32, num_classes=10)
    pipeline = config.pipeline(False, 1, label_offset=1)
    pairs = [(x.numpy()[0], int(y.numpy()[0])) for x, y in data_lib.make_dataset(
        data_lib.split_files(data_dir, "validation"), pipeline)]
    images, labels = zip(*pairs)
    return np.stack(images), np.asarray(labels)


def artifact_top1(path: str, images, labels) -> float:
    """Top-1 (%) of an exported file run by its own runtime (image by image for LiteRT: the
    int8 file takes a batch of one)."""
    import numpy as np

    from keras_regnet.formats import run_artifact

    if path.endswith(".tflite"):
        predicted = np.asarray([int(run_artifact(path, image[None]).argmax()) for image in images])
    else:
        predicted = run_artifact(path, images).argmax(-1)
    return 100 * float(np.mean(predicted == labels))


def run_client(script: str, *args, onednn: str = "0", timeout: int = 300):
    """Runs ``tests/clients/SCRIPT`` in a fresh interpreter with TF_ENABLE_ONEDNN_OPTS set
    explicitly (a served model must run with oneDNN off, TensorFlow's default on AVX2 CPUs,
    and on) and returns the JSON it prints; a client error fails the test with its message."""
    import json

    env = {**os.environ, "TF_ENABLE_ONEDNN_OPTS": onednn, "TF_CPP_MIN_LOG_LEVEL": "2"}
    result = subprocess.run([sys.executable, str(CLIENTS / script), *map(str, args)], env=env,
                            capture_output=True, text=True, timeout=timeout)
    lines = result.stdout.strip().splitlines()
    if result.returncode or not lines:
        pytest.fail(f"{script} exited {result.returncode}:\n{result.stderr[-3000:]}")
    out = json.loads(lines[-1])
    if isinstance(out, dict) and "error" in out:
        pytest.fail(f"{script} (oneDNN {onednn}): {out['error']}")
    return out
