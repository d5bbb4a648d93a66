"""Training configuration: explicit dataclasses, no global state."""

from __future__ import annotations

import dataclasses

RECIPES = ("pycls", "modern")
STRATEGIES = ("mirrored", "multi_worker", "tpu", "one_device")
PRECISIONS = ("fp32", "mixed_float16", "mixed_bfloat16")


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


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    model: str = "RegNetX002"
    data_dir: str | None = None  # TFRecords (or the TFDS data_dir with tfds_name)
    tfds_name: str | None = None  # read a prepared TFDS dataset, e.g. "imagenet2012"
    model_dir: str = "/tmp/keras_regnet_run"
    strategy: str = "mirrored"
    epochs: int = 100
    batch_size: int = 1024  # global
    image_size: int = 224
    precision: str = "fp32"
    init_weights: str | None = None  # "imagenet", a weight tag or a file
    num_classes: int = 1000
    freeze_stages: int = 0
    label_offset: int | None = None  # None: detect (1-based imagenet_to_gcs vs 0-based)
    recipe: str = "pycls"
    cpu_replicas: int = 0
    tpu: str | None = None
    checkpoint_every: int = 200  # steps
    seed: int = 0
    shuffle_buffer: int = 10_000
    steps_per_epoch: int | None = None  # None: one pass over the training files
    crop_area_min: float = 0.08  # Inception crop's smallest area fraction
    flip: bool = True  # random horizontal flips (off for data where mirroring changes the class)
    eval_steps: int | None = None
    learning_rate: float | None = None  # peak lr for the global batch; None: the recipe's rule
    weight_decay: float | None = None  # None: the recipe's (pycls: 5e-5 L2)

    def __post_init__(self) -> None:
        if self.strategy not in STRATEGIES:
            raise ValueError(f"--strategy must be one of {STRATEGIES}, got {self.strategy!r}.")
        if self.precision not in PRECISIONS:
            raise ValueError(f"--precision must be one of {PRECISIONS}, got {self.precision!r}.")
        if self.recipe not in RECIPES:
            raise ValueError(f"--recipe must be one of {RECIPES}, got {self.recipe!r}.")
        if self.image_size < 32:
            raise ValueError(f"--image_size must be at least 32, got {self.image_size}.")
        if self.epochs < 1 or self.batch_size < 1:
            raise ValueError("--epochs and --batch_size must be positive.")
        if self.learning_rate is not None and not self.learning_rate > 0:
            raise ValueError(f"--learning_rate must be positive, got {self.learning_rate}.")
        if self.weight_decay is not None and not self.weight_decay >= 0:
            raise ValueError(f"--weight_decay must be >= 0, got {self.weight_decay}.")
        if not 0 <= self.freeze_stages <= 5:
            raise ValueError(f"--freeze_stages must be 0 (none) .. 5 (stem + 4 stages), got "
                             f"{self.freeze_stages}.")

    def tuned(self, recipe: Recipe) -> Recipe:
        """The recipe with this run's --learning_rate / --weight_decay overrides applied."""
        changes = {}
        if self.learning_rate is not None:
            changes["base_lr_per_128"] = self.learning_rate * 128 / self.batch_size
        if self.weight_decay is not None:
            changes["weight_decay"] = self.weight_decay
        return dataclasses.replace(recipe, **changes)

    @property
    def eval_resize(self) -> int:
        """Short side before the center crop: 256 for 224, scaled with the image size."""
        return int(round(self.image_size * 256 / 224))
