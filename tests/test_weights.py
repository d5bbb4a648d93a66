"""The weights registry, downloads over a loopback HTTP server, the cache, and loading."""

from __future__ import annotations

import hashlib
import os

import numpy as np
import pytest

import keras_regnet
from conftest import reference_rows
from keras_regnet import downloads, verify, weight_table
from keras_regnet.preprocessing import EvalTransform
from keras_regnet.variants import VARIANTS
from keras_regnet.weight_choice import resolve_weights


@pytest.fixture(autouse=True)
def keras_home(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras_home"))
    return tmp_path / "keras_home"


def _files(directory) -> list[str]:
    return sorted(p.name for p in directory.rglob("*") if p.is_file()) if directory.exists() else []


# --- the registry -----------------------------------------------------------------------------

def test_every_model_has_default_weights_and_pycls_accuracy():
    rows = reference_rows()
    for name, variant in VARIANTS.items():
        ws = weight_table.get_weight_set(name)
        if variant.spec.rounding == "pycls":
            assert ws.top1 == pytest.approx(100 - float(rows[variant.paper_name]["top1_err"]))
            assert ws.license == "MIT" and ws.transform == EvalTransform(256, 224, "bilinear")
            assert [d.source for d in ws.downloads] == ["timm", "pycls"]
            assert ws.downloads[1].url.endswith(f"/{variant.paper_name}_dds_8gpu.pyth")
        else:
            assert ws.downloads[-1].source == "torchvision"


def test_torchvision_entries_match_torchvision_metadata():
    import torchvision.models as tvm

    published = {}
    for enum_name in dir(tvm):
        if enum_name.startswith("RegNet_") and enum_name.endswith("_Weights"):
            for w in getattr(tvm, enum_name):
                published[w.url] = w
    entries = [ws for ws in weight_table.list_weights(print_table=False)
               if ws.downloads[-1].source == "torchvision"]
    assert len({ws.downloads[-1].url for ws in entries}) >= 28
    for ws in entries:
        meta = published[ws.downloads[-1].url]
        assert ws.top1 == pytest.approx(meta.meta["_metrics"]["ImageNet-1K"]["acc@1"])
        transform = meta.transforms()
        assert (ws.transform.resize, ws.transform.crop) == (transform.resize_size[0],
                                                            transform.crop_size[0])
        assert ws.transform.interpolation == transform.interpolation.value
        model_params = keras_regnet.complexity(ws.model)["params"]
        assert model_params == meta.meta["num_params"]  # torchvision's net is ours exactly
        if ws.tag.startswith("swag"):
            assert "non-commercial" in ws.license


def test_list_weights_prints_a_table(capsys):
    sets = keras_regnet.list_weights()
    out = capsys.readouterr().out
    assert len(out.splitlines()) == len(sets) + 1 and "RegNetY032" in out and "tv2_in1k" in out


def test_unknown_tag_names_the_available_ones():
    with pytest.raises(ValueError, match="Available: .*imagenet.*tv2_in1k"):
        weight_table.get_weight_set("RegNetY032", "swag_lc_in1k")


# --- downloads ----------------------------------------------------------------------------------

def test_download_success_then_cache_hit(server, tmp_path):
    body = os.urandom(3000)
    server.routes["/w.bin"] = (body, "ok")
    dl = weight_table.Download(server.url + "/w.bin", "timm", sha256=hashlib.sha256(body).hexdigest())
    path = downloads.download(dl, str(tmp_path / "cache"))
    assert open(path, "rb").read() == body
    assert downloads.download(dl, str(tmp_path / "cache")) == path
    assert server.requests == ["/w.bin"]  # the second call did not touch the network
    assert _files(tmp_path / "cache") == ["w.bin"]


def test_hash_mismatch_is_an_error_naming_the_file_and_keeps_nothing(server, tmp_path):
    server.routes["/w.bin"] = (b"tampered", "ok")
    dl = weight_table.Download(server.url + "/w.bin", "timm", sha256="0" * 64)
    with pytest.raises(downloads.DownloadError, match="Hash mismatch for w.bin"):
        downloads.download(dl, str(tmp_path / "cache"))
    assert _files(tmp_path / "cache") == []


def test_truncated_body_keeps_nothing(server, tmp_path):
    server.routes["/w.bin"] = (os.urandom(4096), "truncate")
    with pytest.raises(OSError, match="truncated"):
        downloads.download(weight_table.Download(server.url + "/w.bin", "timm"), str(tmp_path / "cache"))
    assert _files(tmp_path / "cache") == []


def test_server_down_names_url_and_cache_path(server, tmp_path):
    url = server.url + "/w.bin"
    server.shutdown()
    server.server_close()
    with pytest.raises(ConnectionError) as err:
        downloads.download(weight_table.Download(url, "timm"), str(tmp_path / "cache"))
    assert url in str(err.value) and str(tmp_path / "cache" / "w.bin") in str(err.value)
    assert _files(tmp_path / "cache") == []


# --- weights= resolved once ---------------------------------------------------------------------

def test_every_weight_set_resolves_to_one_value_carrying_its_row():
    for ws in weight_table.WEIGHTS:
        w = resolve_weights(ws.tag, ws.model)
        assert (w.kind, w.model, w.tag, w.weight_set) == ("tag", ws.model, ws.tag, ws)
        assert w.transform == ws.transform and w.licence == ws.license
        assert w.files == tuple(d.url for d in ws.downloads) and w.source == ws.downloads[0].source
        assert resolve_weights(w, ws.model) is w  # a resolved value passes through unchanged


def test_none_files_and_mistakes_resolve_or_fail_clearly(tmp_path):
    for none in (None, "none"):
        w = resolve_weights(none, "RegNetX002")
        assert (w.kind, w.pretrained, w.files, w.licence) == ("none", False, (), None)
        assert w.transform == EvalTransform()  # pycls's 256 -> 224 bilinear
    body = os.urandom(64)
    (tmp_path / "m.weights.h5").write_bytes(body)
    (tmp_path / "m.pth").write_bytes(body)
    keras_file = resolve_weights(tmp_path / "m.weights.h5", "RegNetX002")
    assert (keras_file.kind, keras_file.source) == ("keras", "keras_regnet")
    assert keras_file.sha256 == hashlib.sha256(body).hexdigest()
    checkpoint = resolve_weights(str(tmp_path / "m.pth"), None)  # custom specs take files
    assert (checkpoint.kind, checkpoint.source) == ("checkpoint", None)  # detected when read
    with pytest.raises(ValueError, match="cannot load into RegNetY002"):
        resolve_weights(keras_file, "RegNetY002")
    with pytest.raises(ValueError, match="needs a named model"):
        resolve_weights("imagenet", None)
    with pytest.raises(ValueError, match="No weights 'tv2_in1k' for RegNetX002"):
        resolve_weights("tv2_in1k", "RegNetX002")
    with pytest.raises(ValueError, match="must be None, 'imagenet', a weight tag"):
        resolve_weights("weights.txt", "RegNetX002")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        resolve_weights(tmp_path / "gone.weights.h5", "RegNetX002")


class _CountingRegistry(dict):
    lookups = 0

    def __getitem__(self, key):
        type(self).lookups += 1
        return super().__getitem__(key)


def test_a_tag_is_looked_up_once_from_the_command_line_edge_to_the_loaded_model(monkeypatch, keras_home):
    """``keras-regnet export --weights imagenet`` used to look the tag up at every layer it
    crossed; now the edge resolves it and everything below takes the resolved value."""
    from keras_regnet.deployable import load_deployable

    model = keras_regnet.RegNetX002(weights=None)  # stands in for the converted cache entry
    (keras_home / "keras_regnet").mkdir(parents=True)
    model.save_weights(keras_home / "keras_regnet" / "RegNetX002_imagenet.weights.h5")
    registry = _CountingRegistry(weight_table._REGISTRY)
    monkeypatch.setattr(weight_table, "_REGISTRY", registry)
    target = load_deployable("imagenet", "RegNetX002")
    assert registry.lookups == 1
    np.testing.assert_array_equal(target.model.get_layer("s4_b1_conv3").get_weights()[0],
                                  model.get_layer("s4_b1_conv3").get_weights()[0])
    expected = weight_table.get_weight_set("RegNetX002", "imagenet")
    assert target.transform == expected.transform
    record = target.weights.describe()
    assert record["tag"] == "imagenet" and record["licence"] == expected.license


# --- weights="imagenet" end to end ------------------------------------------------------------

def _serve_reference(server, monkeypatch, tmp_path, name, downloads_spec):
    """Registers a fake weight set for ``name`` whose files the loopback server holds."""
    files = []
    for route, source, body in downloads_spec:
        if body is not None:
            server.routes[route] = (body, "ok")
        digest = hashlib.sha256(body).hexdigest() if body is not None else None
        files.append(weight_table.Download(server.url + route, source, sha256=digest))
    fake = weight_table.WeightSet(name, "imagenet", 70.0, EvalTransform(), "MIT", tuple(files))
    monkeypatch.setitem(weight_table._REGISTRY, (name, "imagenet"), fake)


@pytest.mark.slow  # over ~5 s on 2 cores (the quick pass stays under 3 minutes)
def test_imagenet_weights_download_convert_cache_and_load(server, monkeypatch, tmp_path, keras_home):
    reference = verify.calibrated_reference("RegNetY002", "timm")
    body = open(verify.save_native(reference, "timm", tmp_path), "rb").read()
    _serve_reference(server, monkeypatch, tmp_path, "RegNetY002",
                     [("/timm/regnety_002.test/resolve/main/model.safetensors", "timm", body)])

    model = keras_regnet.RegNetY002(weights="imagenet", classifier_activation=None)
    images = np.random.default_rng(0).uniform(0, 255, (2, 224, 224, 3)).astype("float32")
    assert verify.max_logit_difference(model, reference, "timm", images) <= 1e-4
    converted = keras_home / "keras_regnet" / "RegNetY002_imagenet.weights.h5"
    assert converted.exists() and len(server.requests) == 1

    # Second build: from the converted cache, no request; headless gets the same backbone.
    headless = keras_regnet.RegNetY002(weights="imagenet", include_top=False)
    assert len(server.requests) == 1
    np.testing.assert_array_equal(headless.get_layer("s4_b7_conv3").get_weights()[0],
                                  model.get_layer("s4_b7_conv3").get_weights()[0])
    assert _files(keras_home / "keras_regnet") == [".manifest.lock", "RegNetY002_imagenet.weights.h5",
                                                   "manifest.json", "regnety_002.test.safetensors"]


@pytest.mark.slow  # over ~5 s on 2 cores (the quick pass stays under 3 minutes)
def test_falls_back_to_the_next_source(server, monkeypatch, tmp_path, keras_home):
    reference = verify.calibrated_reference("RegNetX002", "pycls")
    body = open(verify.save_native(reference, "pycls", tmp_path), "rb").read()
    _serve_reference(server, monkeypatch, tmp_path, "RegNetX002",
                     [("/missing.safetensors", "timm", None), ("/x.pyth", "pycls", body)])
    model = keras_regnet.RegNetX002(weights="imagenet", classifier_activation=None,
                                    input_shape=(None, None, 3))
    images = np.random.default_rng(0).uniform(0, 255, (2, 97, 131, 3)).astype("float32")
    assert verify.max_logit_difference(model, reference, "pycls", images) <= 1e-4


def test_no_network_error_says_where_to_put_the_file(server, monkeypatch, tmp_path):
    _serve_reference(server, monkeypatch, tmp_path, "RegNetX002", [("/gone.safetensors", "timm", None)])
    with pytest.raises(ConnectionError, match="place it at .*keras_regnet"):
        keras_regnet.RegNetX002(weights="imagenet")


# --- integrity: pinned hashes, trust on first use, `weights --verify` ---------------------------

def _unpinned_x002(server, monkeypatch, tmp_path, body: bytes) -> str:
    """RegNetX002's 'imagenet' set from one unpinned URL (like the hub's resolve/main)."""
    route = "/timm/regnetx_002.test/resolve/main/model.safetensors"
    server.routes[route] = (body, "ok")
    ws = weight_table.WeightSet("RegNetX002", "imagenet", 70.0, EvalTransform(), "MIT",
                                (weight_table.Download(server.url + route, "timm"),))
    monkeypatch.setitem(weight_table._REGISTRY, ("RegNetX002", "imagenet"), ws)
    return route


@pytest.mark.slow  # over ~5 s on 2 cores (the quick pass stays under 3 minutes)
def test_first_download_is_recorded_and_later_loads_and_downloads_must_match(server, monkeypatch, tmp_path,
                                                                              keras_home, capsys, caplog):
    import json

    from keras_regnet import cli, weights

    reference = verify.calibrated_reference("RegNetX002", "timm")
    body = open(verify.save_native(reference, "timm", tmp_path), "rb").read()
    route = _unpinned_x002(server, monkeypatch, tmp_path, body)
    keras_regnet.RegNetX002(weights="imagenet")
    cache = keras_home / "keras_regnet"
    manifest = json.loads((cache / "manifest.json").read_text())
    assert manifest["downloads"] == {server.url + route: hashlib.sha256(body).hexdigest()}
    converted = cache / "RegNetX002_imagenet.weights.h5"
    assert set(manifest["files"]) == {"downloads/regnetx_002.test.safetensors", converted.name}
    assert cli.main(["weights", "--verify"]) == 0
    assert "2 files" in capsys.readouterr().out

    # A cached file changed on disk (same size): --verify names it, and the next load
    # notices, says so, and rebuilds it from the (intact) download.
    data = bytearray(converted.read_bytes())
    data[-100] ^= 0xFF
    converted.write_bytes(bytes(data))
    assert cli.main(["weights", "--verify"]) == 1
    assert f"CHANGED      {converted.name}" in capsys.readouterr().out
    with caplog.at_level("WARNING"):
        path = weights.fetch_converted("RegNetX002")
    assert "does not hash as recorded" in caplog.text and str(converted) in caplog.text
    assert cli.main(["weights", "--verify"]) == 0 and path == str(converted)

    # The URL serves another file later (a mutable hub URL re-pointed): refused, nothing kept.
    server.routes[route] = (body + b" ", "ok")
    os.remove(converted)
    os.remove(cache / "downloads" / "regnetx_002.test.safetensors")
    with pytest.raises(ConnectionError, match="now serves a different file than when it was first"):
        weights.fetch_converted("RegNetX002")
    assert not (cache / "downloads" / "regnetx_002.test.safetensors").exists()


def test_a_rejected_download_is_not_trusted_on_first_use(server, monkeypatch, tmp_path, keras_home):
    """A mirror serving another model's checkpoint records nothing: once it serves the right
    file, that one loads (the first download that passed every check is the one trusted)."""
    import json

    from keras_regnet import weights

    def checkpoint(name: str, folder) -> bytes:
        folder.mkdir()
        path = verify.save_native(verify.calibrated_reference(name, "timm"), "timm", folder)
        return open(path, "rb").read()

    wrong = checkpoint("RegNetY002", tmp_path / "wrong")
    route = _unpinned_x002(server, monkeypatch, tmp_path, wrong)
    with pytest.raises(ConnectionError, match="is not a timm checkpoint of"):
        weights.fetch_converted("RegNetX002")
    manifest = keras_home / "keras_regnet" / "manifest.json"
    assert not manifest.exists() or json.loads(manifest.read_text())["downloads"] == {}
    server.routes[route] = (checkpoint("RegNetX002", tmp_path / "right"), "ok")
    assert os.path.exists(weights.fetch_converted("RegNetX002"))


def test_torchvision_files_are_pinned_by_the_hash_in_their_names():
    pinned = [d for ws in weight_table.WEIGHTS for d in ws.downloads if d.source == "torchvision"]
    assert pinned and all(d.sha256_prefix and len(d.sha256_prefix) >= 8 for d in pinned)
    assert all(d.sha256_prefix in d.url for d in pinned)
