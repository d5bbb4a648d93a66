"""What an export serves: a model, its eval transform and its class names, from any weights.

Four kinds of source, one result (:class:`Deployable`):

- a weight tag or ``none`` with a model name (the tag brings its eval transform);
- a weights file (``.weights.h5`` / pycls / timm / torchvision checkpoint) with a model name
  and the class count of its head;
- a trainer's model directory (``final.weights.h5`` and the ``model.json`` the trainer writes
  beside it: model, classes, eval transform, class names);
- a saved ``.keras`` model (a whole fine-tuned network, custom head included).

Options given explicitly (classes, eval transform, labels file) win over what a source says.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from typing import Sequence

import keras
import numpy as np

from keras_regnet.preprocessing import EvalTransform, default_class_names
from keras_regnet.weight_choice import NO_WEIGHTS, ResolvedWeights

log = logging.getLogger(__name__)
RUN_DESCRIPTION = "model.json"  # written by the trainer beside final.weights.h5
RUN_WEIGHTS = "final.weights.h5"


@dataclasses.dataclass
class Deployable:
    """A model mapping RGB [0, 255] images of any size to probabilities, and how it is fed."""

    model: keras.Model
    name: str
    transform: EvalTransform
    class_names: list[str]
    weights: ResolvedWeights | None = None  # None for a whole .keras model


def write_run_description(model_dir: str, model: str, classes: int, transform: EvalTransform,
                          class_names: Sequence[str] | None, design: dict | None = None) -> str:
    """The trainer's ``model.json``: what ``keras-regnet export --weights MODEL_DIR`` needs
    (``design``: the design-space record a ``--design`` or sweep run trained instead of ``model``)."""
    from keras_regnet.files import atomic_path

    path = os.path.join(model_dir, RUN_DESCRIPTION)
    description = {"model": model, "classes": classes,
                   "eval_transform": f"{transform.resize}/{transform.crop} {transform.interpolation}",
                   "class_names": list(class_names) if class_names else None}
    if design is not None:
        description["design"] = design
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        json.dump(description, f, indent=2)
    return path


def read_labels(path: str) -> list[str]:
    """One class name per line (blank lines ignored), as in a SavedModel's ``labels.txt``."""
    with open(path, encoding="utf-8") as f:
        names = [line.strip() for line in f if line.strip()]
    if not names:
        raise ValueError(f"labels file {path} holds no class names (one per line).")
    return names


def load_deployable(weights: str | ResolvedWeights | None, model: str | None = None,
                    classes: int | None = None, transform: EvalTransform | None = None,
                    labels: str | None = None) -> Deployable:
    """Resolves what to export from ``weights`` (a tag, ``None`` or ``"none"``, a file, a run
    directory or a ``.keras`` file) and the options that override it.

    Example:
        >>> d = load_deployable(None, "RegNetX002", classes=10)  # doctest: +SKIP
        >>> d.class_names[:2], d.transform.crop  # doctest: +SKIP
        (['class_0', 'class_1'], 224)
    """
    from keras_regnet.applications import RegNet
    from keras_regnet.variants import get_variant
    from keras_regnet.weight_choice import resolve_weights

    names = read_labels(labels) if labels else None
    if weights == NO_WEIGHTS:  # the command line's None, even where a folder "none" exists
        weights = None
    design = None
    if weights is not None and not isinstance(weights, ResolvedWeights) and os.path.isdir(weights):
        run = _read_run(weights)
        design = None if model else run.get("design")  # --model overrides what the run trained
        model = model or run["model"]
        classes = classes or run["classes"]
        transform = transform or EvalTransform.parse(run["eval_transform"])
        names = names or run.get("class_names")
        weights = os.path.join(weights, RUN_WEIGHTS)
    resolved = None
    if weights is not None and str(weights).endswith(".keras"):
        network = _load_keras_file(weights)
        name = model or network.name
    elif design is not None:  # a design-space point: rebuilt from its record
        from keras_regnet.design.sampling import spec_from_record

        resolved = resolve_weights(weights, None)
        network = RegNet(spec_from_record(design), weights=resolved, classes=classes,
                         input_shape=(None, None, 3))
        name = network.name
    else:
        if model is None:
            raise ValueError("--model is needed with this --weights (e.g. --model RegNetX004); "
                             "only a .keras file or a trainer's model directory names its model.")
        name = get_variant(model).name
        resolved = resolve_weights(weights, name)
        transform = transform or resolved.transform
        network = RegNet(name, weights=resolved, classes=classes or 1000,
                         input_shape=(None, None, 3))
    count = int(network.output_shape[-1])
    if classes is not None and classes != count:
        raise ValueError(f"--classes {classes} does not match the model, which predicts {count}.")
    if names is not None and len(names) != count:
        raise ValueError(f"the labels give {len(names)} class names but the model predicts "
                         f"{count} classes.")
    return Deployable(network, name, transform or EvalTransform(), list(names or default_class_names(count)),
                      resolved)


def _read_run(directory: str) -> dict:
    path = os.path.join(directory, RUN_DESCRIPTION)
    if not os.path.exists(os.path.join(directory, RUN_WEIGHTS)):
        raise FileNotFoundError(f"{directory} is not a finished training run: it has no "
                                f"{RUN_WEIGHTS} (a run writes it when it ends).")
    if not os.path.exists(path):
        raise FileNotFoundError(
            f"{directory} has no {RUN_DESCRIPTION} (runs before this version did not write one): "
            f"export {os.path.join(directory, RUN_WEIGHTS)} with --model, --classes and "
            f"--eval-transform instead.")
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def _load_keras_file(path: str) -> keras.Model:
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path} does not exist.")
    try:
        network = keras.saving.load_model(path, compile=False)
    except Exception as err:  # a damaged zip, a model needing custom objects: one clear line
        raise ValueError(f"{path} does not load as a Keras model ({type(err).__name__}: "
                         f"{str(err).splitlines()[0] if str(err) else 'no detail'}).") from err
    # Served outputs are probabilities: a model that ends in logits gets a softmax.
    probe = np.random.default_rng(0).uniform(0, 255, (2, 64, 64, 3)).astype("float32")
    try:
        out = keras.ops.convert_to_numpy(network(probe, training=False))
    except Exception:  # a fixed input size: probe at it
        shape = network.input_shape[1:]
        out = keras.ops.convert_to_numpy(network(np.full((2, *shape), 127.0, "float32"), training=False))
    if not (np.all(out >= 0) and np.allclose(out.sum(axis=-1), 1.0, atol=1e-3)):
        log.warning("%s outputs logits (its rows do not sum to 1): serving adds a softmax", path)
        network = keras.Model(network.inputs, keras.layers.Softmax(name="probabilities")(network.outputs[0]),
                              name=network.name)
    return network
