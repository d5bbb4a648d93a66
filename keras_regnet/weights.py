"""Registry of pretrained weight sets, and their download, conversion cache and loading.

``weights="imagenet"`` means the model's default tag: the reference pycls weights (paper
accuracy, MIT) for the 24 published models, torchvision's V1 weights for the three TV-width
variants. Other tags (``tv2_in1k``, ``ra3_in1k``, ``swag_e2e_in1k``, ...) select better-trained
sets where they exist: ``RegNetY032(weights="tv2_in1k")``. ``list_weights()`` prints them all.

Files are downloaded into ``$KERAS_HOME/keras_regnet`` (default ``~/.keras/keras_regnet``),
converted once to a ``.weights.h5`` beside them, and loaded from there afterwards. Every file
is written to a temporary name and renamed into place only when complete and verified, so an
interrupted or corrupt download is never loaded later.
"""

from __future__ import annotations

import csv
import dataclasses
import functools
import hashlib
import os
import sys
import urllib.error
import urllib.request
import warnings

from keras_regnet.files import atomic_path
from keras_regnet.variants import VARIANTS, get_variant

DEFAULT_TAG = "imagenet"
HF = "https://huggingface.co/timm/{}/resolve/main/model.safetensors"
PYCLS = "https://dl.fbaipublicfiles.com/pycls/dds_baselines/{}/{}_dds_8gpu.pyth"
TORCHVISION = "https://download.pytorch.org/models/{}.pth"

# pycls's published checkpoint ids (dds_baselines/<id>/<name>_dds_8gpu.pyth).
_PYCLS_IDS = {
    "RegNetX-200MF": 160905981, "RegNetX-400MF": 160905967, "RegNetX-600MF": 160906442,
    "RegNetX-800MF": 160906036, "RegNetX-1.6GF": 160990626, "RegNetX-3.2GF": 160906139,
    "RegNetX-4.0GF": 160906383, "RegNetX-6.4GF": 161116590, "RegNetX-8.0GF": 161107726,
    "RegNetX-12GF": 160906020, "RegNetX-16GF": 158460855, "RegNetX-32GF": 158188473,
    "RegNetY-200MF": 176245422, "RegNetY-400MF": 160906449, "RegNetY-600MF": 160981443,
    "RegNetY-800MF": 160906567, "RegNetY-1.6GF": 160906681, "RegNetY-3.2GF": 160906834,
    "RegNetY-4.0GF": 160906838, "RegNetY-6.4GF": 160907112, "RegNetY-8.0GF": 161160905,
    "RegNetY-12GF": 160907100, "RegNetY-16GF": 161303400, "RegNetY-32GF": 161277763,
}
# torchvision's weight files and reported ImageNet top-1: name -> {tag: (file stem, top-1)}.
_TORCHVISION = {
    "regnet_x_400mf": {"tv1_in1k": ("regnet_x_400mf-adf1edd5", 72.834),
                       "tv2_in1k": ("regnet_x_400mf-62229a5f", 74.864)},
    "regnet_x_800mf": {"tv1_in1k": ("regnet_x_800mf-ad17e45c", 75.212),
                       "tv2_in1k": ("regnet_x_800mf-94a99ebd", 77.522)},
    "regnet_x_1_6gf": {"tv1_in1k": ("regnet_x_1_6gf-e3633e7f", 77.04),
                       "tv2_in1k": ("regnet_x_1_6gf-a12f2b72", 79.668)},
    "regnet_x_3_2gf": {"tv1_in1k": ("regnet_x_3_2gf-f342aeae", 78.364),
                       "tv2_in1k": ("regnet_x_3_2gf-7071aa85", 81.196)},
    "regnet_x_8gf": {"tv1_in1k": ("regnet_x_8gf-03ceed89", 79.344),
                     "tv2_in1k": ("regnet_x_8gf-2b70d774", 81.682)},
    "regnet_x_16gf": {"tv1_in1k": ("regnet_x_16gf-2007eb11", 80.058),
                      "tv2_in1k": ("regnet_x_16gf-ba3796d7", 82.716)},
    "regnet_x_32gf": {"tv1_in1k": ("regnet_x_32gf-9d47f8d0", 80.622),
                      "tv2_in1k": ("regnet_x_32gf-6eb8fdc6", 83.014)},
    "regnet_y_400mf": {"tv1_in1k": ("regnet_y_400mf-c65dace8", 74.046),
                       "tv2_in1k": ("regnet_y_400mf-e6988f5f", 75.804)},
    "regnet_y_800mf": {"tv1_in1k": ("regnet_y_800mf-1b27b58c", 76.42),
                       "tv2_in1k": ("regnet_y_800mf-58fc7688", 78.828)},
    "regnet_y_1_6gf": {"tv1_in1k": ("regnet_y_1_6gf-b11a554e", 77.95),
                       "tv2_in1k": ("regnet_y_1_6gf-0d7bc02a", 80.876)},
    "regnet_y_3_2gf": {"tv1_in1k": ("regnet_y_3_2gf-b5a9779c", 78.948),
                       "tv2_in1k": ("regnet_y_3_2gf-9180c971", 81.982)},
    "regnet_y_8gf": {"tv1_in1k": ("regnet_y_8gf-d0d0e4a8", 80.032),
                     "tv2_in1k": ("regnet_y_8gf-dc2b1b54", 82.828)},
    "regnet_y_16gf": {"tv1_in1k": ("regnet_y_16gf-9e6ed7dd", 80.424),
                      "tv2_in1k": ("regnet_y_16gf-3e4a00f9", 82.886),
                      "swag_e2e_in1k": ("regnet_y_16gf_swag-43afe44d", 86.012),
                      "swag_lc_in1k": ("regnet_y_16gf_lc_swag-f3ec0043", 83.976)},
    "regnet_y_32gf": {"tv1_in1k": ("regnet_y_32gf-4dee3f7a", 80.878),
                      "tv2_in1k": ("regnet_y_32gf-8db6d4b5", 83.368),
                      "swag_e2e_in1k": ("regnet_y_32gf_swag-04fdfa75", 86.838),
                      "swag_lc_in1k": ("regnet_y_32gf_lc_swag-e1583746", 84.622)},
}
# timm-trained sets re-hosted as safetensors (same architectures as pycls's).
_TIMM_EXTRA = {"RegNetY032": "ra_in1k", "RegNetY040": "ra3_in1k", "RegNetY064": "ra3_in1k",
               "RegNetY080": "ra3_in1k"}


@dataclasses.dataclass(frozen=True)
class EvalTransform:
    """How the weights were evaluated: resize the short side, center crop, interpolation."""

    resize: int = 256
    crop: int = 224
    interpolation: str = "bilinear"


@dataclasses.dataclass(frozen=True)
class Download:
    """One place a weight file can be fetched from, in a given state-dict naming."""

    url: str
    source: str  # "pycls" | "timm" | "torchvision": the conversion source of this file
    sha256: str | None = None  # verified when known
    sha256_prefix: str | None = None  # torchvision puts the first hex digits in the name

    @property
    def filename(self) -> str:
        parts = self.url.split("/")
        if "resolve" in parts:  # hub files are all model.safetensors: name them by repo
            return parts[parts.index("resolve") - 1] + "." + parts[-1].rsplit(".", 1)[-1]
        return parts[-1]


@dataclasses.dataclass(frozen=True)
class WeightSet:
    model: str
    tag: str
    downloads: tuple[Download, ...]
    license: str
    top1: float | None
    transform: EvalTransform
    notes: str = ""


def _csv_top1() -> dict[str, float]:
    path = os.path.join(os.path.dirname(__file__), "data", "pycls_model_zoo.csv")
    with open(path, newline="") as f:
        return {row["model"]: round(100 - float(row["top1_err"]), 3) for row in csv.DictReader(f)}


def _torchvision_download(stem: str) -> Download:
    return Download(TORCHVISION.format(stem), "torchvision", sha256_prefix=stem.rsplit("-", 1)[1])


def torchvision_model_name(variant_name: str) -> str | None:
    """torchvision's name for a variant where torchvision's architecture is identical, else None.

    Example:
        >>> torchvision_model_name("RegNetY016"), torchvision_model_name("RegNetX004")
        ('regnet_y_1_6gf', None)
    """
    from keras_regnet.conversion import reference_model_name

    name = reference_model_name(variant_name, "torchvision")
    tv_names = {v.paper_name for v in VARIANTS.values() if v.spec.rounding == "torchvision"}
    # For pycls-rounded variants, torchvision's x_400mf / y_800mf / y_8gf are other networks.
    if get_variant(variant_name).spec.rounding == "pycls" and name in tv_names:
        return None
    return name if name in _TORCHVISION else None


@functools.lru_cache(maxsize=1)
def registry() -> dict[tuple[str, str], WeightSet]:
    """All weight sets, keyed by (model, tag). ``tag="imagenet"`` is each model's default."""
    from keras_regnet.conversion import reference_model_name

    top1 = _csv_top1()
    sets: dict[tuple[str, str], WeightSet] = {}
    tv_transforms = {"tv1_in1k": EvalTransform(256, 224), "tv2_in1k": EvalTransform(232, 224),
                     "swag_e2e_in1k": EvalTransform(384, 384, "bicubic"),
                     "swag_lc_in1k": EvalTransform(224, 224, "bicubic")}
    for name, v in VARIANTS.items():
        timm = reference_model_name(name, "timm")
        if v.spec.rounding == "pycls":
            sets[name, DEFAULT_TAG] = WeightSet(
                name, DEFAULT_TAG,
                (Download(HF.format(f"{timm}.pycls_in1k"), "timm"),
                 Download(PYCLS.format(_PYCLS_IDS[v.paper_name], v.paper_name), "pycls")),
                "MIT", top1[v.paper_name], EvalTransform(256, 224),
                "pycls reference weights (the paper's models); the hub file is timm's RGB re-host "
                "of the same checkpoint.")
        tv_name = torchvision_model_name(name)
        for tag, (stem, acc) in _TORCHVISION.get(tv_name, {}).items():
            swag = tag.startswith("swag")
            hub = {"tv2_in1k": f"{timm}.tv2_in1k", "swag_e2e_in1k": f"{timm}.swag_ft_in1k",
                   "swag_lc_in1k": f"{timm}.swag_lc_in1k"}.get(tag)
            downloads = ((Download(HF.format(hub), "timm"),) if hub else ()) + (
                _torchvision_download(stem),)
            ws = WeightSet(
                name, tag, downloads,
                "CC-BY-NC-4.0 (SWAG: non-commercial use only)" if swag else "BSD-3-Clause",
                acc, tv_transforms[tag],
                "torchvision " + ("SWAG weights, pretrained on Instagram hashtags; NOT for "
                                  "commercial use" if swag else tag[:3].upper() + " recipe"))
            sets[name, tag] = ws
            if v.spec.rounding == "torchvision" and tag == "tv1_in1k":
                sets[name, DEFAULT_TAG] = dataclasses.replace(ws, tag=DEFAULT_TAG)
        if name in _TIMM_EXTRA:
            tag = _TIMM_EXTRA[name]
            sets[name, tag] = WeightSet(
                name, tag, (Download(HF.format(f"{timm}.{tag}"), "timm"),), "Apache-2.0", None,
                EvalTransform(303, 288, "bicubic"),
                "timm RandAugment recipe; evaluated at 288 (crop 0.95); top-1 not recorded here")
    return sets


def list_weights(print_table: bool = True) -> list[WeightSet]:
    """Every registered weight set; prints a table unless ``print_table=False``.

    Example:
        >>> sets = list_weights(print_table=False)
        >>> next(s for s in sets if s.model == "RegNetX002").top1
        68.912
    """
    sets = list(registry().values())
    if print_table:
        print(f"{'model':<14}{'tag':<15}{'top-1':>7}  {'eval':<17}{'licence':<16}source")
        for s in sets:
            t = s.transform
            top1 = f"{s.top1:.2f}" if s.top1 is not None else "-"
            print(f"{s.model:<14}{s.tag:<15}{top1:>7}  {f'{t.resize}->{t.crop} {t.interpolation}':<17}"
                  f"{s.license.split(' ')[0]:<16}{s.downloads[0].url}")
    return sets


def get_weight_set(model: str, tag: str = DEFAULT_TAG) -> WeightSet:
    name = get_variant(model).name
    try:
        return registry()[name, tag]
    except KeyError:
        tags = sorted(t for m, t in registry() if m == name)
        raise ValueError(
            f"No weights {tag!r} for {name}. Available: {', '.join(tags) or 'none'} "
            f"(keras_regnet.list_weights() lists all).") from None


def is_weight_tag(weights) -> bool:
    return isinstance(weights, str) and any(t == weights for _, t in registry())


def cache_dir() -> str:
    """``$KERAS_HOME/keras_regnet`` (``~/.keras/keras_regnet`` by default), created on use."""
    home = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    path = os.path.join(home, "keras_regnet")
    os.makedirs(path, exist_ok=True)
    return path


class _Progress:
    def __init__(self, name: str, total: int | None):
        self.name, self.total, self.done, self.last = name, total, 0, -1
        self.tty = sys.stderr.isatty()

    def update(self, n: int) -> None:
        self.done += n
        if not self.total:
            return
        pct = int(100 * self.done / self.total)
        if pct != self.last and (self.tty or pct % 25 == 0):
            self.last = pct
            bar = "#" * (pct // 4)
            end = "\n" if pct == 100 or not self.tty else ""
            print(f"\r{self.name}: [{bar:<25}] {pct:3d}% of {self.total / 1e6:.1f} MB",
                  end=end, file=sys.stderr, flush=True)


def download(dl: Download, directory: str, timeout: float = 60.0) -> str:
    """Fetches ``dl`` into ``directory`` (once) and returns the local path.

    The body goes to a temporary file in the same directory; it is checked against the
    Content-Length and the known hash, then renamed into place. On any failure the temporary
    file is removed, so nothing partial is ever found at the final path.
    """
    path = os.path.join(directory, dl.filename)
    if os.path.exists(path):
        return path
    with atomic_path(path) as tmp:
        digest = hashlib.sha256()
        try:
            with urllib.request.urlopen(dl.url, timeout=timeout) as response, open(tmp, "wb") as out:
                total = response.headers.get("Content-Length")
                total = int(total) if total else None
                progress = _Progress(dl.filename, total)
                while chunk := response.read(1 << 20):
                    out.write(chunk)
                    digest.update(chunk)
                    progress.update(len(chunk))
        except (urllib.error.URLError, OSError) as err:
            raise ConnectionError(
                f"Could not download {dl.url}: {err}. Without network access, fetch the file "
                f"elsewhere and place it at {path}.") from err
        if total is not None and progress.done != total:
            raise OSError(f"Download of {dl.url} was truncated: got {progress.done} of {total} "
                          f"bytes. Nothing was kept; try again.")
        _check_hash(dl, digest.hexdigest())
    return path


def _check_hash(dl: Download, hexdigest: str) -> None:
    expected = dl.sha256 or dl.sha256_prefix
    if expected and not hexdigest.startswith(expected):
        raise ValueError(
            f"Hash mismatch for {dl.filename} from {dl.url}: expected sha256 "
            f"{expected}{'...' if not dl.sha256 else ''}, got {hexdigest}. The file was "
            f"discarded; if it persists, the server is serving a different file.")


def converted_path(model: str, tag: str) -> str:
    return os.path.join(cache_dir(), f"{get_variant(model).name}_{tag}.weights.h5")


def fetch_converted(model: str, tag: str = DEFAULT_TAG) -> str:
    """Path of the converted full-model ``.weights.h5`` of a weight set, building it once."""
    target = converted_path(model, tag)
    if os.path.exists(target):
        return target
    weight_set = get_weight_set(model, tag)
    errors = []
    for dl in weight_set.downloads:
        try:
            raw = download(dl, os.path.join(cache_dir(), "downloads"))
        except (ConnectionError, OSError, ValueError) as err:
            errors.append(str(err))
            continue
        convert_file(raw, weight_set.model, target, source=dl.source)
        return target
    raise ConnectionError(
        f"Could not fetch weights {tag!r} for {weight_set.model}:\n  " + "\n  ".join(errors))


def convert_file(checkpoint: str, model: str, output: str, source: str | None = None) -> str:
    """Converts a checkpoint file to a full-model ``.weights.h5`` at ``output`` (atomically)."""
    from keras_regnet import conversion

    return convert_state_dict(conversion.read_checkpoint(checkpoint), model, output, source)


def convert_state_dict(state, model: str, output: str, source: str | None = None) -> str:
    """Converts an already-read state dict to a full-model ``.weights.h5`` at ``output``."""
    from keras_regnet import conversion
    from keras_regnet.model import RegNet

    source = source or conversion.detect_source(state)
    keras_model = RegNet(model, weights=None)
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
    problem = None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            model.load_weights(path)
        except ValueError as err:
            problem = err
    for warning in caught:
        if problem is None and "Skipping" in str(warning.message):
            problem = warning.message
        elif "Skipping" not in str(warning.message):
            warnings.warn_explicit(warning.message, warning.category, warning.filename, warning.lineno)
    if problem is not None:
        raise ValueError(
            f"Could not load {path!r} into {model.name}: the file does not match this "
            f"architecture (check the model, include_top and classes). {problem}") from problem
