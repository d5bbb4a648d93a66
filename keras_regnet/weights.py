"""Loading weights into a built network: by tag, by file, or from a state dict.

What ``weights=`` names is decided once by :func:`keras_regnet.weight_choice.resolve_weights`;
this module loads the result. Sits above the architecture (:mod:`keras_regnet.model` builds
networks and loads nothing):

- a tag (``"imagenet"``, ``"tv2_in1k"``, ...; see :mod:`keras_regnet.weight_table`) is
  downloaded once, converted once to a ``.weights.h5`` in ``$KERAS_HOME/keras_regnet`` and
  loaded from there afterwards;
- a ``.weights.h5`` file is loaded directly, all or nothing;
- a ``.safetensors`` / ``.pyth`` / ``.pth`` checkpoint of pycls, timm or torchvision is
  converted on the fly (:mod:`keras_regnet.conversion`).
"""

from __future__ import annotations

import logging
import os
import warnings

from keras_regnet import conversion, downloads, integrity
from keras_regnet import model as architecture
from keras_regnet.files import atomic_path
from keras_regnet.references import detect_source
from keras_regnet.variants import get_variant
from keras_regnet.weight_choice import ResolvedWeights
from keras_regnet.weight_table import DEFAULT_TAG, WeightSet, get_weight_set

log = logging.getLogger(__name__)


def check_weights_argument(weights: ResolvedWeights, include_top: bool, classes: int) -> None:
    """What ``weights`` cannot do with these builder arguments, raised before anything is
    built or downloaded (what it names was checked when it was resolved)."""
    if weights.kind == "tag" and include_top and classes != 1000:
        raise ValueError(
            f"weights={weights.tag!r} with include_top=True has 1000 classes, got classes={classes}. "
            f"For another class count use include_top=False and add your own head, or "
            f"weights=None.")


def load_weights(model, weights: ResolvedWeights) -> None:
    """Loads resolved weights into a built ``model``: a weight set through the converted
    cache, a .weights.h5 file directly, a pycls / timm / torchvision checkpoint converted.

    Example:
        >>> import os, tempfile
        >>> from keras_regnet.weight_choice import resolve_weights
        >>> model = keras_regnet.RegNetX002(weights=None, input_shape=(64, 64, 3))
        >>> path = os.path.join(tempfile.mkdtemp(), "x002.weights.h5")
        >>> save_keras_weights(model, path)
        >>> weights = resolve_weights(path, "RegNetX002")
        >>> weights.kind, weights.source
        ('keras', 'keras_regnet')
        >>> load_weights(model, weights)
    """
    if weights.kind == "tag":
        path = _fetch_converted(weights.weight_set)
        try:
            load_keras_weights(model, path)
        except conversion.WeightsFileError as err:  # a damaged cache entry: rebuild it once
            log.warning("%s; deleting it and converting the weights again", err)
            os.remove(path)
            load_keras_weights(model, _fetch_converted(weights.weight_set))
    elif weights.kind == "keras":
        load_keras_weights(model, weights.path)
    elif weights.kind == "checkpoint":
        conversion.load_state_dict_file(model, weights.path)


def adapt_stem_kernel(kernel, channels: int):
    """The RGB stem kernel ``[kh, kw, 3, out]`` for ``channels`` input channels: one channel
    gets the three filters summed (a grey image then gives what its RGB copy gave); N
    channels get them repeated over the N inputs and scaled by 3 / N, keeping the stem's
    output scale.

    Example:
        >>> import numpy as np
        >>> adapt_stem_kernel(np.ones((3, 3, 3, 8)), 1)[0, 0, :, 0]
        array([3.])
        >>> adapt_stem_kernel(np.ones((3, 3, 3, 8)), 4)[0, 0, :, 0]
        array([0.75, 0.75, 0.75, 0.75])
    """
    import numpy as np

    kernel = np.asarray(kernel)
    if channels == 1:
        return kernel.sum(axis=2, keepdims=True)
    repeats = -(-channels // 3)
    return np.tile(kernel, (1, 1, repeats, 1))[:, :, :channels] * (3.0 / channels)


def load_weights_adapting_stem(model, weights: ResolvedWeights, rgb_model) -> None:
    """Pretrained RGB weights into ``model``, whose input has another channel count:
    ``rgb_model`` (the same network with 3 input channels) loads them, ``model`` takes every
    layer's weights from it, the stem's adapted by :func:`adapt_stem_kernel`."""
    load_weights(rgb_model, weights)
    for layer in model.layers:
        if not layer.weights:
            continue
        values = rgb_model.get_layer(layer.name).get_weights()
        if layer.name == "stem_conv":
            channels = layer.kernel.shape[2]
            values = [adapt_stem_kernel(values[0], channels), *values[1:]]
        layer.set_weights(values)


def converted_path(model: str, tag: str) -> str:
    return os.path.join(downloads.cache_dir(writable=False),
                        f"{get_variant(model).name}_{tag}.weights.h5")


def fetch_converted(model: str, tag: str = DEFAULT_TAG) -> str:
    """Path of the converted full-model ``.weights.h5`` of a weight set, building it once.

    A read-only cache that already holds it is used as it is. Otherwise each source is tried
    in turn; a file enters the cache only once it reads as a checkpoint AND fits this model
    (a mirror serving another model's checkpoint is discarded, naming the file, and the next
    source is tried).
    """
    return _fetch_converted(get_weight_set(model, tag))


def _fetch_converted(weight_set: WeightSet) -> str:
    target = converted_path(weight_set.model, weight_set.tag)
    cache = downloads.cache_dir(writable=False)
    if os.path.exists(target):
        try:
            integrity.check_file(cache, target)
            return target
        except integrity.IntegrityError as err:
            log.warning("%s; deleting it and converting the weights again", err)
            os.remove(target)
    downloads.cache_dir()  # the cache must be writable from here on: a clear error if not
    errors = []
    for dl in weight_set.downloads:
        keras_model = architecture.build(weight_set.model)
        try:
            _fetch_into(keras_model, dl)
        except downloads.DownloadError as err:
            errors.append(str(err))
            continue
        save_keras_weights(keras_model, target)
        integrity.record_file(cache, target)
        return target
    raise downloads.DownloadError(
        f"Could not fetch weights {weight_set.tag!r} for {weight_set.model} from any of its "
        f"{len(errors)} sources:\n  " + "\n  ".join(errors))


def _fetch_into(keras_model, dl) -> None:
    """Downloads (once) a checkpoint and loads it into ``keras_model``. A cached file that no
    longer reads or does not fit (damaged on disk, left by an older version, a wrong file from
    a mirror) is deleted, with a warning naming it, and fetched again."""

    def fits(path: str) -> None:
        try:
            state = conversion.read_checkpoint(path)
            conversion.load_torch_state_dict(keras_model, state, dl.source)
        except ValueError as err:  # WeightsFileError too; the first line says what is wrong
            raise ValueError(f"{dl.filename} is not a {dl.source} checkpoint of "
                             f"{keras_model.name}: {str(err).splitlines()[0]}") from None

    directory = os.path.join(downloads.cache_dir(), "downloads")
    cached = os.path.join(directory, dl.filename)
    if os.path.exists(cached):
        try:
            integrity.check_file(os.path.dirname(directory), cached)
            fits(cached)
            return
        except ValueError as err:  # IntegrityError too: changed on disk since it was recorded
            log.warning("%s (cached at %s); deleting it and downloading it again", err, cached)
            os.remove(cached)
    downloads.download(dl, directory, validate=fits)


def convert_state_dict(state, model: str, output: str, source: str | None = None) -> str:
    """Converts an already-read state dict to a full-model ``.weights.h5`` at ``output``."""
    source = source or detect_source(state)
    keras_model = architecture.build(model)
    conversion.load_torch_state_dict(keras_model, state, source)
    save_keras_weights(keras_model, output)
    return output


def save_keras_weights(model, path: str) -> None:
    """``model.save_weights(path)``, atomically: the file appears complete or not at all."""
    with atomic_path(path, suffix=".weights.h5") as tmp:  # Keras wants the suffix
        model.save_weights(tmp, overwrite=True)


def load_keras_weights(model, path: str) -> None:
    """Loads a keras_regnet ``.weights.h5`` into ``model``, with or without its head.

    Keras keys weights by layer order and class, and our head layers come last, so a
    full-model file also loads into the same network built with ``include_top=False``.
    Keras only warns when parts of a file find no place in the model (and leaves those layers
    as initialised); here that is an error, so no model is ever half loaded.
    """
    import h5py

    if not h5py.is_hdf5(path):
        size = os.path.getsize(path)
        what = f"{size:,} bytes, not HDF5" if size else "it is empty"
        raise conversion.WeightsFileError(
            f"{path} is not a readable .weights.h5 file ({what}). Convert or save it again.")
    problem = None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            model.load_weights(path)
        except ValueError as err:
            problem = err
        except OSError as err:  # a damaged HDF5 file
            raise conversion.WeightsFileError(f"{path} is not a readable .weights.h5 file ({err}). "
                                              f"Convert or save it again.") from err
    for warning in caught:
        if problem is None and "Skipping" in str(warning.message):
            problem = warning.message
        elif "Skipping" not in str(warning.message):
            warnings.warn_explicit(warning.message, warning.category, warning.filename, warning.lineno)
    if problem is not None:
        raise ValueError(
            f"Could not load {path!r} into {model.name}: the file does not match this "
            f"architecture (check the model, include_top and classes). {problem}") from problem
