"""The pure design core against the reference's published figures."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

import keras_regnet
from conftest import TORCHVISION_PARAMS, reference_rows
from keras_regnet.design.spec import AnyNetSpec, RegNetSpec, quantized_linear_widths
from keras_regnet.variants import VARIANTS, get_spec, get_variant, list_models

REFERENCE = reference_rows()
PYCLS_VARIANTS = [n for n, v in VARIANTS.items() if v.spec.rounding == "pycls"]
TV_VARIANTS = [n for n, v in VARIANTS.items() if v.spec.rounding == "torchvision"]


def test_table_covers_every_published_model():
    assert sorted(VARIANTS[n].paper_name for n in PYCLS_VARIANTS) == sorted(REFERENCE)
    assert sorted(VARIANTS[n].paper_name for n in TV_VARIANTS) == sorted(TORCHVISION_PARAMS)


@pytest.mark.parametrize("name", PYCLS_VARIANTS)
def test_design_parameters_match_reference(name):
    row, spec = REFERENCE[VARIANTS[name].paper_name], VARIANTS[name].spec
    assert (spec.w0, spec.wa, spec.wm, spec.depth, spec.group_width, spec.se_ratio) == (
        int(row["w0"]), float(row["wa"]), float(row["wm"]), int(row["depth"]),
        int(row["group_w"]), float(row["se_ratio"]))


@pytest.mark.parametrize("name", PYCLS_VARIANTS)
def test_complexity_equals_published_figures(name):
    row = REFERENCE[VARIANTS[name].paper_name]
    expected = {k: int(row[k]) for k in ("flops", "params", "acts")}
    assert keras_regnet.complexity(name) == expected


@pytest.mark.parametrize("name", TV_VARIANTS)
def test_torchvision_rounding_matches_torchvision_params(name):
    variant = VARIANTS[name]
    assert keras_regnet.complexity(name)["params"] == TORCHVISION_PARAMS[variant.paper_name]
    pycls_twin = RegNetSpec(**{**vars(variant.spec), "rounding": "pycls"})
    assert keras_regnet.complexity(pycls_twin)["params"] != TORCHVISION_PARAMS[variant.paper_name]


@pytest.mark.parametrize(
    "name, stage, width, groups",
    [
        ("RegNetX-400MF", 4, 384, 384 // 16),  # 392 / 16 = 24.5 rounds half to even
        ("RegNetX-4.0GF", 1, 80, 2),
        ("RegNetX-8.0GF", 1, 80, 1),  # group width 120 clamped to the bottleneck width 80
        ("RegNetY-4.0GF", 1, 128, 2),
        ("RegNetY-8.0GF", 1, 168, 3),
    ],
)
def test_rounding_edge_cases_from_the_spec(name, stage, width, groups):
    spec = get_spec(name)
    assert spec.widths[stage - 1] == width
    block = next(b for b in spec.blocks() if b.stage == stage)
    assert block.groups == groups


def test_quantized_linear_widths_round_half_to_even():
    # u_1 / w0 = 1.5 with wm = 2.25: log ratio is exactly 0.5, which rounds to 0 (even).
    assert quantized_linear_widths(w0=8, wa=4, wm=2.25, depth=2) == [8, 8]


def test_se_width_uses_block_input_width():
    spec = get_spec("RegNetY002")
    first_of_stage2 = next(b for b in spec.blocks() if b.stage == 2)
    assert first_of_stage2.in_width == spec.widths[0]
    assert first_of_stage2.se_width == round(0.25 * spec.widths[0])
    assert first_of_stage2.se_width != round(0.25 * spec.widths[1])


def test_complexity_other_resolution_and_classes():
    base = keras_regnet.complexity("RegNetX002")
    small = keras_regnet.complexity("RegNetX002", resolution=(160, 224), classes=10)
    width = get_spec("RegNetX002").widths[-1]
    assert small["params"] == base["params"] - 990 * (width + 1)
    assert small["flops"] < base["flops"]
    headless = keras_regnet.complexity("RegNetX002", include_top=False)
    assert headless["params"] == base["params"] - 1000 * (width + 1)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(wm=1.0), "wm must be > 1"),
        (dict(w0=20), "w0 must be a positive multiple of 8"),
        (dict(wa=-1.0), "wa must be >= 0"),
        (dict(depth=0), "depth must be a positive integer"),
        (dict(group_width=0), "group_width"),
        (dict(se_ratio=1.5), "se_ratio"),
        (dict(rounding="timm"), "rounding must be one of"),
    ],
)
def test_bad_spec_values_raise_clear_errors(kwargs, message):
    args = dict(w0=24, wa=36.44, wm=2.49, depth=13, group_width=8) | kwargs
    with pytest.raises(ValueError, match=message):
        RegNetSpec(**args)


def test_anynet_rejects_incompatible_group_width():
    with pytest.raises(ValueError, match="not a multiple of group width"):
        AnyNetSpec(depths=(1, 1, 1, 1), widths=(24, 48, 96, 192), bottleneck_ratios=(1,) * 4,
                   group_widths=(16, 16, 16, 16))


def test_lookup_by_paper_name_and_unknown_name():
    assert get_variant("RegNetY-3.2GF").name == "RegNetY032"
    assert list_models() == list(VARIANTS)
    with pytest.raises(ValueError, match="Unknown model 'RegNetZ'"):
        get_spec("RegNetZ")


def test_design_imports_without_tensorflow_or_keras():
    code = textwrap.dedent(
        """
        import sys
        class Block:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in ("tensorflow", "keras", "jax", "torch"):
                    raise ImportError("blocked: " + name)
        sys.meta_path.insert(0, Block())
        import keras_regnet
        import keras_regnet.design
        from keras_regnet.design.spec import RegNetSpec
        print(keras_regnet.complexity("RegNetX004")["flops"])
        assert not any(m.split(".")[0] in ("tensorflow", "keras") for m in sys.modules)
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == REFERENCE["RegNetX-400MF"]["flops"]
