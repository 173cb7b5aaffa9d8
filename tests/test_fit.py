"""End-to-end training on the embedded digits: every architecture learns, runs resume exactly, and the
papers' training protocol (warm-up, early stopping, NaN guard) behaves as specified."""

import csv
import json
import math

import keras
import numpy as np
import pytest
from keras import ops

from layers.priors import PRIORS
from training import callbacks as cb, checkpoints, config as config_lib, fit


def digits_config(architecture="vae", prior="vampprior", epochs=3, sets=(), **train):
    """A small validated run config on the digits; `sets` are `--set KEY=VALUE` overrides."""
    components = {"components": 10} if prior in PRIORS.owners("components") else {}
    return config_lib.from_dict(config_lib.apply_overrides({
        "name": "test", "seed": 1,
        "data": {"name": "digits"},
        "model": {"architecture": architecture, "latent_dim": 4, "hidden_units": 32,
                  "prior": {"name": prior, **components}},
        "train": {"epochs": epochs, "warmup_epochs": 2, "early_stopping_patience": 5, "eval_batch_size": 250,
                  "verbose": "0", "learning_rate": 2e-3, **train},
        "evaluate": {"num_samples": 50},
    }, list(sets)))


def history(run_dir):
    with open(run_dir / "history.csv") as f:
        return list(csv.DictReader(f))


@pytest.mark.parametrize("architecture,prior", [("vae", "vampprior"), ("hvae", "mog"), ("conv_hvae", "standard_normal")])
def test_short_training_lowers_the_loss_and_writes_a_complete_run(tmp_path, architecture, prior):
    # ConvHVAE's gated convolutions at full resolution on 4x4 digits: the same run in a fraction of the time
    # (compiling its 8x8 train step costs about a minute on JAX)
    sets = ["data.image_size=[4, 4]"] if architecture == "conv_hvae" else []
    config = digits_config(architecture, prior, epochs=4, sets=sets, checkpoint_every=3)
    model, metrics = fit.train(config, tmp_path)
    # checkpoints at epoch 3 and, because training ended, at epoch 4
    assert json.loads((tmp_path / "checkpoint" / "state.json").read_text())["epoch"] == 4
    rows = history(tmp_path)
    assert len(rows) == 4
    assert float(rows[-1]["val_loss"]) < float(rows[0]["val_loss"]) - 1.0
    assert [round(float(r["kl_weight"]), 3) for r in rows] == [0.5, 1.0, 1.0, 1.0]  # warm-up of 2 epochs
    for name in ("model.weights.h5", "best.weights.h5", "metrics.json", "samples.png", "reconstructions.png",
                 "checkpoint/model.weights.h5", "checkpoint/state.npz", "checkpoint/state.json"):
        assert (tmp_path / name).exists(), name
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["nll"] == metrics["nll"] and saved["num_examples"] == 250
    # the importance-sampled bound is tighter than the single-sample ELBO (up to Monte-Carlo noise)
    assert metrics["nll"] < metrics["negative_elbo"] + 0.5
    assert math.isclose(metrics["negative_elbo"], metrics["reconstruction"] + metrics["kl"], rel_tol=1e-5)


def test_resume_continues_exactly(tmp_path):
    """4 epochs in one go == 2 epochs, stop, resume to 4: same weights, optimizer state and history."""
    straight, split = tmp_path / "straight", tmp_path / "split"
    model_a, _ = fit.train(digits_config(epochs=4), straight, run_evaluation=False)
    fit.train(digits_config(epochs=2), split, run_evaluation=False)
    state = json.loads((split / "checkpoint" / "state.json").read_text())
    assert state["epoch"] == 2
    model_b, _ = fit.train(digits_config(epochs=4), split, resume=True, run_evaluation=False)
    rows_a, rows_b = history(straight), history(split)
    assert [r["epoch"] for r in rows_b] == ["1", "2", "3", "4"]
    for ra, rb in zip(rows_a, rows_b):
        np.testing.assert_allclose(float(ra["val_loss"]), float(rb["val_loss"]), rtol=1e-5)
    for wa, wb in zip(model_a.weights, model_b.weights):
        np.testing.assert_allclose(ops.convert_to_numpy(wa), ops.convert_to_numpy(wb), rtol=1e-5, atol=1e-6)
    for va, vb in zip(model_a.optimizer.variables, model_b.optimizer.variables):
        np.testing.assert_allclose(ops.convert_to_numpy(va), ops.convert_to_numpy(vb), rtol=1e-5, atol=1e-7)
    final_a = json.loads((straight / "checkpoint" / "state.json").read_text())
    final_b = json.loads((split / "checkpoint" / "state.json").read_text())
    assert final_a == final_b


def test_steps_per_execution_changes_speed_not_training(tmp_path):
    """Steps run in one graph loop (the TensorFlow default) train exactly as steps run one call each."""
    model_a, _ = fit.train(digits_config(epochs=2, steps_per_execution=1), tmp_path / "one", run_evaluation=False)
    model_b, _ = fit.train(digits_config(epochs=2, steps_per_execution=4), tmp_path / "loop", run_evaluation=False)
    expected = 4 if keras.backend.backend() == "tensorflow" else 1
    assert fit._steps_per_execution(digits_config(steps_per_execution=4).train, 13) == expected
    assert fit._steps_per_execution(digits_config(steps_per_execution=100).train, 13) == min(13, 100 if expected > 1 else 1)
    for wa, wb in zip(model_a.weights, model_b.weights):
        np.testing.assert_allclose(ops.convert_to_numpy(wa), ops.convert_to_numpy(wb), rtol=1e-5, atol=1e-6)
    for ra, rb in zip(history(tmp_path / "one"), history(tmp_path / "loop")):
        np.testing.assert_allclose(float(ra["val_loss"]), float(rb["val_loss"]), rtol=1e-5)


def test_early_stopping_follows_the_papers_rule():
    """Best tracked from epoch 1; no counting during warm-up; stop after more than `patience` bad epochs."""
    class Stub:
        stop_training = False

    rule = cb.PaperEarlyStopping(patience=2, warmup_epochs=3)
    rule.set_model(Stub())
    stopped_at = None
    for epoch, loss in enumerate([10.0, 11.0, 12.0, 9.0, 9.5, 9.6, 9.7, 9.8]):
        rule.on_epoch_end(epoch, {"val_loss": loss})
        if rule.model.stop_training and stopped_at is None:
            stopped_at = epoch + 1
    # epochs 2-3 are bad but inside warm-up (counter reset); epoch 4 improves; 5, 6, 7 are bad -> stop at 7
    assert (rule.best, rule.best_epoch, stopped_at) == (9.0, 4, 7)


def test_non_finite_loss_stops_with_an_explanation():
    with pytest.raises(cb.NonFiniteLossError, match=r"epoch 3: non-finite .*val_loss.*learning_rate"):
        cb.NonFiniteGuard().on_epoch_end(2, {"loss": 1.0, "val_loss": float("nan")})


def test_checkpoint_restore_rejects_missing_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing to resume"):
        checkpoints.restore(None, tmp_path / "checkpoint")


def test_cli_trains_evaluates_and_refuses_to_overwrite(tmp_path, capsys):
    config_path = tmp_path / "c.yaml"
    config_lib.save(digits_config(epochs=1), config_path)
    run_dir = tmp_path / "run"
    fit.main([str(config_path), "--run-dir", str(run_dir), "--set", "evaluate.num_samples=20"])
    assert "test metrics:" in capsys.readouterr().out
    assert config_lib.load(run_dir / "config.yaml").evaluate.num_samples == 20
    with pytest.raises(fit.RunDirError, match="--resume"):
        fit.main([str(config_path), "--run-dir", str(run_dir)])
    from training import evaluate

    evaluate.main([str(run_dir), "--metrics", "nll", "--num-samples", "30", "--max-examples", "40"])
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert (metrics["num_samples"], metrics["num_examples"]) == (30, 40)


@pytest.mark.parametrize("likelihood", ["discretized_logistic", "squared_error", "gaussian"])
def test_continuous_data_reports_bits_per_dim_and_normalised_numbers(tmp_path, likelihood):
    config = digits_config(epochs=1, sets=["data.preprocessing=continuous", f"model.likelihood={likelihood}"])
    _, metrics = fit.train(config, tmp_path)
    dims = 8 * 8
    if likelihood == "squared_error":  # Gaussian with variance 1/2 without its constant: + (D/2) log pi
        assert math.isclose(metrics["nll_gaussian_normalized"], metrics["nll"] + dims / 2 * math.log(math.pi), rel_tol=1e-9)
        nll = metrics["nll_gaussian_normalized"]
    else:
        assert "nll_gaussian_normalized" not in metrics
        nll = metrics["nll"]
    # a discrete likelihood already scores 8-bit bins; a density on [0, 1] needs + D log 256
    discrete_nll = nll if likelihood == "discretized_logistic" else nll + dims * math.log(256)
    assert math.isclose(metrics["bits_per_dim"], discrete_nll / (dims * math.log(2)), rel_tol=1e-9)
