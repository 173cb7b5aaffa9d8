"""The guards that stop a run gone bad (NaN, or divergence that stays finite) with exit code 1 and a message
naming the checkpoint that really holds the last healthy weights."""

import json

import keras
import numpy as np
import pytest

from layers.errors import UserError
from tests.test_fit import digits_config
from training import callbacks as cb, config as config_lib, fit


class _StubModel:
    """What the guards read of a model: its trainable weights (NumPy here)."""

    def __init__(self, scale=1.0):
        self.trainable_weights = [np.full((3, 4), scale, np.float32), np.zeros(4, np.float32)]


def _guard(guard, model):
    guard.set_model(model)
    guard.on_train_begin()
    return guard


def _write_checkpoint_state(run_dir, epoch, folder="checkpoint"):
    (run_dir / folder).mkdir(parents=True)
    (run_dir / folder / "state.json").write_text(json.dumps({"epoch": epoch}))


def test_both_guards_raise_user_errors_that_stop_the_run_with_exit_code_1():
    for error in (cb.NonFiniteLossError, cb.DivergenceError):
        assert issubclass(error, cb.TrainingStoppedError) and issubclass(error, UserError)
        assert error("x").exit_code == 1
    assert issubclass(cb.NonFiniteLossError, FloatingPointError)  # as before, for callers catching that


def test_nan_message_says_no_checkpoint_yet(tmp_path):
    for guard in (cb.NonFiniteGuard(), cb.NonFiniteGuard(tmp_path)):
        expected = r"epoch 3: non-finite .*no checkpoint yet.*learning_rate"
        with pytest.raises(cb.NonFiniteLossError, match=expected) as info:
            guard.on_epoch_end(2, {"loss": 1.0, "val_loss": float("nan")})
        assert "previous epoch" not in str(info.value) and "\n" not in str(info.value)


def test_nan_message_names_the_epoch_of_the_checkpoint_on_disk(tmp_path):
    """checkpoint_every=10: at epoch 17 the checkpoint holds epoch 10, not the previous epoch."""
    _write_checkpoint_state(tmp_path, 10)
    (tmp_path / "best.weights.h5").write_bytes(b"")
    with pytest.raises(cb.NonFiniteLossError, match="epoch 17: non-finite") as info:
        cb.NonFiniteGuard(tmp_path).on_epoch_end(16, {"loss": float("inf")})
    message = str(info.value)
    assert f"checkpoint {tmp_path / 'checkpoint'} of epoch 10" in message
    assert str(tmp_path / "best.weights.h5") in message


def test_nan_message_reads_the_old_copy_an_interrupted_checkpoint_write_left(tmp_path):
    _write_checkpoint_state(tmp_path, 4, folder="checkpoint.old")
    with pytest.raises(cb.NonFiniteLossError, match="checkpoint.old of epoch 4"):
        cb.NonFiniteGuard(tmp_path).on_epoch_end(5, {"val_loss": float("nan")})


def test_divergence_rule_ignores_warmup_and_noise_and_fires_on_orders_of_magnitude():
    guard = _guard(cb.DivergenceGuard(), _StubModel())
    # KL warm-up raises the loss for a while; continuous data can have negative losses near zero
    for epoch, loss in enumerate([120.0, 60.0, 75.0, 95.0, 110.0, 90.0, 900.0]):
        guard.on_epoch_end(epoch, {"loss": loss, "val_loss": loss + 5})
    expected = r"epoch 9: training diverged \(val_loss 1\.2e\+05 against its best 65"
    with pytest.raises(cb.DivergenceError, match=expected):
        guard.on_epoch_end(8, {"loss": 100.0, "val_loss": 1.2e5})

    negative = _guard(cb.DivergenceGuard(), _StubModel())
    for epoch, loss in enumerate([-10.0, -800.0, -300.0, 400.0, 10_000.0]):  # below -800 + 100 * 800
        negative.on_epoch_end(epoch, {"loss": loss})
    with pytest.raises(cb.DivergenceError, match="loss 1e\\+06"):
        negative.on_epoch_end(5, {"loss": 1e6})

    quiet = _guard(cb.DivergenceGuard(), _StubModel())
    quiet.on_epoch_end(0, {"loss": 0.5, "val_loss": float("nan")})  # non-finite: NonFiniteGuard's business
    quiet.on_epoch_end(1, {"loss": 900.0})  # within the floor of 1e3 nats above a best near zero


def test_divergence_rule_on_the_weight_norm_catches_a_first_epoch_blow_up(tmp_path):
    model = _StubModel()
    guard = _guard(cb.DivergenceGuard(tmp_path), model)
    model.trainable_weights = _StubModel(scale=50.0).trainable_weights  # 50x: training, not divergence
    guard.on_epoch_end(0, {"loss": 1e30})
    model.trainable_weights = _StubModel(scale=5e3).trainable_weights
    with pytest.raises(cb.DivergenceError, match=r"epoch 2: training diverged \(weight norm .*no checkpoint yet"):
        guard.on_epoch_end(1, {"loss": 1e30})


class _LearningRateJump(keras.callbacks.Callback):
    """Sets the learning rate to `value` from epoch index `epoch` on: a run that diverges mid-way."""

    def __init__(self, epoch, value):
        super().__init__()
        self.epoch, self.value = epoch, value

    def on_epoch_begin(self, epoch, logs=None):
        if epoch == self.epoch:
            self.model.optimizer.learning_rate.assign(self.value)


def test_a_run_that_diverges_stops_and_names_the_checkpoint_that_holds_healthy_weights(tmp_path):
    config = digits_config(epochs=4, checkpoint_every=2)
    with pytest.raises(cb.DivergenceError, match="epoch 3: training diverged") as info:
        fit.train(config, tmp_path, run_evaluation=False, extra_callbacks=[_LearningRateJump(2, 1e3)])
    assert f"checkpoint {tmp_path / 'checkpoint'} of epoch 2" in str(info.value)
    assert json.loads((tmp_path / "checkpoint" / "state.json").read_text())["epoch"] == 2
    assert not (tmp_path / "model.weights.h5").exists()


def test_normal_training_with_kl_warmup_never_trips_the_guards(tmp_path):
    model, _ = fit.train(digits_config(epochs=3, warmup_epochs=3), tmp_path, run_evaluation=False)
    assert json.loads((tmp_path / "checkpoint" / "state.json").read_text())["epoch"] == 3
    assert (tmp_path / "model.weights.h5").exists()


def test_cli_with_a_huge_learning_rate_raises_instead_of_ending_with_status_0(tmp_path):
    """learning_rate=1e3 keeps the loss finite (about 1e29 on the digits) but blows the weights up within
    the first epoch; `cli.run` prints the error as one line and exits with its exit_code 1."""
    config_path = tmp_path / "c.yaml"
    config_lib.save(digits_config(epochs=3), config_path)
    expected = r"epoch 1: training diverged \(weight norm .*no checkpoint yet"
    with pytest.raises(cb.DivergenceError, match=expected) as info:
        fit.main([str(config_path), "--run-dir", str(tmp_path / "run"), "--set", "train.learning_rate=1e3"])
    assert info.value.exit_code == 1
    assert not (tmp_path / "run" / "metrics.json").exists()
