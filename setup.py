"""keras-regnet: RegNetX / RegNetY for Keras 3 (Radosavovic et al., CVPR 2020)."""

import pathlib
import re

from setuptools import find_packages, setup

HERE = pathlib.Path(__file__).parent
VERSION = re.search(r'__version__ = "([^"]+)"', (HERE / "keras_regnet" / "__init__.py").read_text()).group(1)

EXTRAS = {
    # Converting .pyth/.pth checkpoints and verifying against the reference models.
    "convert": ["torch>=2.1"],
    # Reference implementations (pycls, timm, torchvision) and other backends, for parity and
    # backend tests. torch/torchvision are pinned to builds that install from local disk here.
    "test": [
        "pytest>=7",
        "pytest-xdist>=3",  # the suite runs on 2 workers: most of its time is fresh processes
        "jax>=0.4.30",
        "tf-keras~=2.21.0",
        "ruff",
        "torch==2.14.1",
        "torchvision==0.29.1",
        "timm>=1.0",
        "pycls==0.1.1",
        "tensorflow-serving-api>=2.16",
        "tensorboard",
        "matplotlib",
        "tensorflow-datasets",
        "keras-hub>=0.21",
        # keras_hub's own model-test routines (keras_hub.src.tests.test_case) import it.
        "grain",
        # A contender in benchmarks/bench_models.py (so the README's environment runs it all).
        "kimm",
        # Every export format, run by its own runtime in the tests (extras below).
        "tf2onnx>=1.16",
        "onnx",
        "onnxruntime",
        "ai-edge-litert",
        "openvino",
    ],
    # Export formats (keras-regnet export --format ...): each exporter and the runtime that
    # checks the written file.
    "onnx": ["tf2onnx>=1.16", "onnx", "onnxruntime"],
    "litert": ["ai-edge-litert"],
    "openvino": ["openvino", "tf2onnx>=1.16", "onnx", "onnxruntime"],  # int8: via the QDQ ONNX file
    # KerasHub: RegNetBackbone / RegNetImageClassifier, presets, `keras-regnet preset`.
    "hub": ["keras-hub>=0.21"],
    # The trainer: TensorBoard logs (TF 2.21 no longer installs it). The embedded digits demo
    # ships in the package (keras_regnet/data/digits.npz): no scikit-learn.
    "train": ["tensorboard"],
    # Reading prepared TFDS datasets (imagenet2012) in the trainer.
    "tfds": ["tensorflow-datasets"],
    # Design-space sweeps: plots for the report.
    "sweep": ["matplotlib", "tensorboard"],
    # Writes the TF Serving warmup file on export.
    "serving": ["tensorflow-serving-api>=2.16"],
    # Anchors for benchmarks/.
    "bench": ["tf-keras~=2.21.0", "kimm", "keras-hub>=0.21", "timm>=1.0", "pycls==0.1.1",
              "torch==2.14.1"],
}
EXTRAS["all"] = sorted({req for reqs in EXTRAS.values() for req in reqs})

setup(
    name="keras-regnet",
    version=VERSION,
    description="RegNetX / RegNetY (Designing Network Design Spaces) for Keras 3, faithful to pycls.",
    long_description=(HERE / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="MIT",
    python_requires=">=3.10",
    packages=find_packages(include=["keras_regnet", "keras_regnet.*"]),
    package_data={"keras_regnet": ["data/*.json", "data/*.csv", "data/*.npz"]},
    install_requires=[
        "keras>=3.3",
        "tensorflow>=2.16",
        "numpy",
        "absl-py",
        # Reads the hub's .safetensors weights with numpy: weights="imagenet" needs no torch.
        "safetensors>=0.4",
    ],
    extras_require=EXTRAS,
    entry_points={"console_scripts": ["keras-regnet=keras_regnet.cli:main"]},
    classifiers=[
        "Programming Language :: Python :: 3",
        "License :: OSI Approved :: MIT License",
        "Topic :: Scientific/Engineering :: Artificial Intelligence",
    ],
)
