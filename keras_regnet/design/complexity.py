"""Analytic complexity (multiply-adds, parameters, activations) by pycls's counting rules.

Pure Python: no framework, no network built. Reproduces the published figures of all 24
RegNets exactly (see ``shared/reference/pycls_model_zoo.csv``).
"""

from __future__ import annotations

import dataclasses

from keras_regnet.design.spec import AnySpec


@dataclasses.dataclass
class _Counter:
    h: int
    w: int
    flops: int = 0
    params: int = 0
    acts: int = 0

    def conv(self, c_in: int, c_out: int, k: int, stride: int = 1, groups: int = 1,
             bias: bool = False) -> None:
        self.h, self.w = (self.h - 1) // stride + 1, (self.w - 1) // stride + 1
        hw = self.h * self.w
        self.flops += k * k * c_in * c_out * hw // groups + (c_out * hw if bias else 0)
        self.params += k * k * c_in * c_out // groups + (c_out if bias else 0)
        self.acts += c_out * hw

    def bn(self, c: int) -> None:
        # Only gamma and beta are parameters; moving statistics are not counted.
        self.params += 2 * c


def _resolution(resolution: int | tuple[int, int]) -> tuple[int, int]:
    if isinstance(resolution, int):
        resolution = (resolution, resolution)
    h, w = resolution
    if h < 1 or w < 1:
        raise ValueError(f"resolution must be positive, got {resolution}.")
    return int(h), int(w)


def count(spec: AnySpec, resolution: int | tuple[int, int] = 224, classes: int = 1000,
          include_top: bool = True) -> dict[str, int]:
    """Counts flops (multiply-adds), params and acts of a spec. See ``keras_regnet.complexity``.

    Example (RegNetX-400MF; pycls's model zoo lists 397678568 / 5157512 / 3143272):
        >>> from keras_regnet.design.spec import RegNetSpec
        >>> count(RegNetSpec(w0=24, wa=24.48, wm=2.54, depth=22, group_width=16))
        {'flops': 397678568, 'params': 5157512, 'acts': 3143272}
    """
    anynet = spec.to_anynet()
    cx = _Counter(*_resolution(resolution))
    cx.conv(3, anynet.stem_width, 3, stride=2)
    cx.bn(anynet.stem_width)
    for b in anynet.blocks():
        if b.has_projection:
            h, w = cx.h, cx.w
            cx.conv(b.in_width, b.out_width, 1, stride=b.stride)
            cx.bn(b.out_width)
            cx.h, cx.w = h, w  # parallel branch: the main path starts from the block input
        cx.conv(b.in_width, b.bottleneck_width, 1)
        cx.bn(b.bottleneck_width)
        cx.conv(b.bottleneck_width, b.bottleneck_width, 3, stride=b.stride, groups=b.groups)
        cx.bn(b.bottleneck_width)
        if b.se_width:
            # Both SE convs act on the pooled 1x1 map.
            h, w = cx.h, cx.w
            cx.h = cx.w = 1
            cx.conv(b.bottleneck_width, b.se_width, 1, bias=True)
            cx.conv(b.se_width, b.bottleneck_width, 1, bias=True)
            cx.h, cx.w = h, w
        cx.conv(b.bottleneck_width, b.out_width, 1)
        cx.bn(b.out_width)
    if include_top:
        c = anynet.widths[-1]
        cx.flops += c * classes + classes
        cx.params += c * classes + classes
        cx.acts += classes
    return {"flops": cx.flops, "params": cx.params, "acts": cx.acts}
