"""The paper's method: samplers, EDFs, bootstrap, the quantized-linear fit, sweeps."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from keras_regnet.design import analysis, sampling
from keras_regnet.design.spec import quantized_linear_widths
from keras_regnet.variants import VARIANTS

# --- samplers ------------------------------------------------------------------------------


@pytest.mark.parametrize("space", sampling.SPACES)
def test_samplers_respect_every_constraint_and_are_reproducible(space):
    models = sampling.sample(space, 25, seed=3, flops=(360e6, 400e6))
    assert models == sampling.sample(space, 25, seed=3, flops=(360e6, 400e6))
    assert models != sampling.sample(space, 25, seed=4, flops=(360e6, 400e6))
    for rec in models:
        assert rec["space"] == space and 360e6 <= rec["flops"] <= 400e6
        spec = sampling.spec_from_record(rec)
        anynet = spec.to_anynet()
        assert anynet.num_stages == 4
        for w, b, g in zip(anynet.widths, anynet.bottleneck_ratios, anynet.group_widths):
            assert (w / b) == int(w / b) and int(w / b) % g == 0  # buildable
        if space in sampling.REGNET_SPACES:
            assert 12 <= rec["depth"] <= 28 and 8 <= rec["w0"] <= 256 and rec["w0"] % 8 == 0
            assert 8 <= rec["wa"] <= 256 and 2 <= rec["wm"] <= 3
            assert rec["se_ratio"] == (0.25 if space == "RegNetY" else 0.0)
            continue
        d, w, b, g = rec["depths"], rec["widths"], rec["bottleneck_ratios"], rec["group_widths"]
        assert all(1 <= x <= 16 for x in d) and all(8 <= x <= 1024 and x % 8 == 0 for x in w)
        assert set(b) <= {1, 2, 4} and set(g) <= {1, 2, 4, 8, 16, 32}
        if space != "AnyNetXA":
            assert len(set(b)) == 1
        if space in ("AnyNetXC", "AnyNetXD", "AnyNetXE"):
            assert len(set(g)) == 1
        if space in ("AnyNetXD", "AnyNetXE"):
            assert w == sorted(w)
        if space == "AnyNetXE":
            assert d == sorted(d)


@pytest.mark.slow
def test_window_parsing_and_bad_input(monkeypatch):
    assert sampling.parse_window("360M:400M") == (360e6, 400e6)
    assert sampling.parse_window("1.5G:2G") == (1.5e9, 2e9)
    with pytest.raises(ValueError, match="LO:HI"):
        sampling.parse_window("400M")
    monkeypatch.setattr(sampling, "MAX_TRIES", 1000)  # the message, without a million draws first
    with pytest.raises(ValueError, match="after 1000 draws; widen the complexity window"):
        sampling.sample("RegNetX", 1, flops=(1, 2))
    with pytest.raises(ValueError, match="space must be one of"):
        sampling.sample("ResNet", 1)


def test_sampled_anynet_builds_with_exact_complexity():
    import keras_regnet

    rec = sampling.sample("AnyNetXA", 1, seed=0, flops=(100e6, 200e6))[0]
    spec = sampling.spec_from_record(rec)
    model = keras_regnet.RegNet(spec, weights=None, input_shape=(64, 64, 3))
    trainable = sum(int(np.prod(v.shape)) for v in model.trainable_weights)
    assert trainable == rec["params"] == keras_regnet.complexity(spec)["params"]


# --- analysis --------------------------------------------------------------------------------

def test_edf_hand_computed():
    errors = [10.0, 20.0, 20.0, 40.0]
    np.testing.assert_allclose(analysis.edf(errors, [5, 10, 15, 25, 50]), [0, 0, 0.25, 0.75, 1.0])
    np.testing.assert_allclose(analysis.edf(errors, [30], weights=[1, 0, 0, 3]), [0.25])


def test_complexity_normalisation_hand_computed():
    # Bins [1, 2) and [2, 4): three models in the first, one in the second; each bin gets half.
    w = analysis.complexity_weights([1.0, 1.5, 1.9, 3.0], bins=[1, 2, 4])
    np.testing.assert_allclose(w, [1 / 6, 1 / 6, 1 / 6, 1 / 2])
    # Space B's cheap models are no better than A's; B only has more of them. Normalised, the
    # two EDFs agree where the raw ones do not.
    grid = [15.0]
    a = ([10.0, 20.0], [1.0, 3.0])
    b = ([10.0, 10.0, 10.0, 20.0], [1.0, 1.2, 1.4, 3.0])
    raw = analysis.edf(a[0], grid), analysis.edf(b[0], grid)
    assert raw[0][0] == 0.5 and raw[1][0] == 0.75
    normed = analysis.normalized_edfs({"A": a, "B": b}, grid, n_bins=2)
    np.testing.assert_allclose(normed["A"], normed["B"])


def test_bootstrap_good_range_hand_computed():
    # Two models, resamples of 2 drawn with replacement: the better one (value 0) is missing
    # from a resample with probability 1/4, so the best values are 0 (75%) and 1 (25%):
    # 2.5th and 50th percentiles 0, 97.5th percentile 1.
    r = analysis.bootstrap_good_range([0.0, 1.0], [1.0, 2.0], fraction=1.0, seed=0)
    assert (r.low, r.median, r.high) == (0.0, 0.0, 1.0)
    # 25% of 8 models = resamples of 2. The best model (value 6) is drawn with probability
    # 1 - (7/8)^2 = 23%; the second best (value 7) wins 0.766 * (1 - (6/7)^2) = 20%; a value in
    # 0..5 wins the other 57%. So the 97.5th percentile is 7 and the median lies in 0..5.
    values, errors = np.arange(8.0), np.array([9.0, 8, 7, 6, 5, 4, 1, 2])
    r = analysis.bootstrap_good_range(values, errors, seed=1)
    assert r.high == 7.0 and r.median <= 5.0 and r.low <= 5.0


@pytest.mark.parametrize("name", list(VARIANTS))
def test_fit_recovers_published_regnets_exactly(name):
    spec = VARIANTS[name].spec
    widths = quantized_linear_widths(spec.w0, spec.wa, spec.wm, spec.depth)
    fit = analysis.fit_quantized_linear(widths)
    assert fit.exact and fit.w0 == spec.w0
    assert quantized_linear_widths(fit.w0, fit.wa, fit.wm, spec.depth) == widths
    assert abs(fit.wm - spec.wm) < 0.05 and fit.e_fit >= 0


def test_fit_of_sampled_regnets_and_noisy_widths():
    for rec in sampling.sample("RegNetX", 10, seed=5):
        widths = quantized_linear_widths(rec["w0"], rec["wa"], rec["wm"], rec["depth"])
        assert analysis.fit_quantized_linear(widths).exact
    noisy = analysis.fit_quantized_linear([24, 56, 64, 150, 160, 370, 400])
    assert not noisy.exact
    line = analysis.fit_quantized_linear([24, 48, 72, 96, 120, 144])  # a straight line: e_fit small
    assert line.e_fit < noisy.e_fit


# --- sweeps end to end ----------------------------------------------------------------------------

def _cli(*args, **kwargs):
    return subprocess.run([sys.executable, "-m", "keras_regnet.cli", *args], capture_output=True,
                          text=True, **kwargs)


@pytest.mark.slow
def test_sweep_sample_train_killed_resumed_analyze_end_to_end(tmp_path):
    """Two spaces sampled; the first file's training SIGKILLed once one model is finished; one
    ``sweep train`` of both files then trains only the two unfinished models (the finished one
    kept as it was); the report compares the spaces."""
    paths = {space: str(tmp_path / f"{space}.jsonl") for space in ("RegNetX", "AnyNetXA")}
    for space, n in (("RegNetX", "2"), ("AnyNetXA", "1")):
        # Seed 3 draws shallow models of this window: tracing time.
        result = _cli("sweep", "sample", "--space", space, "--n", n, "--seed", "3", "--flops",
                      "100M:400M", "--out", paths[space])
        assert result.returncode == 0, result.stderr
    short = ["--epochs", "1", "--steps_per_epoch", "3"]
    proc = subprocess.Popen([sys.executable, "-m", "keras_regnet.cli", "sweep", "train", paths["RegNetX"],
                             *short], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if sum("error" in json.loads(line) for line in open(paths["RegNetX"])) >= 1:
            break
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    first = [json.loads(line) for line in open(paths["RegNetX"])]
    finished = [r["error"] for r in first if "error" in r]
    assert len(finished) == 1

    result = _cli("sweep", "train", *paths.values(), *short, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("error ") == 2  # only the unfinished ones trained
    final = [json.loads(line) for line in open(paths["RegNetX"])]
    assert [r["error"] for r, f in zip(final, first) if "error" in f] == finished  # kept as they were
    for path in paths.values():
        records = [json.loads(line) for line in open(path)]
        assert all(0 <= r["error"] <= 100 and r["epochs"] == 1 and r["steps_per_epoch"] == 3 for r in records)

    result = _cli("sweep", "analyze", *paths.values(), "--out", str(tmp_path / "report"))
    assert result.returncode == 0, result.stderr
    html = open(tmp_path / "report" / "report.html").read()
    assert html.count("<img src='data:image/png;base64,") >= 5 and "AnyNetXA" in html
    assert (tmp_path / "report" / "edf.png").stat().st_size > 1000
