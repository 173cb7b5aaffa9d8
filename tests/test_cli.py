"""The command-line tools on bad input: one line naming the problem and the fix, exit 2, nothing written.

Most checks run before Keras is imported, so these subprocesses take a fraction of a second; one test
goes through the import to check the start-up is quiet and late errors are one line too.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from training import config as config_lib, config_check

ROOT = Path(__file__).resolve().parents[1]


def _cli(*args, module="training.fit", env=None, cwd=ROOT):
    completed = subprocess.run([sys.executable, "-m", module, *map(str, args)], cwd=cwd, capture_output=True,
                               text=True, timeout=600, env={**os.environ, **(env or {})})
    return completed.returncode, completed.stdout, completed.stderr


def _one_line_error(stderr):
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr
    assert "Traceback" not in stderr
    return lines[0]


def _fake_run(tmp_path):
    """A run directory as training.fit leaves it, as far as the checks before the imports look."""
    run = tmp_path / "run"
    (run / "checkpoint").mkdir(parents=True)
    config = config_lib.to_dict(config_lib.load(ROOT / "zoo" / "quickstart.yaml"))
    (run / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return run


def test_the_schema_snapshot_is_current_and_equals_the_live_schema():
    assert config_check.cached_schema() is not None, "run: python -m training.schema --snapshot"
    assert config_check.cached_schema() == json.loads(json.dumps(config_lib.schema()))


def test_config_checks_do_not_import_keras():
    code = ("import sys; from training import config_check, cli, fit; "
            "config_check.precheck('zoo/quickstart.yaml', ['train.epochs=3']); "
            "assert not {'keras', 'tensorflow', 'jax', 'torch'} & set(sys.modules), sorted(sys.modules)")
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, timeout=120)


@pytest.mark.parametrize("overrides, message", [
    (["train.epohs=3"], "unknown config key 'train.epohs'; did you mean 'train.epochs'"),
    (["seed=-1"], "seed: must be >= 0, got -1"),
    (["data.image_size=[0, 0]"], r"data.image_size[0]: must be >= 1, got 0"),
    (["data.image_size=[28, -4]"], r"data.image_size[1]: must be >= 1, got -4"),
    (["data.validation_size=0"], "data.validation_size: must be >= 1, got 0"),
    (["train.epochs=[1"], "--set 'train.epochs=[1': the value is not valid YAML"),
    (["train.epochs"], "expected KEY=VALUE"),
    (["model.prior.learn_weights=true"], "model.prior.learn_weights is an option of mog, not of prior 'vampprior'"),
])
def test_bad_overrides_fail_at_once_with_one_line(tmp_path, overrides, message):
    rc, _, stderr = _cli("zoo/quickstart.yaml", "--run-dir", tmp_path / "run",
                         *[a for o in overrides for a in ("--set", o)])
    assert rc == 2
    assert message in _one_line_error(stderr)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("content, message", [
    ("name: a\nname: b\n", "key 'name' appears twice (lines 1 and 2)"),
    ("", "is empty; a config needs at least one key"),
    ("train: {epochs: 3\n", "not valid YAML"),
    (b"\x7fELF\x02\x01\x01\x00\xff\xfe", "is not a text file"),
    ("- a\n- b\n", "expected a mapping of keys to values at the top"),
])
def test_bad_config_files_are_named(tmp_path, content, message):
    path = tmp_path / "config.yaml"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    rc, _, stderr = _cli(path)
    line = _one_line_error(stderr)
    assert rc == 2 and message in line and str(path) in line


def test_a_directory_or_missing_file_as_config(tmp_path):
    rc, _, stderr = _cli(tmp_path)
    assert rc == 2 and "is a directory, not a config file" in _one_line_error(stderr)
    rc, _, stderr = _cli(tmp_path / "nope.yaml")
    assert rc == 2 and "config file not found" in _one_line_error(stderr)


def test_run_dir_that_is_a_file(tmp_path):
    target = tmp_path / "file"
    target.write_text("x")
    rc, _, stderr = _cli("zoo/quickstart.yaml", "--run-dir", target)
    assert rc == 2 and f"--run-dir {target} is a file" in _one_line_error(stderr)


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_run_dir_in_a_read_only_folder(tmp_path):
    tmp_path.chmod(0o555)
    try:
        rc, _, stderr = _cli("zoo/quickstart.yaml", "--run-dir", tmp_path / "run")
    finally:
        tmp_path.chmod(0o755)
    assert rc == 2 and "is not writable" in _one_line_error(stderr)


def test_a_refused_resume_leaves_the_run_as_it_was(tmp_path):
    run = _fake_run(tmp_path)
    before = (run / "config.yaml").read_bytes()
    rc, _, stderr = _cli("--resume", run, "--set", "model.latent_dim=5")
    line = _one_line_error(stderr)
    assert rc == 2 and "--resume cannot change model.latent_dim" in line and "train.epochs" in line
    rc, _, stderr = _cli("--resume", run, "--set", "model.prior=standard_normal")
    assert rc == 2 and "model.prior.name" in _one_line_error(stderr)
    rc, _, stderr = _cli("--resume", run, "--set", "train.learning_rate=0.1")
    assert rc == 2 and "train.learning_rate" in _one_line_error(stderr)
    assert (run / "config.yaml").read_bytes() == before


def test_resume_refuses_a_config_file_and_a_run_dir(tmp_path):
    run = _fake_run(tmp_path)
    rc, _, stderr = _cli("zoo/quickstart.yaml", "--resume", run)
    assert rc == 2 and "not both: a resumed run keeps its own config.yaml" in stderr
    rc, _, stderr = _cli("--resume", run, "--run-dir", tmp_path / "other")
    assert rc == 2 and "--run-dir does not apply to --resume" in stderr


def test_resume_of_something_that_is_not_a_run(tmp_path):
    rc, _, stderr = _cli("--resume", tmp_path / "missing")
    assert rc == 2 and "no such run directory" in _one_line_error(stderr)
    rc, _, stderr = _cli("--resume", tmp_path)
    assert rc == 2 and "no config.yaml there" in _one_line_error(stderr)
    run = _fake_run(tmp_path)
    (run / "checkpoint").rmdir()
    rc, _, stderr = _cli("--resume", run)
    assert rc == 2 and "no checkpoint/ to resume from" in _one_line_error(stderr)


def test_allowed_resume_overrides_pass_the_check(tmp_path):
    run = _fake_run(tmp_path)
    raw = config_check.resume_overrides(run / "config.yaml", ["train.epochs=7", "evaluate.num_samples=10"])
    assert raw["train"]["epochs"] == 7 and raw["evaluate"]["num_samples"] == 10


def test_an_error_after_the_imports_is_one_line_and_the_start_is_quiet(tmp_path):
    """A cross-section check needs the registered classes (after the import); TensorFlow's C++ start-up
    lines do not reach the terminal; --debug shows the traceback."""
    args = ("zoo/quickstart.yaml", "--run-dir", tmp_path / "run", "--set", "train.procedure=svi",
            "--set", "model.architecture=hvae")
    rc, _, stderr = _cli(*args)
    assert rc == 2 and "refines a single Gaussian" in _one_line_error(stderr)
    for noise in ("cuInit", "cudart_stub", "absl::InitializeLog", "cpu_feature_guard"):
        assert noise not in stderr
    rc, _, stderr = _cli(*args, "--debug")
    assert rc == 1 and "Traceback" in stderr and "ConfigError" in stderr
