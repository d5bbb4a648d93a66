"""Design-space samplers (paper sections 3-4): AnyNetX A-E and RegNet, with complexity windows.

Pure Python + numpy, seeded and reproducible: the same (space, n, seed, window) always gives
the same models. Every sampled model is buildable (bottleneck width divisible by the group
width). Records are plain dicts, one JSON line each in sweep files.
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np

from keras_regnet.design.complexity import count
from keras_regnet.design.spec import AnyNetSpec, RegNetSpec

ANYNET_SPACES = ("AnyNetXA", "AnyNetXB", "AnyNetXC", "AnyNetXD", "AnyNetXE")
REGNET_SPACES = ("RegNetX", "RegNetY")
SPACES = ANYNET_SPACES + REGNET_SPACES
STAGES = 4
# AnyNetX ranges (paper section 3.1).
MAX_DEPTH, MAX_WIDTH = 16, 1024
BOTTLENECK_RATIOS = (1, 2, 4)
GROUP_WIDTHS = (1, 2, 4, 8, 16, 32)
# RegNet ranges (pycls's sampler).
DEPTH_RANGE = (12, 28)
W0_RANGE, WA_RANGE, WM_RANGE = (8, 256), (8.0, 256.0), (2.0, 3.0)
REGNET_GROUP_WIDTHS = (1, 2, 4, 8, 16, 32)
MAX_TRIES = 200_000


def _log_uniform(rng: np.random.Generator, low: float, high: float, quantum: float) -> float:
    value = math.exp(rng.uniform(math.log(low), math.log(high)))
    return round(value / quantum) * quantum


def _pick(rng: np.random.Generator, options: tuple[int, ...]) -> int:
    """One of ``options``, uniformly: the draw ``rng.choice(options)`` makes (same stream, so
    the same samples for a seed), without its array conversion (8x faster; sampling spends
    most of its time drawing candidates)."""
    return int(options[int(rng.integers(len(options)))])


def _anynet_candidate(space: str, rng: np.random.Generator) -> AnyNetSpec | None:
    depths = [int(rng.integers(1, MAX_DEPTH + 1)) for _ in range(STAGES)]
    widths = [int(_log_uniform(rng, 8, MAX_WIDTH, 8)) for _ in range(STAGES)]
    shared_b = space != "AnyNetXA"
    shared_g = space in ("AnyNetXC", "AnyNetXD", "AnyNetXE")
    b = [_pick(rng, BOTTLENECK_RATIOS)] * STAGES if shared_b else \
        [_pick(rng, BOTTLENECK_RATIOS) for _ in range(STAGES)]
    g = [_pick(rng, GROUP_WIDTHS)] * STAGES if shared_g else \
        [_pick(rng, GROUP_WIDTHS) for _ in range(STAGES)]
    if space in ("AnyNetXD", "AnyNetXE"):
        widths.sort()  # D: w_{i+1} >= w_i
    if space == "AnyNetXE":
        depths.sort()  # E: d_{i+1} >= d_i
    for w, ratio, group in zip(widths, b, g):
        if w % ratio or (w // ratio) % group:
            return None  # not buildable: w / b must be a multiple of g
    return AnyNetSpec(depths=tuple(depths), widths=tuple(widths), bottleneck_ratios=tuple(b),
                      group_widths=tuple(g))


def _regnet_candidate(space: str, rng: np.random.Generator) -> RegNetSpec | None:
    spec = RegNetSpec(
        w0=int(_log_uniform(rng, *W0_RANGE, 8)),
        wa=round(_log_uniform(rng, *WA_RANGE, 0.1), 1),
        wm=round(_log_uniform(rng, *WM_RANGE, 0.001), 3),
        depth=int(rng.integers(DEPTH_RANGE[0], DEPTH_RANGE[1] + 1)),
        group_width=_pick(rng, REGNET_GROUP_WIDTHS),
        se_ratio=0.25 if space == "RegNetY" else 0.0,
    )
    return spec if spec.num_stages == STAGES else None  # the 4-stage rule


def record(space: str, spec: AnyNetSpec | RegNetSpec, resolution: int = 224) -> dict:
    """The JSON-line record of a sampled model (parameters and complexity)."""
    out: dict = {"space": space}
    if isinstance(spec, RegNetSpec):
        out.update(w0=spec.w0, wa=spec.wa, wm=spec.wm, depth=spec.depth,
                   group_width=spec.group_width, bottleneck_ratio=spec.bottleneck_ratio,
                   se_ratio=spec.se_ratio)
    else:
        out.update(depths=list(spec.depths), widths=list(spec.widths),
                   bottleneck_ratios=list(spec.bottleneck_ratios), group_widths=list(spec.group_widths),
                   se_ratio=spec.se_ratio)
    out.update(count(spec, resolution=resolution))
    return out


def spec_from_record(rec: dict) -> AnyNetSpec | RegNetSpec:
    if "w0" in rec:
        return RegNetSpec(w0=rec["w0"], wa=rec["wa"], wm=rec["wm"], depth=rec["depth"],
                          group_width=rec["group_width"], bottleneck_ratio=rec.get("bottleneck_ratio", 1.0),
                          se_ratio=rec.get("se_ratio", 0.0))
    return AnyNetSpec(depths=rec["depths"], widths=rec["widths"],
                      bottleneck_ratios=rec["bottleneck_ratios"], group_widths=rec["group_widths"],
                      se_ratio=rec.get("se_ratio", 0.0))


def split_design_reference(reference: str) -> tuple[str, int]:
    """``"FILE:N"`` -> ``("FILE", N)``; ``"FILE"`` -> ``("FILE", 1)`` (a path may hold colons).

    Example:
        >>> split_design_reference("runs/x.jsonl:3")
        ('runs/x.jsonl', 3)
    """
    head, _, tail = reference.rpartition(":")
    return (head, int(tail)) if head and tail.isdigit() else (reference, 1)


def design_record(reference: str) -> dict:
    """The record ``FILE[:N]`` names: line N (from 1; default 1) of a JSON-lines file such as
    ``keras-regnet sweep sample`` writes. Raises ValueError saying what is wrong.

    Example:
        >>> design_record("sweep.jsonl:2")["w0"]  # doctest: +SKIP
        24
    """
    import json
    import os

    path, line = split_design_reference(reference)
    if not os.path.isfile(path):
        raise ValueError(f"--design {reference}: {path} is not a file (write one with "
                         f"`keras-regnet sweep sample --out FILE`).")
    with open(path, encoding="utf-8") as f:
        lines = [text for text in f if text.strip()]
    if not 1 <= line <= len(lines):
        raise ValueError(f"--design {reference}: {path} holds {len(lines)} records; "
                         f"choose one of 1..{len(lines)} (FILE:N).")
    try:
        rec = json.loads(lines[line - 1])
        list(spec_from_record(rec).blocks())  # a record that does not make a network fails here
    except (ValueError, KeyError, TypeError) as err:
        raise ValueError(f"--design {reference}: record {line} is not a design-space point "
                         f"({type(err).__name__}: {err}).") from err
    return rec


Window = tuple[float, float] | None


def sample(space: str, n: int, seed: int = 0, flops: Window = None, params: Window = None,
           acts: Window = None) -> list[dict]:
    """``n`` models of a design space whose complexity lies in the given windows (inclusive).

    Example:
        >>> models = sample("RegNetX", 3, seed=0, flops=(360e6, 400e6))
        >>> all(360e6 <= m["flops"] <= 400e6 for m in models)
        True
    """
    if space not in SPACES:
        raise ValueError(f"space must be one of {SPACES}, got {space!r}.")
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}.")
    candidate: Callable = _regnet_candidate if space in REGNET_SPACES else _anynet_candidate
    rng = np.random.default_rng(seed)
    windows = {"flops": flops, "params": params, "acts": acts}
    out, tries = [], 0
    while len(out) < n:
        tries += 1
        if tries > MAX_TRIES:
            raise ValueError(f"Only {len(out)} of {n} {space} models fit {windows} after "
                             f"{MAX_TRIES} draws; widen the complexity window.")
        spec = candidate(space, rng)
        if spec is None:
            continue
        rec = record(space, spec)
        if all(w is None or w[0] <= rec[k] <= w[1] for k, w in windows.items()):
            out.append(rec)
    return out


def parse_window(text: str | None) -> Window:
    """``"360M:400M"`` -> (360e6, 400e6); K/M/G suffixes accepted."""
    if not text:
        return None
    scale = {"K": 1e3, "M": 1e6, "G": 1e9}

    def number(part: str) -> float:
        part = part.strip().upper()
        return float(part[:-1]) * scale[part[-1]] if part and part[-1] in scale else float(part)

    try:
        low, high = (number(p) for p in text.split(":"))
    except (ValueError, KeyError):
        raise ValueError(f"A complexity window is LO:HI, e.g. 360M:400M; got {text!r}.") from None
    if low > high:
        raise ValueError(f"Window {text!r} has LO > HI.")
    return low, high
