"""A run directory survives what real runs meet: a resume after a kill between checkpoints (history.csv
keeps one row per epoch), a full disk (one-line error, previous checkpoint intact), a second process on the
same directory (refused, naming the holder), damaged checkpoint or weights files (named, with their
fallback) and leftovers of interrupted writes; and, end to end, SIGKILLs at random write steps of
`python -m training.fit` followed by `--resume` end exactly where an uninterrupted run ends."""

import errno
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import h5py
import keras
import numpy as np
import pytest

from tests.test_fit import digits_config, history
from training import checkpoints, config as config_lib, fit, run_lock
from zoo import atomic

ROOT = Path(__file__).resolve().parents[1]
E = re.escape


class Interrupted(Exception):
    """What a kill looks like to the in-process tests."""


class InterruptAt(keras.callbacks.Callback):
    """Stop training as a kill would, at the start of epoch `epoch` (0-based): the epochs before it have their
    history rows, the last checkpoint may be older."""

    def __init__(self, epoch):
        super().__init__()
        self.epoch = epoch

    def on_epoch_begin(self, epoch, logs=None):
        if epoch == self.epoch:
            raise Interrupted(f"interrupted at epoch {epoch}")


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """An uninterrupted 4-epoch run (checkpoints every 2 epochs) and its model: the reference, and the files
    the damage tests copy."""
    run_dir = tmp_path_factory.mktemp("finished")
    model, _ = fit.train(digits_config(epochs=4, checkpoint_every=2), run_dir, run_evaluation=False)
    return run_dir, model


@pytest.fixture
def run_copy(finished, tmp_path):
    shutil.copytree(finished[0], tmp_path / "run", ignore=shutil.ignore_patterns(".lock"))
    return tmp_path / "run"


def _h5_arrays(path):
    arrays = {}
    with h5py.File(path, "r") as f:
        f.visititems(lambda name, item: arrays.__setitem__(name, item[()]) if isinstance(item, h5py.Dataset) else None)
    return arrays


def assert_same_weights(path_a, path_b):
    a, b = _h5_arrays(path_a), _h5_arrays(path_b)
    assert a.keys() == b.keys()
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)


def assert_same_history(run_a, run_b):
    """One row per epoch, equal to the last digit (resume is exact)."""
    rows_a, rows_b = history(run_a), history(run_b)
    assert [r["epoch"] for r in rows_b] == [str(e) for e in range(1, len(rows_a) + 1)]
    assert rows_a == rows_b


# 1. history.csv after a resume

def test_resume_after_a_kill_between_checkpoints_writes_each_epoch_once(finished, tmp_path):
    """Killed at the start of epoch 4 (rows 1-3 written, checkpoint at epoch 2), resumed: 4 rows, the same
    as the uninterrupted run's (the resume is exact, so the losses are equal to the last digit)."""
    run_dir = tmp_path / "run"
    with pytest.raises(Interrupted):
        fit.train(digits_config(epochs=4, checkpoint_every=2), run_dir, run_evaluation=False,
                  extra_callbacks=[InterruptAt(3)])
    assert json.loads((run_dir / "checkpoint" / "state.json").read_text())["epoch"] == 2
    assert [r["epoch"] for r in history(run_dir)] == ["1", "2", "3"]
    fit.train(digits_config(epochs=4, checkpoint_every=2), run_dir, resume=True, run_evaluation=False)
    assert_same_history(finished[0], run_dir)
    assert_same_weights(finished[0] / "model.weights.h5", run_dir / "model.weights.h5")


def test_rewind_history_keeps_the_header_and_the_checkpointed_epochs(tmp_path):
    path = tmp_path / "history.csv"
    # epoch 1 twice (as older versions left it), the last row cut by a kill
    path.write_text('epoch,loss,w\n1,3.0,"[1, 2]"\n2,2.0,"[1, 2]"\n3,1.0,x\n2,2.5,y\n4,0.5')
    assert checkpoints.rewind_history(path, 2) == 3
    assert path.read_text() == 'epoch,loss,w\n1,3.0,"[1, 2]"\n2,2.5,y\n'
    assert checkpoints.rewind_history(path, 2) == 0
    assert checkpoints.rewind_history(tmp_path / "missing.csv", 2) == 0


# 2. a full disk

def _disk_with(free):
    return lambda path: SimpleNamespace(total=10**12, used=10**12 - free, free=free)


def test_a_full_disk_stops_before_writing_and_keeps_the_checkpoint(finished, run_copy, monkeypatch):
    _, model = finished
    folder = run_copy / "checkpoint"
    monkeypatch.setattr(shutil, "disk_usage", _disk_with(4096))
    with pytest.raises(atomic.DiskFullError, match=rf"^not enough disk space to write {E(str(folder))}: needs about "
                                                   r"[\d.]+ MiB, 0.0 MiB free") as error:
        checkpoints.save(model, folder, {"epoch": 99})
    assert error.value.exit_code == 1 and "\n" not in str(error.value)
    with pytest.raises(atomic.DiskFullError, match=E(f"write {run_copy / 'best.weights.h5'}")):
        checkpoints.save_weights(model, run_copy / "best.weights.h5")
    monkeypatch.undo()
    assert checkpoints.restore(model, folder)["epoch"] == 4
    checkpoints.load_weights(model, run_copy / "best.weights.h5")
    assert not list(run_copy.glob(".*tmp*"))


def test_no_space_left_during_a_write_is_a_one_line_error_and_keeps_the_checkpoint(finished, run_copy, monkeypatch):
    _, model = finished
    folder = run_copy / "checkpoint"

    def no_space(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(checkpoints.np, "savez", no_space)
    with pytest.raises(atomic.DiskFullError, match=f"^no space left on the device while writing {E(str(folder))} "):
        checkpoints.save(model, folder, {"epoch": 99})
    monkeypatch.undo()
    assert checkpoints.restore(model, folder)["epoch"] == 4
    with pytest.raises(atomic.DiskFullError, match="history.csv"):
        with atomic.write_file(run_copy / "history.csv") as tmp:
            tmp.write_text("half")
            no_space()
    assert history(run_copy) == history(finished[0])
    assert not list(run_copy.glob(".*tmp*"))


# 3. one process per run directory

def test_a_second_process_cannot_use_a_run_directory_while_the_first_holds_it(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys; from training import run_lock\n"
                               "with run_lock.hold(sys.argv[1]):\n    print('held', flush=True); sys.stdin.read()",
         str(run_dir)], cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "held\n"
        started = time.monotonic()
        with pytest.raises(run_lock.RunLockedError, match="^" + E(f"{run_dir} is in use by another run (process "
                                                                     f"{holder.pid} holds {run_dir / '.lock'})")):
            fit.train(digits_config(epochs=1), run_dir, run_evaluation=False)
        assert time.monotonic() - started < 5
        assert not (run_dir / "config.yaml").exists()  # refused before writing anything
    finally:
        holder.kill()  # as `kill -9` would: the kernel releases the lock
        holder.wait()
    with run_lock.hold(run_dir):
        assert (run_dir / ".lock").read_text() == f"{os.getpid()}\n"


# 4. damaged files, leftovers

@pytest.mark.parametrize("name", ["model.weights.h5", "state.npz", "state.json"])
def test_a_truncated_checkpoint_file_is_named_with_its_fallback(finished, run_copy, name):
    _, model = finished
    path = run_copy / "checkpoint" / name
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(checkpoints.DamagedFileError, match=rf"^{E(str(path))} is damaged \(its SHA-256 .*there is no "
                                                           rf"fallback \(no {E(str(run_copy / 'checkpoint.old'))}\)"):
        checkpoints.restore(model, run_copy / "checkpoint")
    (run_copy / "checkpoint" / checkpoints.SUMS).unlink()  # a checkpoint from before checksums: h5py/NumPy notice
    with pytest.raises(checkpoints.DamagedFileError, match=rf"^{E(str(path))} is damaged \(cannot be read: "):
        checkpoints.restore(model, run_copy / "checkpoint")


def test_overwritten_weights_are_caught_and_the_previous_checkpoint_is_offered(finished, run_copy):
    _, model = finished
    shutil.copytree(run_copy / "checkpoint", run_copy / "checkpoint.old")  # as a crash mid-swap leaves it
    path = run_copy / "checkpoint" / "model.weights.h5"
    with h5py.File(path, "r+") as f:  # a valid file with other numbers: loads silently without a checksum
        f.visititems(lambda _, item: item.__setitem__(..., 3.4e38)
                     if isinstance(item, h5py.Dataset) and item.dtype.kind == "f" else None)
    with pytest.raises(checkpoints.DamagedFileError, match=rf"^{E(str(path))} is damaged .*the previous checkpoint "
                                                           rf"{E(str(run_copy / 'checkpoint.old'))} is there: move"):
        checkpoints.restore(model, run_copy / "checkpoint")


def test_damaged_run_weights_are_named_with_their_fallback(finished, run_copy):
    _, model = finished
    final, best = run_copy / "model.weights.h5", run_copy / "best.weights.h5"
    final.write_bytes(final.read_bytes()[:1000])
    with pytest.raises(checkpoints.DamagedFileError, match=rf"^{E(str(final))} is damaged .*fall back to {E(str(best))}$"):
        checkpoints.load_run_model(run_copy)
    final.unlink()
    (run_copy / "model.weights.h5.sha256").unlink()
    best.write_bytes(best.read_bytes()[:-10])
    with pytest.raises(checkpoints.DamagedFileError, match=rf"^{E(str(best))} is damaged .*fall back to {E(str(run_copy / 'checkpoint'))}"):
        checkpoints.load_run_model(run_copy)


def test_checkpoints_without_checksums_still_load(finished, run_copy):
    _, model = finished
    for sums in [run_copy / "checkpoint" / checkpoints.SUMS, *run_copy.glob("*.sha256")]:
        sums.unlink()
    assert checkpoints.restore(model, run_copy / "checkpoint")["epoch"] == 4
    checkpoints.load_run_model(run_copy)


def test_a_crash_between_the_weights_and_their_checksum_never_looks_like_damage(finished, tmp_path, monkeypatch):
    """A crash before any of the three renames of `save_weights` (the sidecar that accepts the old and the new
    digest, the weights, the final sidecar) leaves a file that matches its sidecar."""
    _, model = finished
    path = tmp_path / "best.weights.h5"
    checkpoints.save_weights(model, path)
    weights = model.get_weights()
    model.set_weights([w + 1 for w in weights])
    for step in (1, 2, 3):
        calls = iter(range(1, 10))
        monkeypatch.setattr(atomic, "crash_point", lambda: _raise_at(step, next(calls)))
        with pytest.raises(Interrupted):
            checkpoints.save_weights(model, path)
        monkeypatch.undo()
        checkpoints.load_weights(model, path)
        model.set_weights([w + 1 for w in weights])
    model.set_weights(weights)


def _raise_at(step, call):
    if call == step:
        raise Interrupted(f"step {step}")


def test_a_checkpoint_swap_interrupted_at_any_step_leaves_a_complete_checkpoint(tmp_path, monkeypatch):
    """Also when the next write starts from the `.old` copy that an interrupted swap left (resume from it)."""
    folder = tmp_path / "checkpoint"

    def write(version, crash_at=None):
        calls = iter(range(1, 10))
        monkeypatch.setattr(atomic, "crash_point", lambda: crash_at and _raise_at(crash_at, next(calls)))
        try:
            with atomic.write_dir(folder) as tmp:
                (tmp / "a").write_text(version)
                (tmp / "b").write_text(version)
        except Interrupted:
            pass
        resolved = atomic.resolve_dir(folder)
        return (resolved / "a").read_text() + (resolved / "b").read_text()

    old = folder.with_name("checkpoint.old")
    write("1")
    assert write("2", crash_at=2) == "11" and not folder.exists()  # renamed aside, the new one not yet in place
    assert write("3", crash_at=1) == "11"
    assert write("4", crash_at=2) == "44" and old.exists()  # from .old: it goes only once the new one is in place
    assert write("5", crash_at=2) == "44" and not folder.exists()
    assert write("6", crash_at=2) == "66" and old.exists()
    assert write("7", crash_at=3) == "77" and old.exists()  # both complete: the stale .old is removed next time
    assert write("8") == "88" and not old.exists()


def test_leftovers_of_dead_writers_are_removed_at_resume(run_copy, capsys):
    dead = 2**22 + 12345  # above Linux's largest PID: no such process
    leftovers = [f".checkpoint.tmp-{dead}-k2x9", f".best.weights.tmp-{dead}.weights.h5", ".config.json.a8z1.tmp"]
    (run_copy / leftovers[0]).mkdir()
    (run_copy / leftovers[0] / "state.npz").write_bytes(b"half")
    for name in leftovers[1:]:
        (run_copy / name).write_text("half")
    alive = run_copy / f".metrics.json.tmp-{os.getpid()}-q1"  # a live writer's (an evaluation running now)
    alive.write_text("busy")
    fit.train(digits_config(epochs=4, checkpoint_every=2), run_copy, resume=True, run_evaluation=False)
    assert f"removed what interrupted writes left in {run_copy}: {', '.join(sorted(leftovers))}\n" in capsys.readouterr().out
    assert not any((run_copy / name).exists() for name in leftovers) and alive.exists()


# 5. fault injection end to end

def _fit(*args, crash_at=None, kill_after=None):
    """`python -m training.fit ARGS` with SIGKILL at write step `crash_at` (VAE_ZOO_CRASH_AT) or after
    `kill_after` seconds; returns the exit code (-9 when killed) and the output."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    env.pop(atomic.CRASH_ENV, None)
    if crash_at is not None:
        env[atomic.CRASH_ENV] = str(crash_at)
    process = subprocess.Popen([sys.executable, "-m", "training.fit", *map(str, args), "--no-evaluate"], cwd=ROOT,
                               env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        output, _ = process.communicate(timeout=kill_after)
    except subprocess.TimeoutExpired:
        process.send_signal(signal.SIGKILL)
        output, _ = process.communicate()
    assert process.returncode in (0, -signal.SIGKILL), output
    return process.returncode, output


def _kill_and_resume(tmp_path, epochs, kills, seed):
    """An uninterrupted run, then the same run killed at each of `kills` and continued each time as a user
    would (`--resume`, or the config again if it died before its first checkpoint). A kill is ("step", LO, HI):
    at a write step drawn from LO..HI by the seeded RNG (2 config writes, then per epoch 3 for the best weights
    and their sidecar, 2-3 for the checkpoint swap), or ("time", LO, HI): after a drawn number of seconds.
    The final weights, history and checkpoint state must be identical to the uninterrupted run's.
    Returns (exit code, leftover temporary files) of each killed launch and the last launch's output."""
    config_path = tmp_path / "config.yaml"
    config_lib.save(digits_config(epochs=epochs, checkpoint_every=1, sets=["model.hidden_units=16"]), config_path)
    reference, run_dir = tmp_path / "reference", tmp_path / "killed"
    fit.train(config_lib.load(config_path), reference, run_evaluation=False)  # in this process: one launch less

    def start():
        resumable = any((run_dir / name).exists() for name in ("checkpoint", "checkpoint.old"))
        return ["--resume", run_dir] if resumable else [config_path, "--run-dir", run_dir]

    rng = random.Random(seed)
    killed = []
    for kind, low, high in kills:
        if kind == "step":
            code, _ = _fit(*start(), crash_at=rng.randint(low, high))
        else:
            code, _ = _fit(*start(), kill_after=rng.uniform(low, high))
        killed.append((code, sorted(p.name for p in run_dir.glob(".*tmp*"))))
    code, output = _fit(*start())
    assert code == 0
    assert_same_weights(reference / "model.weights.h5", run_dir / "model.weights.h5")
    assert_same_weights(reference / "best.weights.h5", run_dir / "best.weights.h5")
    assert_same_history(reference, run_dir)
    assert (json.loads((reference / "checkpoint" / "state.json").read_text())
            == json.loads((run_dir / "checkpoint" / "state.json").read_text()))
    assert not list(run_dir.glob(".*tmp*")) and not (run_dir / "checkpoint.old").exists()
    return killed, output


@pytest.mark.skipif(keras.backend.backend() != "tensorflow",
                    reason="the write steps are backend-independent (zoo/atomic.py); budget: TensorFlow only, while "
                           "tests/test_fit.py checks resume exactness on every backend")
def test_a_kill_at_a_random_write_step_then_resume_ends_like_an_uninterrupted_run(tmp_path):
    """Two launches of the command (10-30 s each, mostly TensorFlow's import and compilation): a 2-epoch run
    killed inside its second checkpoint swap (step 12: the old checkpoint renamed to checkpoint.old, the new
    one complete in its temporary folder), then the resume from checkpoint.old. The slow test below kills
    resumed runs too, at random steps and times."""
    killed, output = _kill_and_resume(tmp_path, epochs=2, kills=[("step", 7, 13)], seed=19)
    assert killed == [(-signal.SIGKILL, [name for name in killed[0][1] if name.startswith(".checkpoint.tmp-")])]
    assert killed[0][1] and "removed what interrupted writes left in" in output
    assert "resumed at epoch 1" in output and "history.csv: removed 1 rows" in output


@pytest.mark.slow  # nine launches of python -m training.fit: ~2-3 min
def test_many_kills_at_random_steps_and_times_then_resume_end_like_an_uninterrupted_run(tmp_path):
    step, timed = ("step", 3, 36), ("time", 8, 20)
    _kill_and_resume(tmp_path, epochs=6, kills=[step, timed, step, step, timed, step, step, timed], seed=7)


def test_atomic_writes_follow_the_umask(tmp_path):
    """config.yaml and metrics.json used to be 0600 (mkstemp's mode) beside 0644 files: run folders are shared."""
    old = os.umask(0o022)
    try:
        atomic.write_text(tmp_path / "config.yaml", "a: 1\n")
        with atomic.write_dir(tmp_path / "checkpoint") as folder:
            (folder / "x").write_text("x")
        (tmp_path / "plain").write_text("x")
    finally:
        os.umask(old)
    assert (tmp_path / "config.yaml").stat().st_mode & 0o777 == (tmp_path / "plain").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "checkpoint").stat().st_mode & 0o777 == 0o755
