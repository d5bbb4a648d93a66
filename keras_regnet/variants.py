"""THE table of named models. One line per variant; everything else derives from it.

Builders (``keras_regnet.RegNetX004`` ...), the docs model table, the weights registry checks
and the tests all iterate over :data:`VARIANTS`. Parameters are the paper's / pycls's published
design-space points. The ``TV`` variants are the same points with torchvision's width rounding,
which yields different networks for these three sizes.
"""

from __future__ import annotations

import dataclasses
import difflib

from keras_regnet.design.spec import RegNetSpec


@dataclasses.dataclass(frozen=True)
class Variant:
    name: str  # builder name, e.g. "RegNetX004"
    paper_name: str  # name in the paper and in pycls, e.g. "RegNetX-400MF"
    spec: RegNetSpec


def _x(w0: int, wa: float, wm: float, depth: int, gw: int, rounding: str = "pycls") -> RegNetSpec:
    return RegNetSpec(w0=w0, wa=wa, wm=wm, depth=depth, group_width=gw, rounding=rounding)


def _y(w0: int, wa: float, wm: float, depth: int, gw: int, rounding: str = "pycls") -> RegNetSpec:
    return RegNetSpec(w0=w0, wa=wa, wm=wm, depth=depth, group_width=gw, se_ratio=0.25,
                      rounding=rounding)


_TABLE = [
    Variant("RegNetX002", "RegNetX-200MF", _x(24, 36.44, 2.49, 13, 8)),
    Variant("RegNetX004", "RegNetX-400MF", _x(24, 24.48, 2.54, 22, 16)),
    Variant("RegNetX006", "RegNetX-600MF", _x(48, 36.97, 2.24, 16, 24)),
    Variant("RegNetX008", "RegNetX-800MF", _x(56, 35.73, 2.28, 16, 16)),
    Variant("RegNetX016", "RegNetX-1.6GF", _x(80, 34.01, 2.25, 18, 24)),
    Variant("RegNetX032", "RegNetX-3.2GF", _x(88, 26.31, 2.25, 25, 48)),
    Variant("RegNetX040", "RegNetX-4.0GF", _x(96, 38.65, 2.43, 23, 40)),
    Variant("RegNetX064", "RegNetX-6.4GF", _x(184, 60.83, 2.07, 17, 56)),
    Variant("RegNetX080", "RegNetX-8.0GF", _x(80, 49.56, 2.88, 23, 120)),
    Variant("RegNetX120", "RegNetX-12GF", _x(168, 73.36, 2.37, 19, 112)),
    Variant("RegNetX160", "RegNetX-16GF", _x(216, 55.59, 2.1, 22, 128)),
    Variant("RegNetX320", "RegNetX-32GF", _x(320, 69.86, 2.0, 23, 168)),
    Variant("RegNetY002", "RegNetY-200MF", _y(24, 36.44, 2.49, 13, 8)),
    Variant("RegNetY004", "RegNetY-400MF", _y(48, 27.89, 2.09, 16, 8)),
    Variant("RegNetY006", "RegNetY-600MF", _y(48, 32.54, 2.32, 15, 16)),
    Variant("RegNetY008", "RegNetY-800MF", _y(56, 38.84, 2.4, 14, 16)),
    Variant("RegNetY016", "RegNetY-1.6GF", _y(48, 20.71, 2.65, 27, 24)),
    Variant("RegNetY032", "RegNetY-3.2GF", _y(80, 42.63, 2.66, 21, 24)),
    Variant("RegNetY040", "RegNetY-4.0GF", _y(96, 31.41, 2.24, 22, 64)),
    Variant("RegNetY064", "RegNetY-6.4GF", _y(112, 33.22, 2.27, 25, 72)),
    Variant("RegNetY080", "RegNetY-8.0GF", _y(192, 76.82, 2.19, 17, 56)),
    Variant("RegNetY120", "RegNetY-12GF", _y(168, 73.36, 2.37, 19, 112)),
    Variant("RegNetY160", "RegNetY-16GF", _y(200, 106.23, 2.48, 18, 112)),
    Variant("RegNetY320", "RegNetY-32GF", _y(232, 115.89, 2.53, 20, 232)),
    # torchvision's rounding gives different networks for these three sizes.
    Variant("RegNetX004TV", "regnet_x_400mf", _x(24, 24.48, 2.54, 22, 16, "torchvision")),
    Variant("RegNetY008TV", "regnet_y_800mf", _y(56, 38.84, 2.4, 14, 16, "torchvision")),
    Variant("RegNetY080TV", "regnet_y_8gf", _y(192, 76.82, 2.19, 17, 56, "torchvision")),
]

VARIANTS: dict[str, Variant] = {v.name: v for v in _TABLE}


def list_models() -> list[str]:
    """Names of all named models, in table order.

    Example:
        >>> list_models()[:2]
        ['RegNetX002', 'RegNetX004']
    """
    return list(VARIANTS)


def get_variant(name: str) -> Variant:
    """Looks a variant up by builder name (``RegNetX004``) or paper name (``RegNetX-400MF``)."""
    if name in VARIANTS:
        return VARIANTS[name]
    for v in _TABLE:
        if v.paper_name.lower() == name.lower() or v.name.lower() == name.lower():
            return v
    raise ValueError(f"Unknown model {name!r}: {_suggestion(name)}(keras_regnet.list_models() "
                     f"lists all {len(VARIANTS)}).")


def _suggestion(name: str) -> str:
    """``did you mean RegNetX004? `` for the closest names (all of them on a tie), or ''."""
    scores: dict[str, float] = {}
    for v in _TABLE:
        for candidate in (v.name, v.paper_name):
            ratio = difflib.SequenceMatcher(None, name.lower(), candidate.lower()).ratio()
            scores[v.name] = max(scores.get(v.name, 0.0), ratio)
    best = max(scores.values())
    if best < 0.75:
        return ""
    return f"did you mean {' or '.join(n for n, r in scores.items() if r == best)}? "


def get_spec(name: str) -> RegNetSpec:
    """The :class:`RegNetSpec` of a named model.

    Example:
        >>> get_spec("RegNetX004").widths
        (32, 64, 160, 384)
    """
    return get_variant(name).spec
