"""The ``keras-regnet`` command: list models and inspect one.

    keras-regnet list                 # the model table with exact complexity
    keras-regnet info RegNetY032      # build it, check it against the analytic counts, time it
    keras-regnet weights              # the pretrained weight sets
    keras-regnet export --model RegNetY032 --weights none --output ./served   # TF Serving
    keras-regnet convert --source pycls --checkpoint X.pyth --model RegNetX004 \\
        --output x004.weights.h5 --verify
    keras-regnet preset --model RegNetX004 --weights imagenet --output ./regnetx004_imagenet
    keras-regnet train --strategy mirrored   # = python training/train.py: the demo run
"""

from __future__ import annotations

import argparse
import os
import sys
import time

# Keeps TensorFlow's start-up chatter out of the CLI's output. Effective because the command
# imports the package without TensorFlow (keras_regnet/__init__.py) and loads it only here after.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _list(args: argparse.Namespace) -> int:
    from keras_regnet.tables import model_table

    print(model_table(), end="")
    return 0


def _weights(args: argparse.Namespace) -> int:
    if args.verify:
        from keras_regnet.downloads import cache_dir
        from keras_regnet.integrity import verify_cache

        cache = cache_dir(writable=False)
        report = verify_cache(cache) if os.path.isdir(cache) else []
        for name, status in report:
            print(f"{status:<13}{name}")
        changed = sum(status == "CHANGED" for _, status in report)
        print(f"{len(report)} files in {cache}: {changed} changed since they were recorded")
        return 1 if changed else 0
    from keras_regnet.weight_table import list_weights

    list_weights()
    return 0


def _info(args: argparse.Namespace) -> int:
    import numpy as np

    from keras_regnet.design.complexity import count
    from keras_regnet.model import build
    from keras_regnet.variants import get_variant

    variant = get_variant(args.model)
    cx = count(variant.spec, resolution=args.size)
    print(f"{variant.name} ({variant.paper_name}) at {args.size}x{args.size}: "
          f"{cx['flops']:,} multiply-adds, {cx['params']:,} params, {cx['acts']:,} activations")
    spec = variant.spec
    print(f"  stage widths {list(spec.widths)}, depths {list(spec.depths)}, "
          f"group widths {list(spec.group_widths)}, SE ratio {spec.se_ratio}")
    model = build(variant.name, input_shape=(args.size, args.size, 3))
    built = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    print(f"  Keras model: {len(model.layers)} layers, {built:,} trainable params "
          f"({'equal to' if built == cx['params'] else 'DIFFERENT FROM'} the analytic count)")
    x = np.random.default_rng(0).uniform(0, 255, (args.batch, args.size, args.size, 3))
    model.predict_on_batch(x.astype("float32"))  # warm-up / tracing
    start = time.perf_counter()
    probs = model.predict_on_batch(x.astype("float32"))
    elapsed = time.perf_counter() - start
    print(f"  forward pass: batch {args.batch} in {elapsed * 1000:.0f} ms "
          f"({args.batch / elapsed:.1f} images/s); softmax sums to {float(probs.sum(1).mean()):.6f}")
    return 0 if built == cx["params"] else 1


class _VerificationFailed(Exception):
    pass


# Each command's argument errors, raised before Keras loads or anything is fetched: a typo is
# one line at once, not after ~8 s of imports or a download (main runs them first).
def _check_model(args: argparse.Namespace) -> None:
    from keras_regnet.variants import get_variant

    get_variant(args.model)  # an unknown name: ValueError naming it


def _check_convert(args: argparse.Namespace) -> None:
    from keras_regnet.conversion import check_checkpoint_path

    _check_model(args)
    check_checkpoint_path(args.checkpoint)
    if not args.output.endswith(".weights.h5"):
        raise ValueError(f"--output must end with .weights.h5 (Keras's weights format), got {args.output!r}.")
    if os.path.exists(args.output) and not args.overwrite:
        raise FileExistsError(f"{args.output} already exists; pass --overwrite to replace it.")


def _check_preset(args: argparse.Namespace) -> None:
    from keras_regnet.variants import get_variant
    from keras_regnet.weight_choice import resolve_weights

    # Decided here, once (fetching nothing); write_preset takes the resolved value as it is.
    args.weights = resolve_weights(args.weights, get_variant(args.model).name)
    _parse_transform(args)


def _check_sweep(args: argparse.Namespace) -> None:
    if args.sweep_command != "train":  # (sample and analyze run without Keras anyway)
        return
    for path in args.files:
        if not os.path.isfile(path):
            raise FileNotFoundError(f"sweep file {path} does not exist; write one with "
                                    f"`keras-regnet sweep sample --space RegNetX --n 32 --out {path}`.")
    if args.data_dir is not None and not os.path.isdir(args.data_dir):
        raise FileNotFoundError(f"--data_dir {args.data_dir} is not a folder of TFRecord shards.")


def _format(args: argparse.Namespace) -> str:
    return "litert" if args.format == "tflite" else args.format


def _check_export(args: argparse.Namespace) -> None:
    from keras_regnet.calibration import check_calibration_source

    fmt = _format(args)
    if args.model and not str(args.weights).endswith(".keras"):  # (a .keras file's is only its name)
        _check_model(args)
    if args.top_k < 1:
        raise ValueError(f"--top_k must be a positive integer, got {args.top_k}.")
    if args.max_pixels < 1:
        raise ValueError(f"--max_pixels must be a positive integer, got {args.max_pixels}.")
    if args.quantize == "dynamic" and fmt != "litert":
        raise ValueError("--quantize dynamic applies to --format litert only.")
    if args.quantize == "int8" and fmt == "saved_model":
        raise ValueError("--quantize int8 applies to --format litert, onnx and openvino.")
    if (args.quantize == "int8") != (args.calibration is not None):
        raise ValueError("--quantize int8 needs --calibration DIR (images or TFRecords like those "
                         "the model will serve), and --calibration applies to --quantize int8 only.")
    if args.calibration is not None:
        check_calibration_source(args.calibration)
        if args.calibration_images < 1:
            raise ValueError(f"--calibration-images must be a positive integer, got "
                             f"{args.calibration_images}.")
    _parse_transform(args)


def _parse_transform(args: argparse.Namespace) -> None:
    """``--eval-transform`` parsed once, as ``args.transform`` (None: the weights' own)."""
    from keras_regnet.transforms import EvalTransform

    args.transform = EvalTransform.parse(args.eval_transform) if args.eval_transform else None


def _convert(args: argparse.Namespace) -> int:
    import numpy as np

    from keras_regnet import conversion, verify
    from keras_regnet.files import atomic_path
    from keras_regnet.weights import convert_state_dict
    from keras_regnet.writers import exclusive_writer

    state = conversion.read_checkpoint(args.checkpoint)  # read once for conversion and check
    # The reference is built first: a missing library fails before anything is written.
    reference = verify.build_reference(args.model, args.source) if args.verify else None
    try:
        # The output appears only when converted (and verified): never a file that failed.
        with exclusive_writer(args.output), atomic_path(args.output, suffix=".weights.h5") as tmp:
            convert_state_dict(state, args.model, tmp, source=args.source)
            if reference is not None:
                images = np.random.default_rng(0).uniform(0, 255, (4, 224, 224, 3)).astype("float32")
                diff = verify.verify_state_dict(reference, state, args.model, args.source, tmp, images)
                ok = diff <= args.tolerance
                print(f"verify: max |logits difference| against {args.source} = {diff:.3g} on 4 "
                      f"random 224x224 images ({'OK' if ok else 'FAILED'}, tolerance {args.tolerance:g})")
                if not ok:
                    raise _VerificationFailed
    except _VerificationFailed:
        print(f"keras-regnet: not written: {args.output} (verification failed)", file=sys.stderr)
        return 1
    print(f"wrote {args.output}")
    return 0


def _export(args: argparse.Namespace) -> int:
    import keras
    import numpy as np

    from keras_regnet import export, formats
    from keras_regnet.deployable import load_deployable

    fmt = _format(args)
    target = load_deployable(args.weights, args.model, classes=args.classes, transform=args.transform,
                             labels=args.labels)
    transform = target.transform
    start = time.perf_counter()
    if fmt == "saved_model":
        path = export.export_saved_model(target.model, args.output, args.version,
                                         model_name=args.name or target.name.lower(),
                                         class_names=target.class_names, transform=transform,
                                         top_k=args.top_k, overwrite=args.overwrite,
                                         max_pixels=args.max_pixels,
                                         weights_record=target.weights and target.weights.describe())
        print(f"wrote SavedModel {path} in {time.perf_counter() - start:.1f} s (signatures "
              f"{export.SIGNATURE_IMAGES}, {export.SIGNATURE_BYTES}; {len(target.class_names)} "
              f"classes; eval transform resize {transform.resize}, crop {transform.crop}, "
              f"{transform.interpolation})")
        return 0
    suffix = f"_{args.quantize}" if args.quantize != "none" else ""
    path = formats.artifact_path(args.output, f"{target.name}{suffix}", fmt)
    calibration = None
    if args.quantize == "int8":
        from keras_regnet.calibration import calibration_images

        calibration = calibration_images(args.calibration, transform, args.calibration_images)
    if fmt == "litert":
        export.export_tflite(target.model, path, quantize=args.quantize, overwrite=args.overwrite,
                             image_size=transform.crop, calibration=calibration)
    elif calibration is not None:
        from keras_regnet import int8

        quantized = int8.export_onnx_int8 if fmt == "onnx" else int8.export_openvino_int8
        quantized(target.model, path, calibration, overwrite=args.overwrite)
    else:
        formats.export_keras_format(export.fold_for_inference(target.model), path, fmt,
                                    overwrite=args.overwrite)
    images = np.random.default_rng(0).uniform(0, 255, (1, transform.crop, transform.crop, 3))
    drift = float(np.max(np.abs(formats.run_artifact(path, images.astype("float32"))
                                - keras.ops.convert_to_numpy(target.model(images.astype("float32"),
                                                                             training=False)))))
    print(f"wrote {path} ({os.path.getsize(path) / 1e6:.1f} MB) in {time.perf_counter() - start:.1f} s; "
          f"input RGB 0-255 [batch, height, width, 3] -> probabilities over "
          f"{len(target.class_names)} classes; max |difference| against the Keras model: {drift:.3g}")
    return 0


def _preset(args: argparse.Namespace) -> int:
    try:
        from keras_regnet.hub import write_preset
    except ImportError as err:
        raise ImportError(f"keras-regnet preset needs KerasHub: pip install 'keras-regnet[hub]' "
                          f"({err})") from err

    start = time.perf_counter()
    path, difference = write_preset(args.model, args.weights, args.output, overwrite=args.overwrite,
                                    allow_non_commercial=args.allow_non_commercial,
                                    transform=args.transform, classes=args.classes)
    print(f"wrote KerasHub preset {path} in {time.perf_counter() - start:.1f} s; loaded back with "
          f"keras_hub.models.ImageClassifier.from_preset: max |logits difference| against "
          f"keras_regnet.{args.model} = {difference:.3g}")
    return 0


def _sweep(args: argparse.Namespace) -> int:
    from keras_regnet.design.sampling import parse_window
    from keras_regnet.training import sweep

    if args.sweep_command == "sample":
        records = sweep.sample_file(args.space, args.n, args.seed, args.out,
                                    flops=parse_window(args.flops), params=parse_window(args.params),
                                    acts=parse_window(args.acts))
        print(f"wrote {len(records)} {args.space} models to {args.out}")
    elif args.sweep_command == "train":
        for path in args.files:  # one process for every file: TensorFlow starts once
            records = sweep.train_file(path, args.epochs, data_dir=args.data_dir,
                                       image_size=args.image_size, batch_size=args.batch_size,
                                       num_classes=args.num_classes, steps_per_epoch=args.steps_per_epoch)
            print(f"{sum('error' in r for r in records)}/{len(records)} models trained in {path}")
    else:
        print(f"wrote {sweep.analyze_files(args.files, args.out)}")
    return 0


def _runs_without_keras(args: argparse.Namespace) -> bool:
    """Commands that start in well under a second: no TensorFlow, no Keras."""
    return args.command in ("list", "weights") or (
        args.command == "sweep" and args.sweep_command in ("sample", "analyze"))


def main(argv: list[str] | None = None) -> int:
    # The choices come from the library's constants, never restated here.
    from keras_regnet.design.sampling import SPACES
    from keras_regnet.export_choices import (
        DEFAULT_CALIBRATION_IMAGES,
        DEFAULT_MAX_PIXELS,
        FORMATS,
        QUANTIZATIONS,
    )
    from keras_regnet.references import SOURCES
    from keras_regnet.writers import TargetInUseError

    parser = argparse.ArgumentParser(prog="keras-regnet", description="RegNet for Keras 3.")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="print the model table").set_defaults(func=_list)
    info = sub.add_parser("info", help="build one model and report its size and speed")
    info.add_argument("model", help="a name from `keras-regnet list`, e.g. RegNetY032")
    info.add_argument("--size", type=int, default=224)
    info.add_argument("--batch", type=int, default=8)
    info.set_defaults(func=_info, check=_check_model)
    convert = sub.add_parser("convert", help="convert a pycls/timm/torchvision checkpoint")
    convert.add_argument("--source", required=True, choices=SOURCES)
    convert.add_argument("--checkpoint", required=True, help=".pyth, .pth or .safetensors file")
    convert.add_argument("--model", required=True, help="e.g. RegNetY032")
    convert.add_argument("--output", required=True, help="NAME.weights.h5")
    convert.add_argument("--verify", action="store_true",
                         help="compare logits with the reference PyTorch model (needs torch)")
    convert.add_argument("--tolerance", type=float, default=1e-4)
    convert.add_argument("--overwrite", action="store_true", help="replace an existing --output")
    convert.set_defaults(func=_convert, check=_check_convert)
    exp = sub.add_parser("export", help="SavedModel for TF Serving, ONNX, LiteRT or OpenVINO")
    exp.add_argument("--model", help="e.g. RegNetY032 (not needed for a .keras file or a run directory)")
    exp.add_argument("--weights", default="imagenet",
                     help="imagenet, none, a weight tag, a weights file, a .keras model, or a "
                          "trainer's model directory (runs/demo)")
    exp.add_argument("--classes", type=int, help="classes of the weights' head (default: the "
                     "run's, else 1000)")
    exp.add_argument("--eval-transform", "--eval_transform", dest="eval_transform",
                     help="RESIZE/CROP INTERPOLATION for encoded images, e.g. '37/32 bilinear'; "
                          "default: the weight tag's or run's, else '256/224 bilinear'")
    exp.add_argument("--labels", help="class names, one per line (default: the run's, ImageNet's "
                     "for 1000 classes, else class_0 ...)")
    exp.add_argument("--output", required=True,
                     help="SavedModel: the model base directory (written to OUTPUT/VERSION); other "
                          "formats: a folder, or the file's path")
    exp.add_argument("--version", type=int, default=1)
    exp.add_argument("--format", choices=FORMATS, default="saved_model")
    exp.add_argument("--quantize", choices=QUANTIZATIONS, default="none",
                     help="dynamic: LiteRT only; int8 (LiteRT: full integer; ONNX: static QDQ; "
                          "OpenVINO: that QDQ file converted), calibrated on --calibration")
    exp.add_argument("--calibration", help="int8: a folder of images, or of the trainer's TFRecords, "
                     "like those the model will serve")
    exp.add_argument("--calibration-images", "--calibration_images", dest="calibration_images", type=int,
                     default=DEFAULT_CALIBRATION_IMAGES, help="int8: how many calibration images to use")
    exp.add_argument("--top_k", type=int, default=5)
    exp.add_argument("--name", help="served model name used in the warmup requests")
    exp.add_argument("--max_pixels", type=int, default=DEFAULT_MAX_PIXELS,
                     help="largest image (height x width) a request may carry (SavedModel)")
    exp.add_argument("--overwrite", action="store_true", help="replace an existing version/file")
    exp.set_defaults(func=_export, check=_check_export)
    preset = sub.add_parser("preset", help="write a KerasHub preset folder (from_preset loads it)")
    preset.add_argument("--model", required=True, help="e.g. RegNetY032")
    preset.add_argument("--weights", default="imagenet",
                        help="imagenet, none, a weight tag, or a .weights.h5/.safetensors/.pyth/.pth file")
    preset.add_argument("--output", required=True, help="the preset folder to write")
    preset.add_argument("--classes", type=int, default=1000, help="classes of the weights' head")
    preset.add_argument("--eval-transform", help="RESIZE/CROP INTERPOLATION the preprocessor applies, "
                        "e.g. '37/32 bilinear'; default: the weight tag's, or '256/224 bilinear'")
    preset.add_argument("--overwrite", action="store_true", help="replace an existing folder")
    preset.add_argument("--allow-non-commercial", action="store_true",
                        help="allow weight sets whose licence forbids commercial use (SWAG)")
    preset.set_defaults(func=_preset, check=_check_preset)
    sweep = sub.add_parser("sweep", help="design-space sweeps: sample, train, analyze")
    sweep_sub = sweep.add_subparsers(dest="sweep_command", required=True)
    sample = sweep_sub.add_parser("sample", help="sample models of a design space")
    sample.add_argument("--space", required=True, choices=SPACES)
    sample.add_argument("--n", type=int, required=True)
    sample.add_argument("--seed", type=int, default=0)
    sample.add_argument("--flops", help="multiply-add window LO:HI, e.g. 360M:400M")
    sample.add_argument("--params", help="parameter window LO:HI")
    sample.add_argument("--acts", help="activation window LO:HI")
    sample.add_argument("--out", required=True, help="FILE.jsonl")
    train = sweep_sub.add_parser("train", help="train each sampled model briefly (resumable)")
    train.add_argument("files", nargs="+", metavar="FILE", help="sweep files, trained in turn")
    train.add_argument("--epochs", type=int, default=10)
    train.add_argument("--data_dir", help="TFRecords; default the embedded digits demo")
    train.add_argument("--image_size", type=int, default=32)
    train.add_argument("--batch_size", type=int, default=64)
    train.add_argument("--num_classes", type=int)
    train.add_argument("--steps_per_epoch", type=int,
                       help="shorter epochs for a quick look (default: one pass over the data)")
    analyze = sweep_sub.add_parser("analyze", help="EDF plots and report.html")
    analyze.add_argument("files", nargs="+")
    analyze.add_argument("--out", required=True)
    sweep.set_defaults(func=_sweep, check=_check_sweep)
    sub.add_parser("train", add_help=False,
                   help="train, evaluate and export (training/train.py; `train --help` for its flags)")
    weights = sub.add_parser("weights", help="print the pretrained weights table")
    weights.add_argument("--verify", action="store_true",
                         help="re-hash every file of the weights cache against its manifest")
    weights.set_defaults(func=_weights)
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["train"]:  # the trainer parses its own (absl) flags
        from keras_regnet.training.main import run_main

        run_main(["keras-regnet train", *argv[1:]])
        return 0
    args = parser.parse_args(argv)
    try:
        if getattr(args, "check", None):
            args.check(args)
    except (ValueError, OSError) as err:
        return _error(err)
    if not _runs_without_keras(args):
        from keras_regnet import keras_side

        keras_side.load()  # registers what `import keras_regnet` registers outside the CLI
    try:
        return args.func(args)
    except (ValueError, OSError, ImportError, TargetInUseError) as err:  # input, files, network, extras
        return _error(err)


def _error(err: Exception) -> int:
    print(f"keras-regnet: error: {err}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
