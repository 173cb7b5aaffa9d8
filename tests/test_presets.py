"""Pretrained presets: the shipped ones load on every backend with the same outputs, `zoo.list()` reports
them, loading from a folder or a checked URL works, a damaged or unchecked preset never loads, and
`zoo.build` packages a run reproducibly."""

import dataclasses
import http.server
import json
import shutil
import threading
from pathlib import Path

import keras
import numpy as np
import pytest
from keras import ops

import zoo
from zoo import presets
from zoo.presets import PRETRAINED_DIR, PresetError, Recipe

BACKEND = keras.backend.backend()
REQUIRED = ("quickstart_digits", "vamp_vae_mnist10k", "vamp_convhvae_mnist10k")
SHIPPED = [name for name in presets.RECIPES if (PRETRAINED_DIR / name / "metadata.json").exists()]


def _check_reference(model, folder):
    """The deterministic outputs recorded at build time, reproduced by `model` on this backend."""
    with np.load(Path(folder) / "reference.npz") as ref:
        x = ops.convert_to_tensor(ref["images"])
        mean, log_var = model.encode(x)
        np.testing.assert_allclose(ops.convert_to_numpy(mean), ref["encode_mean"], rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(ops.convert_to_numpy(log_var), ref["encode_log_var"], rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(ops.convert_to_numpy(model.reconstruct(x, seed=0)), ref["reconstruct"], rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(ops.convert_to_numpy(model.prior.log_prob(ops.convert_to_tensor(ref["encode_mean"]))),
                                   ref["prior_log_prob"], rtol=1e-4, atol=1e-3)


def test_the_required_presets_are_shipped():
    assert set(REQUIRED) <= set(SHIPPED), f"build the missing ones with python -m zoo.build NAME (shipped: {SHIPPED})"


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_preset_gives_the_same_outputs_on_this_backend(name):
    preset = zoo.load_preset(name)
    assert preset.model.count_params() == preset.metadata["parameters"]
    _check_reference(preset.model, preset.path)


def test_from_preset_on_the_base_class_gives_the_right_architecture():
    from zoo import LatentVariableModel
    from zoo.architectures.conv_hvae import ConvHVAE
    from zoo.architectures.vae import VAE

    model = LatentVariableModel.from_preset("quickstart_digits")
    assert type(model) is VAE
    _check_reference(model, PRETRAINED_DIR / "quickstart_digits")
    assert type(VAE.from_preset("quickstart_digits")) is VAE
    with pytest.raises(TypeError, match="holds a VAE, not a ConvHVAE"):
        ConvHVAE.from_preset("quickstart_digits")


def test_list_describes_the_model_each_preset_loads_to():
    """zoo.list() must say what loading gives: the architecture, prior, likelihood, image shape, training-set
    size and parameter count of the loaded model, and the test metrics recorded by its run."""
    entries = {e["name"]: e for e in zoo.list()}
    assert set(entries) == set(SHIPPED)
    for name, entry in entries.items():
        preset = zoo.load_preset(name)
        model = preset.model
        assert entry["architecture"] == type(model).registered_name
        assert entry["prior"] == type(model.prior).registered_name
        assert entry["likelihood"] == type(model.likelihood).registered_name
        assert tuple(entry["image_shape"]) == model.image_shape and entry["num_train"] == model.num_train
        assert entry["parameters"] == model.count_params()
        assert entry["size_bytes"] == (preset.path / "model.weights.h5").stat().st_size < 15_000_000  # a few MB
        assert entry["test_nll"] == preset.metadata["metrics"]["nll"]
        assert "python -m zoo.build " + name in (preset.path / "README.md").read_text()
    if "vamp_vae_mnist10k" in entries:
        e = entries["vamp_vae_mnist10k"]
        assert (e["architecture"], e["prior"], e["dataset"], e["num_train"]) == ("vae", "vampprior", "mnist10k", 7000)


def test_loading_errors_name_the_problem(tmp_path, monkeypatch):
    with pytest.raises(PresetError, match="unknown preset 'no_such'.*quickstart_digits"):
        zoo.load("no_such")
    monkeypatch.setitem(presets.RECIPES, "unbuilt", Recipe(name="unbuilt", config="zoo/quickstart.yaml"))
    with pytest.raises(PresetError, match="python -m zoo.build unbuilt"):
        zoo.load("unbuilt")
    with pytest.raises(PresetError, match="needs its sha256"):
        zoo.load("https://example.invalid/p.tar.gz")


@pytest.fixture()
def preset_copy(tmp_path):
    folder = tmp_path / "quickstart_copy"
    shutil.copytree(PRETRAINED_DIR / "quickstart_digits", folder)
    return folder


def test_load_from_a_folder(preset_copy):
    _check_reference(zoo.load(preset_copy), preset_copy)


def test_damaged_presets_never_load(preset_copy):
    weights = preset_copy / "model.weights.h5"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])  # a partial copy
    with pytest.raises(PresetError, match="corrupted, partial"):
        zoo.load(preset_copy)
    weights.write_bytes(data)
    for name in ("config.json", "metadata.json", "config.yaml", "README.md"):  # every file is checksummed
        original = (preset_copy / name).read_bytes()
        (preset_copy / name).write_bytes(original.replace(b"e", b"E", 1))
        with pytest.raises(PresetError, match=f"{name} has sha256 .* but SHA256SUMS records"):
            zoo.load(preset_copy)
        (preset_copy / name).write_bytes(original)
    metadata = json.loads((preset_copy / "metadata.json").read_text())
    (preset_copy / "metadata.json").write_text(json.dumps({**metadata, "format_version": 99}))
    presets.write_checksums(preset_copy)  # a consistent folder of another format
    with pytest.raises(PresetError, match="preset format 99"):
        zoo.load(preset_copy)
    (preset_copy / "config.yaml").unlink()
    with pytest.raises(PresetError, match="missing config.yaml"):
        zoo.load(preset_copy)
    (preset_copy / "SHA256SUMS").unlink()
    with pytest.raises(PresetError, match="has no SHA256SUMS"):
        zoo.load(preset_copy)


# --- URLs: checksum, partial downloads, cache --------------------------------------------------------------


@pytest.fixture(scope="module")
def packed(tmp_path_factory):
    out = tmp_path_factory.mktemp("archive") / "quickstart_digits.tar.gz"
    return out, presets.archive(PRETRAINED_DIR / "quickstart_digits", out)


@pytest.fixture()
def http_server(packed):
    """Serves the archive at /good.tar.gz, a truncated transfer at /short.tar.gz (Content-Length of the whole
    file, half the bytes) and a cut-off transfer without length at /cut.tar.gz."""
    data = packed[0].read_bytes()
    hits = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            hits.append(self.path)
            if self.path not in ("/good.tar.gz", "/short.tar.gz", "/cut.tar.gz"):
                self.send_error(404)
                return
            self.send_response(200)
            if self.path != "/cut.tar.gz":
                self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data if self.path == "/good.tar.gz" else data[: len(data) // 2])
            self.close_connection = True

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", hits, server
    server.shutdown()
    server.server_close()


def test_url_with_checksum_loads_and_is_cached(tmp_path, packed, http_server):
    url, hits, server = http_server
    digest = packed[1]
    preset = zoo.load_preset(f"{url}/good.tar.gz", sha256=digest, cache_dir=tmp_path / "cache")
    _check_reference(preset.model, preset.path)
    assert str(preset.path).startswith(str(tmp_path / "cache"))
    server.shutdown()  # offline now: the cached, checked archive is enough
    again = zoo.load_preset(f"{url}/good.tar.gz", sha256=digest, cache_dir=tmp_path / "cache")
    assert again.path == preset.path and hits == ["/good.tar.gz"]


def test_file_url_loads(tmp_path, packed):
    preset = zoo.load_preset(packed[0].resolve().as_uri(), sha256=packed[1], cache_dir=tmp_path / "cache")
    _check_reference(preset.model, preset.path)


@pytest.mark.parametrize("path", ["/short.tar.gz", "/cut.tar.gz"])
def test_partial_download_is_an_error(tmp_path, packed, http_server, path):
    url = http_server[0]
    with pytest.raises(PresetError, match="nothing was loaded"):
        zoo.load(url + path, sha256=packed[1], cache_dir=tmp_path / "cache")
    assert not list((tmp_path / "cache").rglob("metadata.json"))  # nothing unpacked


def test_checksum_mismatch_is_an_error(tmp_path, http_server):
    url = http_server[0]
    with pytest.raises(PresetError, match="does not match sha256"):
        zoo.load(url + "/good.tar.gz", sha256="0" * 64, cache_dir=tmp_path / "cache")
    assert not list((tmp_path / "cache").rglob("metadata.json"))


# --- building ----------------------------------------------------------------------------------------------


def test_build_packages_a_run_reproducibly(tmp_path):
    from zoo.build import build

    recipe = Recipe(
        name="tiny_digits", config="zoo/quickstart.yaml", summary="test preset", notes="two epochs", backend=BACKEND,
        overrides=("train.epochs=2", "train.warmup_epochs=1", "train.verbose=0", "model.prior.components=10",
                   "model.hidden_units=32", "evaluate.num_samples=20"),
    )
    first = build(recipe, out_dir=tmp_path / "a", run_dir=tmp_path / "run_a")
    second = build(recipe, out_dir=tmp_path / "b", run_dir=tmp_path / "run_b")
    a, b = zoo.load_preset(first), zoo.load_preset(second)
    for va, vb in zip(a.model.weights, b.model.weights):
        np.testing.assert_allclose(ops.convert_to_numpy(va), ops.convert_to_numpy(vb), rtol=1e-6, atol=1e-6,
                                   err_msg=va.path)
    metadata = a.metadata
    assert metadata["metrics"] == json.loads((tmp_path / "run_a" / "metrics.json").read_text())
    assert metadata["num_train"] == 1297 and metadata["training"]["epochs_run"] == 2
    assert metadata["prior_state"] == [{"path": "prior/pseudo_inputs", "shape": [10, 8, 8, 1]}]
    assert metadata["training"]["equivalent_command"].endswith(
        "python -m training.fit zoo/quickstart.yaml --set name=tiny_digits --set train.epochs=2 --set "
        "train.warmup_epochs=1 --set train.verbose=0 --set model.prior.components=10 --set model.hidden_units=32 "
        "--set evaluate.num_samples=20")
    _check_reference(a.model, first)

    # a finished run is packaged as is; a run of another config is refused
    before = (tmp_path / "run_a" / "history.csv").read_text()
    build(recipe, out_dir=tmp_path / "c", run_dir=tmp_path / "run_a")
    assert (tmp_path / "run_a" / "history.csv").read_text() == before
    other = dataclasses.replace(recipe, overrides=(*recipe.overrides, "seed=5"))
    with pytest.raises(ValueError, match="another config"):
        build(other, out_dir=tmp_path / "d", run_dir=tmp_path / "run_a")
