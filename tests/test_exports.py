"""SavedModel export for TF Serving, from the shipped quickstart preset.

The SavedModel must reproduce the Keras model's computations seed for seed, reject bad requests with a
message that names the problem, carry warmup records that its own signatures accept, load in a process
that has TensorFlow but not this project, work with saved_model_cli, and serve the sampling client over
REST and gRPC (local fake servers that feed the loaded signatures).

Under KERAS_BACKEND=jax the fixture exports through jax2tf; under PyTorch, `python -m exports.saved_model`
re-runs itself on TensorFlow, so the same checks run against that export.
"""

import json
import os
import subprocess
import sys
import textwrap
from concurrent import futures
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from exports import client, saved_model
from exports.signatures import reference, signature_names
from exports.warmup import read_warmup
from tests.helpers import json_server
from zoo.presets import PRETRAINED_DIR

pytest.importorskip("tensorflow_serving", reason="warmup records need tensorflow-serving-api: pip install -e '.[serving]'")

PRESET = "quickstart_digits"
BACKEND = keras.backend.backend()
REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.skipif(not (PRETRAINED_DIR / PRESET / "metadata.json").exists(),
                                reason=f"preset {PRESET} is not built (python -m zoo.build {PRESET})")
INT_INPUTS = ("num_samples", "seed", "component")


def _feed(signature_fn, **inputs):
    """Call a loaded signature with NumPy / Python inputs; NumPy outputs."""
    specs = signature_fn.structured_input_signature[1]
    out = signature_fn(**{k: tf.constant(v, dtype=specs[k].dtype) for k, v in inputs.items()})
    return {k: v.numpy() for k, v in out.items()}


def _subprocess_env():
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "KERAS_BACKEND")}
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    return env


@pytest.fixture(scope="module")
def preset():
    from zoo.presets import load_preset

    return load_preset(PRESET)


@pytest.fixture(scope="module")
def recipe(preset):
    """The run config the preset was trained with (its YAML recipe)."""
    from training import config as config_lib

    return config_lib.load(preset.path / "config.yaml")


@pytest.fixture(scope="module")
def export_base(tmp_path_factory, preset, recipe):
    base = tmp_path_factory.mktemp("serving")
    if BACKEND == "torch":  # the CLI's documented path: it re-runs itself under TensorFlow
        result = subprocess.run([sys.executable, "-m", "exports.saved_model", PRESET, str(base)], cwd=REPO,
                                env={**os.environ, "KERAS_BACKEND": "torch"}, capture_output=True, text=True)
        assert result.returncode == 0, result.stderr[-3000:]
        assert "re-running with KERAS_BACKEND=tensorflow" in result.stderr
    else:
        limits = saved_model.Limits(max_pairs=recipe.evaluate.max_batch)
        saved_model.export(preset.model, base, PRESET, limits=limits, info={"name": PRESET})
    return base


@pytest.fixture(scope="module")
def export_dir(export_base):
    return export_base / PRESET / "1"


@pytest.fixture(scope="module")
def loaded(export_dir):
    return tf.saved_model.load(str(export_dir))


@pytest.fixture(scope="module")
def test_images(recipe):
    from training import data as data_lib

    return data_lib.load_splits(recipe.data).test


# --- layout ----------------------------------------------------------------------------------------------


def test_tf_serving_layout_written_atomically(export_base, export_dir, loaded, preset):
    assert sorted(p.name for p in (export_base / PRESET).iterdir()) == ["1"]  # no temporary folder left
    for name in ("saved_model.pb", "variables", "assets.extra/tf_serving_warmup_requests", "assets.extra/export.json"):
        assert (export_dir / name).exists(), name
    expected = {"serving_default", *signature_names(preset.model)}
    assert "sample_component" in expected  # a VampPrior has components
    assert set(loaded.signatures) == expected
    info = json.loads((export_dir / "assets.extra" / "export.json").read_text())
    assert info["backend"] == ("tensorflow" if BACKEND == "torch" else BACKEND)
    assert info["image_shape"] == [8, 8, 1] and info["num_components"] == 50
    assert saved_model.next_version(export_base / PRESET) == 2
    with pytest.raises(saved_model.ExportError, match="already exists"):
        saved_model.export(preset.model, export_base, PRESET, version=1)


def test_failed_export_leaves_no_version(tmp_path, preset, monkeypatch):
    class BrokenArchive:
        def write_out(self, path, verbose=False):
            Path(path).mkdir()
            (Path(path) / "saved_model.pb").write_bytes(b"partial")
            raise OSError("disk full")

    monkeypatch.setattr(saved_model, "build_archive", lambda *args, **kwargs: BrokenArchive())
    with pytest.raises(OSError, match="disk full"):
        saved_model.export(preset.model, tmp_path, "m", version=3)
    assert list((tmp_path / "m").iterdir()) == []


def test_a_run_directory_is_a_source_too(tmp_path, preset, recipe, test_images):
    """A run directory (config.yaml, config.json and model.weights.h5, as training.fit writes them) exports like
    a preset, without its dataset."""
    run = tmp_path / "run"
    run.mkdir()
    for name in ("config.yaml", "config.json", "model.weights.h5"):
        (run / name).write_bytes((preset.path / name).read_bytes())
    model, info = saved_model.load_source(run)
    assert info["source"] == "run" and info["name"] == recipe.name
    x = test_images[:4]
    np.testing.assert_allclose(reference(model, "encode", images=x)["mean"],
                               reference(preset.model, "encode", images=x)["mean"], rtol=1e-6, atol=1e-6)


def test_cli_rejects_bad_caps(capsys):
    with pytest.raises(SystemExit):
        saved_model.main([PRESET, "/tmp/unused", "--max-samples", "0"])
    assert "--max-samples must be >= 1" in capsys.readouterr().err


def test_serving_default_is_sample(loaded):
    a = _feed(loaded.signatures["serving_default"], num_samples=4, seed=11)["images"]
    b = _feed(loaded.signatures["sample"], num_samples=4, seed=11)["images"]
    np.testing.assert_array_equal(a, b)


# --- same seed, same numbers -----------------------------------------------------------------------------


def _cases(test_images):
    x = test_images[:6]
    z = np.random.RandomState(0).randn(5, 10).astype("float32")
    return {
        "sample": dict(num_samples=16, seed=3),
        "sample_component": dict(component=7, num_samples=4, seed=3),
        "encode": dict(images=x),
        "decode": dict(z=z, seed=5),
        "reconstruct": dict(images=x, seed=2),
        "log_likelihood": dict(images=x, num_samples=50, seed=1),
    }


@pytest.mark.parametrize("name", ["sample", "sample_component", "encode", "decode", "reconstruct", "log_likelihood"])
def test_signature_reproduces_the_keras_model(name, loaded, preset, test_images):
    inputs = _cases(test_images)[name]
    random = name in ("sample", "sample_component", "log_likelihood")
    if BACKEND == "torch" and random:
        pytest.skip("the export ran on TensorFlow; PyTorch's random streams differ, so only deterministic "
                    "signatures can be compared value by value here")
    expected = reference(preset.model, name, **inputs)
    got = _feed(loaded.signatures[name], **inputs)
    assert set(got) == set(expected)
    for key in expected:
        assert got[key].shape == expected[key].shape
        np.testing.assert_allclose(got[key], expected[key], rtol=1e-5, atol=1e-5, err_msg=f"{name}/{key}")


def test_sample_is_deterministic_per_seed_and_differs_across_seeds(loaded):
    sample = loaded.signatures["sample"]
    a, b = _feed(sample, num_samples=16, seed=7)["images"], _feed(sample, num_samples=16, seed=7)["images"]
    c = _feed(sample, num_samples=16, seed=8)["images"]
    np.testing.assert_array_equal(a, b)
    assert a.shape == (16, 8, 8, 1) and np.all((a >= 0) & (a <= 1))
    assert np.mean(np.abs(a - c)) > 0.05
    assert len({arr.tobytes() for arr in a}) == 16  # the draws within one request are distinct


def test_component_samples_come_from_that_component(loaded, preset):
    """Re-encoded, images sampled from component k lie nearer component k's mean (its encoded pseudo-input)
    than images sampled from the whole prior do."""
    prior = preset.model.prior
    means = keras.ops.convert_to_numpy(preset.model.encode(keras.ops.clip(prior.pseudo_inputs, 0.0, 1.0))[0])
    anywhere = _feed(loaded.signatures["encode"], images=_feed(loaded.signatures["sample"], num_samples=256, seed=1)["images"])
    for k in (0, 13, 42):
        images = _feed(loaded.signatures["sample_component"], component=k, num_samples=64, seed=k)["images"]
        z = _feed(loaded.signatures["encode"], images=images)["mean"]
        near = ((z - means[k]) ** 2).sum(-1).mean()
        overall = ((anywhere["mean"] - means[k]) ** 2).sum(-1).mean()
        assert near < 0.7 * overall, (k, near, overall)


def test_log_likelihood_matches_the_presets_measured_test_nll(loaded, preset, recipe, test_images):
    """The exported IWAE estimate over the whole test split (S = the card's S) reproduces the card's NLL."""
    metrics = preset.metadata["metrics"]
    s = metrics["num_samples"]
    per_call = recipe.evaluate.max_batch // s
    ll = np.concatenate([
        _feed(loaded.signatures["log_likelihood"], images=test_images[i: i + per_call], num_samples=s, seed=i)["log_likelihood"]
        for i in range(0, len(test_images), per_call)])
    assert ll.shape == (len(test_images),) == (metrics["num_examples"],)
    assert abs(-ll.mean() - metrics["nll"]) < 0.1  # Monte-Carlo noise of two S = 1000 estimates


# --- bad requests -----------------------------------------------------------------------------------------


BAD_REQUESTS = [
    ("sample", dict(num_samples=0, seed=0), "num_samples must be >= 1"),
    ("sample", dict(num_samples=-3, seed=0), "num_samples must be >= 1"),
    ("sample", dict(num_samples=1025, seed=0), "num_samples must be <= 1024"),
    ("sample", dict(num_samples=[2, 3], seed=0), "should be a scalar"),
    ("sample_component", dict(component=50, num_samples=2, seed=0), "component must be in [0, 49]"),
    ("sample_component", dict(component=-1, num_samples=2, seed=0), "component must be in [0, 49]"),
    ("encode", dict(images=np.zeros((2, 9, 8, 1))), "images must have shape [batch, 8, 8, 1]"),
    ("encode", dict(images=np.zeros((2, 8, 8))), "images must have shape [batch, 8, 8, 1]"),
    ("reconstruct", dict(images=np.full((2, 8, 8, 1), 255.0), seed=0), "images must be finite pixel intensities in [0, 1]"),
    ("reconstruct", dict(images=np.full((2, 8, 8, 1), np.nan), seed=0), "images must be finite pixel intensities in [0, 1]"),
    ("encode", dict(images=np.zeros((0, 8, 8, 1))), "images: empty batch"),
    ("encode", dict(images=np.zeros((1025, 8, 8, 1))), "images: at most 1024 per request"),
    ("decode", dict(z=np.zeros((2, 11)), seed=0), "z must have shape [batch, 10]"),
    ("decode", dict(z=np.full((2, 10), np.inf), seed=0), "z must be finite"),
    ("log_likelihood", dict(images=np.zeros((2, 8, 8, 1)), num_samples=30000, seed=0), "images x num_samples must be <= 50000"),
]


@pytest.mark.parametrize("name,inputs,message", BAD_REQUESTS, ids=[m for _, _, m in BAD_REQUESTS])
def test_bad_requests_fail_with_invalid_argument_naming_the_problem(loaded, name, inputs, message):
    with pytest.raises(tf.errors.InvalidArgumentError) as error:
        _feed(loaded.signatures[name], **inputs)
    assert message in error.value.message


def test_wrong_dtype_is_rejected(loaded):
    with pytest.raises(tf.errors.InvalidArgumentError, match="expected to be a float tensor but is a int32"):
        loaded.signatures["encode"](images=tf.zeros((1, 8, 8, 1), tf.int32))


# --- warmup -----------------------------------------------------------------------------------------------


def test_warmup_records_are_valid_requests_for_every_signature(export_dir, loaded, preset):
    requests = read_warmup(export_dir / "assets.extra" / "tf_serving_warmup_requests")
    names = [name for name, _ in requests]
    assert set(names) == set(signature_names(preset.model))
    assert sorted(int(inputs["num_samples"]) for name, inputs in requests if name == "sample") == [1, 16, 256]
    for name, inputs in requests:
        for key in INT_INPUTS:
            if key in inputs:
                assert inputs[key].dtype == np.int32
        out = loaded.signatures[name](**{k: tf.constant(v) for k, v in inputs.items()})
        batch = int(inputs["num_samples"]) if name.startswith("sample") else len(inputs.get("images", inputs.get("z")))
        assert all(v.shape[0] == batch for v in out.values()), name


# --- outside this project ------------------------------------------------------------------------------


STANDALONE = textwrap.dedent("""
    import importlib.abc, importlib.machinery, json, sys
    import numpy as np

    BLOCKED = {"keras", "tf_keras", "layers", "zoo", "training", "exports", "evaluation", "benchmarks"}

    class Block(importlib.abc.MetaPathFinder, importlib.abc.Loader):
        # these packages look uninstalled: a spec without origin (TensorFlow's probes see no package)
        # whose import fails

        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED:
                return importlib.machinery.ModuleSpec(name, self)

        def create_module(self, spec):
            return None

        def exec_module(self, module):
            raise ImportError(f"{module.__name__} is not installed in this process")

    sys.meta_path.insert(0, Block())
    import tensorflow as tf

    export_dir, inputs_file, out_file = sys.argv[1:]
    loaded = tf.saved_model.load(export_dir)
    requests = json.loads(open(inputs_file).read())
    results = {}
    for name, inputs in requests.items():
        specs = loaded.signatures[name].structured_input_signature[1]
        out = loaded.signatures[name](**{k: tf.constant(v, dtype=specs[k].dtype) for k, v in inputs.items()})
        results.update({f"{name}/{k}": v.numpy() for k, v in out.items()})
    np.savez(out_file, **results)
    print("modules:", sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED))
""")


def test_loads_and_runs_in_a_process_without_this_project(tmp_path, export_dir, loaded, test_images):
    script, inputs_file, out_file = tmp_path / "standalone.py", tmp_path / "inputs.json", tmp_path / "out.npz"
    script.write_text(STANDALONE)
    cases = {k: {n: np.asarray(v).tolist() for n, v in inputs.items()} for k, inputs in _cases(test_images).items()}
    inputs_file.write_text(json.dumps(cases))
    result = subprocess.run([sys.executable, "-I", str(script), str(export_dir), str(inputs_file), str(out_file)],
                            cwd=tmp_path, env=_subprocess_env(), capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "modules: []" in result.stdout
    with np.load(out_file) as standalone:
        for name, inputs in _cases(test_images).items():
            for key, value in _feed(loaded.signatures[name], **inputs).items():
                np.testing.assert_allclose(standalone[f"{name}/{key}"], value, rtol=1e-6, atol=1e-6)


def test_saved_model_cli_show_and_run(tmp_path, export_dir, loaded):
    cli = [sys.executable, "-m", "tensorflow.python.tools.saved_model_cli"]
    show = subprocess.run([*cli, "show", "--dir", str(export_dir), "--all"], cwd=tmp_path, env=_subprocess_env(),
                          capture_output=True, text=True)
    assert show.returncode == 0, show.stderr[-3000:]
    for text in ("signature_def['sample']", "signature_def['serving_default']", "signature_def['log_likelihood']",
                 "inputs['num_samples']", "inputs['component']", "outputs['log_var']", "DT_INT32"):
        assert text in show.stdout, text
    run = subprocess.run([*cli, "run", "--dir", str(export_dir), "--tag_set", "serve", "--signature_def", "sample",
                          "--input_exprs", "num_samples=4;seed=7", "--outdir", str(tmp_path / "out")],
                         cwd=tmp_path, env=_subprocess_env(), capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-3000:]
    np.testing.assert_allclose(np.load(tmp_path / "out" / "images.npy"),
                               _feed(loaded.signatures["sample"], num_samples=4, seed=7)["images"], rtol=1e-6, atol=1e-6)


# --- the sampling client ------------------------------------------------------------------------------


def _serve(loaded, signature, inputs):
    """What TF Serving does with a decoded request: feed the signature, or fail with its message."""
    try:
        return {"outputs": _feed(loaded.signatures[signature], **inputs)}
    except tf.errors.InvalidArgumentError as error:
        return {"error": error.message}


@pytest.fixture()
def rest_server(loaded):
    """A local stand-in for TF Serving's REST predict endpoint; records the request bodies."""
    bodies = []

    def respond(path, body):
        bodies.append((path, body))
        result = _serve(loaded, body.get("signature_name", "serving_default"), body["inputs"])
        if "error" in result:
            return 400, result
        outputs = {k: v.tolist() for k, v in result["outputs"].items()}
        return 200, {"outputs": outputs["images"] if list(outputs) == ["images"] else outputs}

    with json_server(respond) as url:
        yield url, bodies


def test_rest_client_writes_the_grid_of_the_served_samples(tmp_path, rest_server, loaded):
    url, bodies = rest_server
    out = tmp_path / "grid.png"
    assert client.main(["--url", url, "--model", PRESET, "sample", "--num-samples", "16", "--seed", "0",
                        "--out", str(out), "--columns", "4"]) == 0
    assert bodies == [(f"/v1/models/{PRESET}:predict", {"signature_name": "sample", "inputs": {"num_samples": 16, "seed": 0}})]
    # the served images, tiled 4 x 4 with 1-pixel borders, then upscaled for viewing
    grid = np.asarray(Image.open(out))
    side = 4 * 9 + 1
    assert grid.shape[0] == grid.shape[1] and grid.shape[0] % side == 0
    expected = _feed(loaded.signatures["sample"], num_samples=16, seed=0)["images"]
    scale = grid.shape[0] // side
    first = grid[scale * 1: scale * 9: scale, scale * 1: scale * 9: scale]
    np.testing.assert_allclose(first / 255.0, expected[0, ..., 0], atol=1 / 255 + 1e-6)


def test_rest_client_reports_the_servers_error(tmp_path, rest_server, capsys):
    url, _ = rest_server
    status = client.main(["--url", url, "--model", PRESET, "sample-component", "--component", "99",
                          "--num-samples", "4", "--out", str(tmp_path / "g.png")])
    assert status == 1
    assert "component must be in [0, 49]" in capsys.readouterr().err
    assert not (tmp_path / "g.png").exists()


def test_grpc_client_round_trip(tmp_path, loaded):
    grpc = pytest.importorskip("grpc")
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    received = []

    class Servicer(prediction_service_pb2_grpc.PredictionServiceServicer):
        def Predict(self, request, context):
            received.append(request)
            inputs = {k: tf.make_ndarray(v) for k, v in request.inputs.items()}
            result = _serve(loaded, request.model_spec.signature_name, inputs)
            if "error" in result:
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, result["error"])
            response = predict_pb2.PredictResponse()
            for k, v in result["outputs"].items():
                response.outputs[k].CopyFrom(tf.make_tensor_proto(v))
            return response

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(Servicer(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        out = tmp_path / "grpc.png"
        assert client.main(["--grpc", f"127.0.0.1:{port}", "--model", PRESET, "sample-component", "--component", "3",
                            "--num-samples", "8", "--seed", "2", "--out", str(out)]) == 0
        assert out.exists()
        request = received[0]
        assert request.model_spec.name == PRESET and request.model_spec.signature_name == "sample_component"
        assert {k: (tf.make_ndarray(v).dtype, tf.make_ndarray(v).shape) for k, v in request.inputs.items()} == {
            "component": (np.int32, ()), "num_samples": (np.int32, ()), "seed": (np.int32, ())}
        with pytest.raises(client.ServingError, match="(?s)INVALID_ARGUMENT.*num_samples must be >= 1"):
            client.grpc_predict(f"127.0.0.1:{port}", PRESET, "sample", {"num_samples": 0, "seed": 0})
    finally:
        server.stop(0)


# --- backends --------------------------------------------------------------------------------------------


def test_in_process_export_needs_tensorflow_or_jax(preset):
    if BACKEND != "torch":
        pytest.skip(f"exports in-process on {BACKEND} (the fixture did)")
    with pytest.raises(saved_model.ExportError, match="torch_xla"):
        saved_model.build_archive(preset.model, saved_model.Limits())
