"""The package's structure as a user meets it: one import, no cycle, real builder definitions."""

from __future__ import annotations

import ast
import os
import pathlib
import subprocess
import sys
import textwrap

import pytest

import keras_regnet
from keras_regnet.variants import VARIANTS

ROOT = pathlib.Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "keras_regnet"


def _module_name(path: pathlib.Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _package_imports(path: pathlib.Path, modules: set[str]) -> set[str]:
    """The keras_regnet modules a file imports, at any level (inside functions too)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # "from keras_regnet import weights" imports the submodule keras_regnet.weights.
            names = [f"{node.module}.{alias.name}" if f"{node.module}.{alias.name}" in modules
                     else node.module for alias in node.names]
        else:
            continue
        found.update(name for name in names if name in modules)
    return found


def import_graph() -> dict[str, set[str]]:
    files = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    return {name: _package_imports(path, set(files)) for name, path in files.items()}


def test_no_import_cycle_inside_the_package():
    graph = import_graph()
    state: dict[str, int] = {}  # 1: on the stack, 2: done

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                raise AssertionError("import cycle: " + " -> ".join(stack[stack.index(nxt):] + [nxt]))
            if nxt not in state:
                visit(nxt, stack + [nxt])
        state[node] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])


def test_no_module_imports_the_package_root():
    # A submodule that imports `keras_regnet` itself would re-enter its __init__ (a cycle).
    offenders = [name for name, deps in import_graph().items()
                 if name != "keras_regnet" and "keras_regnet" in deps]
    assert offenders == []


def test_the_cycle_check_can_fail(monkeypatch, tmp_path):
    # Guard against a vacuous check: two modules that import each other are reported.
    graph = {"a": {"b"}, "b": {"a"}}
    monkeypatch.setattr(sys.modules[__name__], "import_graph", lambda: graph)
    with pytest.raises(AssertionError, match="import cycle: a -> b -> a"):
        test_no_import_cycle_inside_the_package()


def test_architecture_loads_no_weights():
    deps = import_graph()
    below = {"keras_regnet.model", "keras_regnet.layers", "keras_regnet.design.spec"}
    for module in below:
        assert not deps[module] & {"keras_regnet.weights", "keras_regnet.conversion",
                                   "keras_regnet.downloads", "keras_regnet.applications"}, module


def test_torch_side_is_used_only_by_verification_and_tests():
    users = {name for name, deps in import_graph().items() if "keras_regnet.verify" in deps}
    assert users <= {"keras_regnet.cli"}  # `convert --verify`


def test_benchmarks_import_nothing_from_tests():
    for path in (ROOT / "benchmarks").glob("*.py"):
        text = path.read_text(encoding="utf-8")
        assert "tests" not in text.replace("# tests", ""), f"{path.name} reaches into tests/"


def _fresh(code: str, **env) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                          text=True, timeout=300, env=dict(os.environ, **env), cwd=ROOT)


@pytest.fixture(scope="module")
def saved_model_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("saved") / "m.keras"
    out = _fresh(f"""
        import keras_regnet
        keras_regnet.RegNetY002(weights=None, input_shape=(64, 64, 3)).save({str(path)!r})
        """)
    assert out.returncode == 0, out.stderr
    return path


@pytest.mark.slow
@pytest.mark.parametrize("imports", ["import keras, keras_regnet", "import keras_regnet, keras"])
def test_saved_model_loads_in_a_fresh_process_after_import_keras_regnet(saved_model_file, imports):
    out = _fresh(f"""
        {imports}
        import numpy as np
        model = keras.saving.load_model({str(saved_model_file)!r})
        print(model(np.zeros((1, 64, 64, 3), "float32")).shape)
        """)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "(1, 1000)"


@pytest.mark.slow
def test_a_saved_model_needs_keras_regnet_imported(saved_model_file):
    # The round trip above is not vacuous: without our layers registered, Keras cannot load it.
    out = _fresh(f"""
        import keras
        keras.saving.load_model({str(saved_model_file)!r})
        """)
    assert out.returncode != 0 and "keras_regnet>ImageNormalization" in out.stderr


@pytest.mark.slow
def test_submodules_are_attributes_after_a_plain_import():
    out = _fresh("""
        import keras_regnet
        for name in ("conversion", "export", "weights", "layers", "weight_table", "preprocessing",
                     "design", "variants", "hub"):  # hub: keras-hub is in the test extra
            getattr(keras_regnet, name)
        print(keras_regnet.RegNetY032.__module__, keras_regnet.RegNetY032.__name__)
        """)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["keras_regnet.applications", "RegNetY032"]


@pytest.mark.parametrize("name", list(VARIANTS))
def test_every_builder_is_a_definition_in_applications(name):
    source = (PACKAGE / "applications.py").read_text(encoding="utf-8")
    assert f'\n{name} = _named_builder(RegNet, "{name}")\n' in source
    builder = getattr(keras_regnet, name)
    assert builder.__name__ == name and VARIANTS[name].paper_name in builder.__doc__


def test_builder_keywords_are_regnets_with_imagenet_weights():
    import inspect

    builder = inspect.signature(keras_regnet.RegNetX002).parameters
    regnet = inspect.signature(keras_regnet.RegNet).parameters
    assert list(builder) == list(regnet)[1:]
    assert builder["weights"].default == "imagenet" and regnet["weights"].default is None
    with pytest.raises(TypeError, match="unexpected keyword argument 'wieghts'"):
        keras_regnet.RegNetX002(wieghts=None)
    model = keras_regnet.RegNetX002(False, True, None, pooling="avg")  # positional, like keras.applications
    assert model.output_shape == (None, 368)


def test_every_public_name_is_bound_by_import_keras_regnet():
    """``import keras_regnet`` binds every name of ``__all__`` itself (not on first use only:
    the Keras side is loaded at import, which is what registers the layers for load_model)."""
    import keras_regnet

    bound = vars(keras_regnet)
    assert [name for name in keras_regnet.__all__ if name not in bound] == []
    assert {"hub", "layers", "export", "conversion"} <= set(bound)


def _last_words_of_fresh_processes(code: str, environments: dict[str, dict]) -> dict[str, str]:
    """Runs ``code`` through :func:`_fresh` once per environment (added to the suite's), at once;
    the last word each prints."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(len(environments)) as pool:
        runs = dict(zip(environments, pool.map(lambda env: _fresh(code, **env), environments.values())))
    for name, out in runs.items():
        assert out.returncode == 0, f"{name}: {out.stderr[-3000:]}"
    return {name: out.stdout.split()[-1] for name, out in runs.items()}


_SECOND_BUFFER_FAULTS = """
    import resource
    import numpy as np
    import keras_regnet  # noqa: F401 (what is under test: the import tunes malloc)
    def faults():
        return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    first = np.ones(16 << 20, "float32")  # 64 MiB, over glibc's largest mmap threshold
    del first
    before = faults()
    second = np.ones(16 << 20, "float32")
    print(faults() - before)
    """


@pytest.mark.slow  # fresh processes
@pytest.mark.skipif(sys.platform != "linux", reason="tunes glibc's malloc: Linux only")
def test_import_keras_regnet_makes_a_freed_activation_sized_buffer_reusable():
    # A freed 64 MiB buffer (a RegNet activation at batch 32) must serve the next one without
    # page faults; with KERAS_REGNET_ALLOCATOR=system glibc unmaps it and maps fresh pages.
    printed = _last_words_of_fresh_processes(_SECOND_BUFFER_FAULTS, {
        choice: {"KERAS_REGNET_ALLOCATOR": choice} for choice in ("reuse", "system")})
    faults = {choice: int(word) for choice, word in printed.items()}
    assert faults["system"] >= 30, faults  # 64 MiB: 32 huge pages at the least
    assert faults["reuse"] < 8, faults


_XLA_CALL_FAULTS = """
    import resource
    import keras_regnet  # noqa: F401 (what is under test: the import tunes malloc for XLA)
    import jax
    import jax.numpy as jnp

    def faults():
        return resource.getrusage(resource.RUSAGE_SELF).ru_minflt

    # A 64 MiB temporary (4096 x 4096) from XLA's threads, for 4 GFLOP a call (not 275: x @ x).
    step = jax.jit(lambda a, b: (jnp.tanh(a @ b) @ a).sum())
    a, b = jnp.ones((4096, 64)) / 64, jnp.ones((64, 4096)) / 64
    step(a, b).block_until_ready()
    counts = []
    for _ in range(3):
        before = faults()
        step(a, b).block_until_ready()
        counts.append(faults() - before)
    print(min(counts))
    """


@pytest.mark.slow  # fresh processes
@pytest.mark.skipif(sys.platform != "linux", reason="tunes glibc's malloc: Linux only")
def test_import_keras_regnet_on_jax_reuses_xlas_temporary_buffers_between_calls():
    # XLA allocates a call's temporaries from its worker threads' arenas, which map large
    # requests afresh at every call unless every thread is on the main arena (allocator.py).
    environment = {"KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu"}
    printed = _last_words_of_fresh_processes(_XLA_CALL_FAULTS, {
        choice: {**environment, "KERAS_REGNET_ALLOCATOR": choice} for choice in ("reuse", "system")})
    faults = {choice: int(word) for choice, word in printed.items()}
    assert faults["system"] >= 16384, faults  # at least one 64 MiB buffer mapped page by page
    assert faults["reuse"] < 64, faults


def test_an_unknown_allocator_choice_warns_and_leaves_malloc_alone(monkeypatch):
    from keras_regnet import allocator

    monkeypatch.setenv(allocator.ENVIRONMENT_VARIABLE, "jemalloc")
    with pytest.warns(UserWarning, match="'reuse'.*'system'"):
        assert allocator.keep_freed_memory() is False
    monkeypatch.setenv(allocator.ENVIRONMENT_VARIABLE, "system")
    assert allocator.keep_freed_memory() is False


_CONVOLUTION_KERNELS = """
    import keras_regnet  # noqa: F401 (what is under test: the import sets XLA's flags on JAX)
    import jax
    import jax.numpy as jnp
    x, k = jnp.ones((4, 14, 14, 24)), jnp.ones((3, 3, 24, 24))  # one group of RegNetY032's stage 3
    conv = jax.jit(lambda x, k: jax.lax.conv_general_dilated(
        x, k, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")))
    text = conv.lower(x, k).compile().as_text()
    print("ynnpack" if "__ynn_fusion" in text else "eigen")
    """


@pytest.mark.slow  # fresh processes
def test_import_keras_regnet_on_jax_runs_cpu_convolutions_on_eigen():
    from keras_regnet import xla_cpu

    if not xla_cpu._jaxlib_measured():
        pytest.skip(f"jaxlib not among the measured releases {xla_cpu.MEASURED_JAXLIB}: flag left unset")
    # Asked for YNNPACK, the same convolution compiles to a YNNPACK fusion: the check can fail.
    environment = {"KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu", "XLA_FLAGS": ""}  # none of the suite's
    kernels = _last_words_of_fresh_processes(_CONVOLUTION_KERNELS, {
        choice: {**environment, xla_cpu.ENVIRONMENT_VARIABLE: choice} for choice in ("eigen", "ynnpack")})
    assert kernels == {"eigen": "eigen", "ynnpack": "ynnpack"}


def test_an_unknown_xla_convolutions_choice_warns_and_leaves_the_flags_alone(monkeypatch):
    from keras_regnet import xla_cpu

    monkeypatch.setenv(xla_cpu.ENVIRONMENT_VARIABLE, "ynnpak")
    monkeypatch.setenv("XLA_FLAGS", "--xla_cpu_enable_fast_math=false")
    with pytest.warns(UserWarning, match="'eigen' or 'ynnpack'"):
        assert xla_cpu.prefer_eigen_convolutions() is False
    assert os.environ["XLA_FLAGS"] == "--xla_cpu_enable_fast_math=false"
