"""`python -m exports.client` needs neither Keras nor TensorFlow for a REST request (it took 13 s and printed
TensorFlow's log lines to send one HTTP request), and refuses out-of-bounds requests before sending."""

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.helpers import json_server
from exports import client, interface

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("keras", "tensorflow", "jax", "torch")


def _python(code, *args):
    return subprocess.run([sys.executable, "-c", code, *args], cwd=ROOT, capture_output=True, text=True, timeout=120)


def test_importing_the_client_imports_no_framework():
    run = _python(f"import sys, exports.client, training.figures; print([m for m in {HEAVY!r} if m in sys.modules])")
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "[]"


@pytest.fixture()
def fake_server():
    """A stand-in for TF Serving's REST predict endpoint that returns four 8x8 grey images."""
    bodies = []

    def respond(path, body):
        bodies.append(body)
        return 200, {"outputs": np.full((4, 8, 8, 1), 0.5).tolist()}

    with json_server(respond) as url:
        yield url, bodies


def test_a_rest_request_and_its_grid_run_without_any_framework(tmp_path, fake_server):
    url, bodies = fake_server
    out = tmp_path / "grid.png"
    code = ("import sys; from exports import client; rc = client.main(sys.argv[1:]); "
            f"print([m for m in {HEAVY!r} if m in sys.modules]); sys.exit(rc)")
    run = _python(code, "--url", url, "--model", "m", "sample", "--num-samples", "4", "--out", str(out))
    assert run.returncode == 0, run.stderr
    assert run.stdout.splitlines()[-1] == "[]" and run.stderr == ""
    assert bodies == [{"signature_name": "sample", "inputs": {"num_samples": 4, "seed": 0}}]
    assert out.exists() and not list(tmp_path.glob(".*tmp*"))


@pytest.mark.parametrize("args, message", [
    (["sample", "--num-samples", "0"], r"num_samples=0 is out of bounds: give an integer in \[1, 2147483647\]"),
    (["sample", "--seed", str(2**31)], "seed=2147483648 is out of bounds"),
    (["sample-component", "--component", "-1"], "component=-1 is out of bounds"),
    (["sample", "--columns", "0"], "--columns 0"),
])
def test_out_of_bounds_requests_are_refused_before_sending(tmp_path, capsys, monkeypatch, args, message):
    def no_request(*args, **kwargs):
        raise AssertionError("the request was sent")

    monkeypatch.setattr(client, "rest_predict", no_request)
    status = client.main(["--url", "http://127.0.0.1:9", "--model", "m", *args, "--out", str(tmp_path / "g.png")])
    err = capsys.readouterr().err
    assert status == interface.RequestError.exit_code == 2
    assert err.startswith("error: ") and err.count("\n") == 1
    assert re.search(message, err), err
    assert not (tmp_path / "g.png").exists()
