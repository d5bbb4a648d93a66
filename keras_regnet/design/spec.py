"""RegNet and AnyNet specifications: the numbers that define a network.

Pure Python + numpy. A :class:`RegNetSpec` is the paper's six-number design-space point; it
resolves to an :class:`AnyNetSpec` (explicit per-stage depths, widths, bottleneck ratios and
group widths), which resolves to a list of :class:`Block` records. The Keras builder and the
complexity counter both walk that same list, so they cannot disagree.

Terminology follows the paper: the bottleneck *ratio* ``b`` divides the width
(bottleneck width ``w_b = w / b``); pycls's ``BOT_MUL`` is ``1 / b``.
"""

from __future__ import annotations

import dataclasses
from typing import Iterator, Sequence

import numpy as np

ROUNDINGS = ("pycls", "torchvision")
# Widths are quantized to multiples of this (pycls's q).
WIDTH_QUANTUM = 8


@dataclasses.dataclass(frozen=True)
class Block:
    """One residual bottleneck block, fully resolved (1-based ``stage`` and ``index``)."""

    stage: int
    index: int
    in_width: int
    out_width: int
    stride: int
    bottleneck_width: int
    groups: int
    se_width: int

    @property
    def has_projection(self) -> bool:
        """Whether the shortcut needs a strided 1x1 conv (pycls's ``proj_block``)."""
        return self.in_width != self.out_width or self.stride != 1

    @property
    def prefix(self) -> str:
        """Stable layer-name prefix, e.g. ``s1_b2``."""
        return f"s{self.stage}_b{self.index}"


def _check_positive_ints(name: str, values: Sequence[int]) -> None:
    if len(values) == 0 or any(int(v) != v or v <= 0 for v in values):
        raise ValueError(f"{name} must be positive integers, got {list(values)}.")


@dataclasses.dataclass(frozen=True)
class AnyNetSpec:
    """A network of residual bottleneck stages with explicit per-stage parameters.

    Every stage starts with a stride-2 block. ``bottleneck_ratios[i]`` is the paper's ``b``
    (bottleneck width = ``widths[i] / b``), and each stage's bottleneck width must be a
    multiple of its group width.

    Example:
        >>> spec = AnyNetSpec(depths=(1, 1, 2, 2), widths=(32, 64, 128, 256),
        ...                   bottleneck_ratios=(1, 1, 1, 1), group_widths=(8, 8, 8, 8))
        >>> [b.groups for b in spec.blocks()][:2]
        [4, 8]
    """

    depths: tuple[int, ...]
    widths: tuple[int, ...]
    bottleneck_ratios: tuple[float, ...]
    group_widths: tuple[int, ...]
    se_ratio: float = 0.0
    stem_width: int = 32

    def __post_init__(self) -> None:
        for field in ("depths", "widths", "bottleneck_ratios", "group_widths"):
            object.__setattr__(self, field, tuple(getattr(self, field)))
        n = len(self.depths)
        lengths = {f: len(getattr(self, f)) for f in ("widths", "bottleneck_ratios", "group_widths")}
        if any(length != n for length in lengths.values()):
            raise ValueError(
                f"depths, widths, bottleneck_ratios and group_widths need one entry per stage; "
                f"got {n} depths and {lengths}."
            )
        _check_positive_ints("depths", self.depths)
        _check_positive_ints("widths", self.widths)
        _check_positive_ints("group_widths", self.group_widths)
        _check_positive_ints("stem_width", (self.stem_width,))
        if any(b <= 0 for b in self.bottleneck_ratios):
            raise ValueError(f"bottleneck_ratios must be > 0, got {list(self.bottleneck_ratios)}.")
        if not 0.0 <= self.se_ratio < 1.0:
            raise ValueError(f"se_ratio must be in [0, 1), got {self.se_ratio}.")
        for i, (w, b, g) in enumerate(zip(self.widths, self.bottleneck_ratios, self.group_widths)):
            w_b = _bottleneck_width(w, b)
            if w_b < 1 or w_b % g:
                raise ValueError(
                    f"stage {i + 1}: bottleneck width {w}/{b} = {w_b} is not a multiple of "
                    f"group width {g}; choose widths, bottleneck_ratios and group_widths so "
                    f"that width / ratio is divisible by the group width."
                )

    @property
    def num_stages(self) -> int:
        return len(self.depths)

    def blocks(self) -> Iterator[Block]:
        """Yields every block in order, with pycls's width conventions."""
        w_in = self.stem_width
        for i, (d, w, b, g) in enumerate(
            zip(self.depths, self.widths, self.bottleneck_ratios, self.group_widths), start=1
        ):
            for j in range(1, d + 1):
                w_b = _bottleneck_width(w, b)
                # SE width comes from the block INPUT width (pycls), not the output width.
                w_se = int(round(w_in * self.se_ratio))
                yield Block(i, j, w_in, w, 2 if j == 1 else 1, w_b, w_b // g, w_se)
                w_in = w

    def to_anynet(self) -> AnyNetSpec:
        return self


def _bottleneck_width(width: int, ratio: float) -> int:
    # pycls computes int(round(w * bot_mul)) with bot_mul = 1 / ratio.
    return int(round(width * (1.0 / ratio)))


def quantized_linear_widths(w0: int, wa: float, wm: float, depth: int) -> list[int]:
    """Per-block widths of the quantized linear rule (paper eq. 2-4; pycls generate_regnet).

    Example:
        >>> quantized_linear_widths(24, 36.44, 2.49, 13)  # RegNetX-200MF
        [24, 56, 152, 152, 152, 152, 368, 368, 368, 368, 368, 368, 368]
    """
    u = np.arange(depth) * wa + w0
    # np.round rounds half to even, exactly as the reference does.
    s = np.round(np.log(u / w0) / np.log(wm))
    w = w0 * np.power(wm, s)
    return [int(v) for v in (np.round(w / WIDTH_QUANTUM) * WIDTH_QUANTUM).astype(int)]


def _stages(block_widths: list[int]) -> tuple[list[int], list[int]]:
    widths, depths = [], []
    for w in block_widths:
        if widths and widths[-1] == w:
            depths[-1] += 1
        else:
            widths.append(w)
            depths.append(1)
    return widths, depths


def _adjust_pycls(width: int, bot_mul: float, group_width: int) -> tuple[int, int]:
    """pycls adjust_block_compatibility for one stage -> (stage width, group width)."""
    v = int(max(1, width * bot_mul))
    g = int(min(group_width, v))
    m = int(np.lcm(g, int(bot_mul))) if bot_mul > 1 else g
    # Python round: half to even (392 / 16 = 24.5 -> 384).
    v = max(m, int(round(v / m) * m))
    return int(v / bot_mul), g


def _make_divisible(value: float, divisor: int) -> int:
    new = max(divisor, int(value + divisor / 2) // divisor * divisor)
    if new < 0.9 * value:
        new += divisor
    return new


def _adjust_torchvision(width: int, bot_mul: float, group_width: int) -> tuple[int, int]:
    """torchvision's rounding: make-divisible (half up, never below 0.9 v)."""
    v = int(width * bot_mul)
    g = min(group_width, v)
    return int(_make_divisible(v, g) / bot_mul), g


@dataclasses.dataclass(frozen=True)
class RegNetSpec:
    """A point of the RegNet design space (paper section 3.3).

    Args:
        w0: initial width (> 0, multiple of 8).
        wa: slope of the linear width rule (>= 0).
        wm: width multiplier between stages (> 1).
        depth: total number of blocks.
        group_width: group width of the 3x3 convs (clamped to the bottleneck width).
        bottleneck_ratio: the paper's b; bottleneck width = width / b.
        se_ratio: squeeze-excitation ratio (0 for RegNetX, 0.25 for RegNetY).
        stem_width: output width of the stem conv.
        rounding: "pycls" (the reference) or "torchvision" (its make-divisible rounding,
            which changes some published networks).

    Example:
        >>> spec = RegNetSpec(w0=24, wa=24.48, wm=2.54, depth=22, group_width=16)
        >>> spec.widths, spec.depths
        ((32, 64, 160, 384), (1, 2, 7, 12))
    """

    w0: int
    wa: float
    wm: float
    depth: int
    group_width: int
    bottleneck_ratio: float = 1.0
    se_ratio: float = 0.0
    stem_width: int = 32
    rounding: str = "pycls"

    def __post_init__(self) -> None:
        problems = []
        if not (isinstance(self.w0, (int, np.integer)) and self.w0 > 0 and self.w0 % WIDTH_QUANTUM == 0):
            problems.append(f"w0 must be a positive multiple of {WIDTH_QUANTUM}, got {self.w0!r}")
        if not self.wa >= 0:
            problems.append(f"wa must be >= 0, got {self.wa!r}")
        if not self.wm > 1:
            problems.append(f"wm must be > 1, got {self.wm!r}")
        if not (isinstance(self.depth, (int, np.integer)) and self.depth >= 1):
            problems.append(f"depth must be a positive integer, got {self.depth!r}")
        if not (isinstance(self.group_width, (int, np.integer)) and self.group_width >= 1):
            problems.append(f"group_width must be a positive integer, got {self.group_width!r}")
        if not self.bottleneck_ratio > 0:
            problems.append(f"bottleneck_ratio must be > 0, got {self.bottleneck_ratio!r}")
        if not 0 <= self.se_ratio < 1:
            problems.append(f"se_ratio must be in [0, 1), got {self.se_ratio!r}")
        if self.rounding not in ROUNDINGS:
            problems.append(f"rounding must be one of {ROUNDINGS}, got {self.rounding!r}")
        if problems:
            raise ValueError("Invalid RegNetSpec: " + "; ".join(problems) + ".")

    def block_widths(self) -> list[int]:
        """Quantized per-block widths, before group compatibility adjustment."""
        return quantized_linear_widths(self.w0, self.wa, self.wm, self.depth)

    def to_anynet(self) -> AnyNetSpec:
        """Resolves the design-space point to explicit per-stage parameters."""
        widths, depths = _stages(self.block_widths())
        bot_mul = 1.0 / self.bottleneck_ratio
        adjust = _adjust_pycls if self.rounding == "pycls" else _adjust_torchvision
        adjusted = [adjust(w, bot_mul, self.group_width) for w in widths]
        n = len(widths)
        return AnyNetSpec(
            depths=tuple(depths),
            widths=tuple(w for w, _ in adjusted),
            bottleneck_ratios=(self.bottleneck_ratio,) * n,
            group_widths=tuple(g for _, g in adjusted),
            se_ratio=self.se_ratio,
            stem_width=self.stem_width,
        )

    @property
    def num_stages(self) -> int:
        return len(_stages(self.block_widths())[0])

    @property
    def widths(self) -> tuple[int, ...]:
        """Per-stage output widths after group compatibility adjustment."""
        return self.to_anynet().widths

    @property
    def depths(self) -> tuple[int, ...]:
        return self.to_anynet().depths

    @property
    def group_widths(self) -> tuple[int, ...]:
        """Per-stage group widths, clamped to the bottleneck width."""
        return self.to_anynet().group_widths

    def blocks(self) -> Iterator[Block]:
        return self.to_anynet().blocks()


AnySpec = RegNetSpec | AnyNetSpec
