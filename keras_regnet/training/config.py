"""Training configuration: explicit dataclasses, no global state."""

from __future__ import annotations

import dataclasses
import os

from keras_regnet.design.sampling import design_record, spec_from_record, split_design_reference
from keras_regnet.training.rendezvous import split_address
from keras_regnet.transforms import EvalTransform  # not preprocessing: that loads TensorFlow
from keras_regnet.variants import get_variant

RECIPES = ("pycls", "modern")
# data_parallel: keras.distribution.DataParallel on the JAX backend; the others tf.distribute.
STRATEGIES = ("mirrored", "multi_worker", "tpu", "one_device", "data_parallel")
PRECISIONS = ("fp32", "mixed_float16", "mixed_bfloat16")
EXPORT_FORMATS = ("saved_model", "onnx", "litert", "openvino", "onnx_int8", "litert_int8", "openvino_int8")


@dataclasses.dataclass(frozen=True)
class Recipe:
    """Optimisation recipe. ``pycls`` reproduces the reference's "dds" training.

    ``weight_decay`` is L2 added to the gradient (so it passes through momentum), on every
    parameter, as pycls does; Keras's own ``weight_decay`` is decoupled and lr-scaled, which is
    a different recipe.
    """

    name: str = "pycls"
    base_lr_per_128: float = 0.1  # lr = base_lr_per_128 * global_batch / 128
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 5e-5
    warmup_epochs: int = 5
    warmup_factor: float = 0.1
    label_smoothing: float = 0.0
    mixup: float = 0.0  # MixUp alpha (0: off); keras.layers.MixUp
    cutmix: float = 0.0  # CutMix factor (0: off); keras.layers.CutMix
    randaugment: bool = False  # keras.layers.RandAugment
    ema_decay: float = 0.0  # EMA of the weights (0: off); Keras optimizers' use_ema
    optimizer: str = "sgd"  # "sgd" | "adamw"

    @property
    def soft_labels(self) -> bool:
        return bool(self.label_smoothing or self.mixup or self.cutmix)

    def learning_rate(self, epoch: int, epochs: int, global_batch: int) -> float:
        """Half-cosine to 0, set once per epoch, with a linear warmup factor from 0.1 to 1."""
        import math

        base = self.base_lr_per_128 * global_batch / 128
        lr = 0.5 * base * (1.0 + math.cos(math.pi * epoch / epochs))
        if epoch < self.warmup_epochs:
            alpha = epoch / self.warmup_epochs
            lr *= self.warmup_factor * (1.0 - alpha) + alpha
        return lr


def recipe(name: str) -> Recipe:
    if name == "pycls":
        return Recipe()
    if name == "modern":
        # Everything from Keras 3 itself: AdamW, label smoothing, MixUp, CutMix, RandAugment, EMA.
        return Recipe(name="modern", label_smoothing=0.1, mixup=0.2, cutmix=1.0, randaugment=True,
                      ema_decay=0.9998, optimizer="adamw", base_lr_per_128=1e-3 * 128 / 1024,
                      weight_decay=0.05)
    raise ValueError(f"recipe must be one of {RECIPES}, got {name!r}.")


def _option(default, help: str, choices: tuple | None = None):
    """A TrainConfig field with the help and choices its command-line flag is generated from."""
    return dataclasses.field(default=default, metadata={"help": help, "choices": choices})


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """One training run. ``training/train.py``'s flags are generated from these fields.

    Example:
        >>> TrainConfig(model="RegNetY004", epochs=10).eval_transform
        EvalTransform(resize=256, crop=224, interpolation='bilinear')
    """

    model: str = _option("RegNetX002", "model name (keras-regnet list)")
    design: str | None = _option(None, "train a design-space point instead of --model: FILE[:N], "
                                 "record N (from 1) of a `keras-regnet sweep sample` file")
    data_dir: str | None = _option(None, "TFRecord directory (train-*, validation-*), or the TFDS "
                                   "data_dir with --tfds_name; unset: the embedded digits demo")
    tfds_name: str | None = _option(None, "read a prepared TFDS dataset, e.g. imagenet2012")
    model_dir: str | None = _option(None, "checkpoints, logs, metrics.json, final weights, export/; "
                                    "unset: runs/<model> (the demo: runs/demo)")
    strategy: str = _option("mirrored", "tf.distribute strategy, or data_parallel: keras.distribution."
                            "DataParallel with KERAS_BACKEND=jax", STRATEGIES)
    num_processes: int = _option(1, "--strategy data_parallel: processes in the job (one per host, "
                                 "or per GPU), each started with its --process_id")
    process_id: int = _option(0, "--strategy data_parallel: this process's index, 0 .. num_processes-1")
    coordinator_address: str | None = _option(None, "--strategy data_parallel with several processes: "
                                              "HOST:PORT of process 0, where the others join")
    join_timeout: int = _option(300, "--strategy data_parallel with several processes: seconds each "
                                "waits for the others to join")
    epochs: int = _option(100, "training epochs")
    batch_size: int = _option(1024, "global batch size (split over the replicas)")
    image_size: int = _option(224, "training crop and eval crop size")
    precision: str = _option("fp32", "compute precision", PRECISIONS)
    init_weights: str | None = _option(None, "start from a weight tag (imagenet, tv2_in1k, ...) "
                                       "or a weights file")
    num_classes: int = _option(1000, "classes of the head")
    freeze_stages: int = _option(0, "freeze the stem (1) and stages 1..N-1 (2..5)")
    label_offset: int | None = _option(None, "subtracted from labels; unset: detect 1- vs 0-based")
    recipe: str = _option("pycls", "optimisation recipe", RECIPES)
    cpu_replicas: int = _option(0, "split the CPU into N logical devices for --strategy mirrored "
                                "or data_parallel")
    tpu: str | None = _option(None, "TPU address for --strategy tpu")
    checkpoint_every: int = _option(200, "checkpoint every N steps (and at each epoch's end)")
    seed: int = _option(0, "seeds the initial weights, data order and augmentation")
    shuffle_buffer: int = _option(10_000, "examples in the shuffle buffer")
    steps_per_epoch: int | None = _option(None, "unset: one pass over the training records")
    train_records: int | None = _option(None, "training records per epoch; unset: read from the "
                                        "data's record_counts.json, else counted")
    crop_area_min: float = _option(0.08, "Inception crop's smallest area fraction")
    flip: bool = _option(True, "random horizontal flips (off where mirroring changes the class)")
    eval_steps: int | None = _option(None, "unset: the whole validation split")
    learning_rate: float | None = _option(None, "peak lr for the global batch; unset: the recipe's "
                                          "rule (pycls: 0.1 x batch_size / 128); lower it to fine-tune")
    weight_decay: float | None = _option(None, "unset: the recipe's (pycls: 5e-5 as L2 in the "
                                         "gradient; modern: AdamW's decoupled 0.05)")
    export_formats: str = _option("saved_model", "what the end of the run writes, comma-separated: "
                                  "saved_model (model_dir/export/N), onnx, litert, openvino (model_dir/"
                                  "export/NAME.suffix) and their int8 forms litert_int8, onnx_int8, "
                                  "openvino_int8, calibrated on training images")
    export: bool = _option(True, "write the SavedModel (model_dir/export/N) at the end; "
                           "--noexport: final weights and metrics only")

    def __post_init__(self) -> None:
        get_variant(self.model)  # an unknown name fails here, naming the closest ones
        if self.design:
            design_record(self.design)  # a missing file or a bad record fails here, saying which
        unknown = [f for f in self.export_format_list if f not in EXPORT_FORMATS]
        if unknown or not self.export_format_list:
            raise ValueError(f"--export_formats takes a comma-separated list of {', '.join(EXPORT_FORMATS)}; "
                             f"got {self.export_formats!r}.")
        if self.tfds_name and any(f.endswith("_int8") for f in self.export_format_list):
            raise ValueError("int8 --export_formats calibrate on the run's TFRecords (--data_dir); "
                             "with --tfds_name, export int8 afterwards: keras-regnet export --quantize "
                             "int8 --calibration DIR.")
        if self.model_dir is None:
            object.__setattr__(self, "model_dir", os.path.join("runs", self.run_name))
        if self.strategy not in STRATEGIES:
            raise ValueError(f"--strategy must be one of {STRATEGIES}, got {self.strategy!r}.")
        if self.precision not in PRECISIONS:
            raise ValueError(f"--precision must be one of {PRECISIONS}, got {self.precision!r}.")
        if self.recipe not in RECIPES:
            raise ValueError(f"--recipe must be one of {RECIPES}, got {self.recipe!r}.")
        if self.num_processes < 1 or not 0 <= self.process_id < self.num_processes:
            raise ValueError(f"--process_id must lie in 0 .. --num_processes - 1; got {self.process_id} "
                             f"of {self.num_processes}.")
        if self.num_processes > 1:
            if self.strategy != "data_parallel" or not self.coordinator_address:
                raise ValueError("--num_processes > 1 needs --strategy data_parallel and "
                                 "--coordinator_address HOST:PORT (process 0's); tf.distribute's workers "
                                 "read TF_CONFIG instead.")
            split_address(self.coordinator_address)
            if not self.join_timeout > 0:
                raise ValueError(f"--join_timeout must be positive seconds, got {self.join_timeout}.")
        if self.strategy == "data_parallel" and self.precision == "mixed_float16":
            raise ValueError("--strategy data_parallel trains in fp32 or mixed_bfloat16 (float16 needs "
                             "loss scaling, which only the tf.distribute loop does).")
        if self.image_size < 32:
            raise ValueError(f"--image_size must be at least 32, got {self.image_size}.")
        if self.epochs < 1 or self.batch_size < 1:
            raise ValueError("--epochs and --batch_size must be positive.")
        if self.learning_rate is not None and not self.learning_rate > 0:
            raise ValueError(f"--learning_rate must be positive, got {self.learning_rate}.")
        if self.weight_decay is not None and not self.weight_decay >= 0:
            raise ValueError(f"--weight_decay must be >= 0, got {self.weight_decay}.")
        if self.train_records is not None and self.train_records < 1:
            raise ValueError(f"--train_records must be positive, got {self.train_records}.")
        if not 0 <= self.freeze_stages <= 5:
            raise ValueError(f"--freeze_stages must be 0 (none) .. 5 (stem + 4 stages), got "
                             f"{self.freeze_stages}.")

    @property
    def export_format_list(self) -> list[str]:
        return [f.strip() for f in self.export_formats.split(",") if f.strip()]

    @property
    def run_name(self) -> str:
        """``--model``'s name, or for ``--design FILE[:N]`` the file's stem and N."""
        if not self.design:
            return self.model
        path, line = split_design_reference(self.design)
        return f"{os.path.splitext(os.path.basename(path))[0]}-{line}"

    def design_spec(self):
        """The RegNetSpec / AnyNetSpec of ``--design``, or None (train ``--model``)."""
        return spec_from_record(design_record(self.design)) if self.design else None

    def tuned(self, recipe: Recipe) -> Recipe:
        """The recipe with this run's --learning_rate / --weight_decay overrides applied."""
        changes = {}
        if self.learning_rate is not None:
            changes["base_lr_per_128"] = self.learning_rate * 128 / self.batch_size
        if self.weight_decay is not None:
            changes["weight_decay"] = self.weight_decay
        return dataclasses.replace(recipe, **changes)

    @property
    def eval_transform(self) -> EvalTransform:
        """Short side 256 -> center crop 224 (pycls), scaled to this run's image size."""
        return EvalTransform.for_size(self.image_size)

    def pipeline(self, training: bool, batch_size: int, **changes) -> PipelineConfig:
        """The input pipeline's settings for one split (per-replica ``batch_size``)."""
        settings = dict(image_size=self.image_size, eval_transform=self.eval_transform,
                        seed=self.seed, shuffle_buffer=self.shuffle_buffer,
                        crop_area_min=self.crop_area_min, flip=self.flip)
        return PipelineConfig(training=training, batch_size=batch_size, **(settings | changes))


# The embedded demo (training/train.py without --data_dir): the packaged digit scans at 32x32.
# No flips (a mirrored 2 is no 2) and milder crops (a 0.08 crop of an 8x8 scan is noise).
DEMO_DEFAULTS = dict(epochs=40, batch_size=64, image_size=32, num_classes=10, cpu_replicas=2,
                     crop_area_min=0.35, flip=False)


@dataclasses.dataclass(frozen=True)
class PipelineConfig:
    """Everything one input pipeline (one worker's, one split's) needs to know.

    Example:
        >>> PipelineConfig(training=False, batch_size=8, image_size=32).eval_transform
        EvalTransform(resize=37, crop=32, interpolation='bilinear')
    """

    training: bool
    batch_size: int  # per input pipeline
    image_size: int
    eval_transform: EvalTransform | None = None  # None: pycls's ratio at image_size
    label_offset: int = 0
    seed: int = 0
    shuffle_buffer: int = 10_000
    num_shards: int = 1  # input pipelines (workers) ...
    shard_index: int = 0  # ... and this one's index
    skip_batches: int = 0  # a resumed epoch skips what it already trained on
    # Training: this pipeline decodes only rows [i * B / n, (i + 1) * B / n) of every batch
    # of batch_size B (slice i of n), so n processes together see the very batches one would.
    slices: int = 1
    slice_index: int = 0
    crop_area_min: float = 0.08
    flip: bool = True

    def __post_init__(self) -> None:
        if self.eval_transform is None:
            object.__setattr__(self, "eval_transform", EvalTransform.for_size(self.image_size))
        if self.batch_size % self.slices or not 0 <= self.slice_index < self.slices:
            raise ValueError(f"batch {self.batch_size} has no slice {self.slice_index} of {self.slices} "
                             f"equal slices.")
