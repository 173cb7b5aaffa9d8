"""The VAEPP procedures as `fit` runs them (digits, under the active backend): the naive procedure's two
optimizers each move their own weights, its critic learns to score data below decodes of N(0, I), and the
one-step loss is the sum the paper's Algorithm 2 (or the code) specifies."""

import keras
import numpy as np
import pytest

from tests.helpers import _np
from training import config as config_lib, fit

STEPS = 12  # 1297 digits training images, batch 100


def vaepp_config(procedure, **options):
    return config_lib.from_dict({
        "name": "vaepp-test", "seed": 3, "data": {"name": "digits"},
        "model": {"architecture": "vae", "latent_dim": 4, "hidden_units": 32,
                  "prior": {"name": "pull_back", "critic_units": 16, "normal_samples": 32,
                            "validation_normalizer_draws": 500, "final_normalizer_draws": 500,
                            "sampler_start": "sir"}},  # the latent GAN's phase: tests/test_latent_gan.py
        "train": {"procedure": {"name": procedure, **options}, "epochs": 2, "batch_size": 100,
                  "learning_rate": 5e-3, "gradient_normalization": False, "warmup_epochs": 0,
                  "early_stopping_patience": 0, "eval_batch_size": 250, "verbose": "0", "steps_per_execution": 1},
    })


class FirstStepMoves(keras.callbacks.Callback):
    """The largest change of the critic's and of the decoder's weights in the first train step."""

    def snapshot(self):
        return [[_np(v) for v in part.weights] for part in (self.model.prior.critic, self.model.decoder_net)]

    def on_train_begin(self, logs=None):
        self.before = self.snapshot()

    def on_train_batch_end(self, batch, logs=None):
        if not hasattr(self, "moves"):
            self.moves = [max(np.max(np.abs(a - b)) for a, b in zip(after, before))
                          for after, before in zip(self.snapshot(), self.before)]


@pytest.fixture(scope="module")
def naive_run(tmp_path_factory):
    config = vaepp_config("vaepp_naive", critic_learning_rate=5e-4)
    first_step = FirstStepMoves()
    model, _ = fit.train(config, tmp_path_factory.mktemp("naive"), run_evaluation=False, extra_callbacks=[first_step])
    from training import data as data_lib

    return model, first_step.moves, data_lib.load_splits(config.data)


def test_naive_procedure_steps_both_optimizers_once_per_train_step(naive_run):
    """Adam's first step moves every weight with a gradient by its step size times the gradient's sign: the
    critic's largest move is the critic Adam's 5e-4, the decoder's the VAE optimizer's 5e-3; each optimizer,
    and the model's step counter, counted every train step."""
    model, (critic_move, decoder_move), _ = naive_run
    procedure = model.procedure
    counts = [int(_np(o.iterations)) for o in (procedure.vae_optimizer, procedure.critic_optimizer, model.optimizer)]
    assert counts == [2 * STEPS] * 3
    np.testing.assert_allclose(critic_move, 5e-4, rtol=1e-2)
    np.testing.assert_allclose(decoder_move, 5e-3, rtol=1e-2)


def test_naive_critic_scores_data_below_decoded_noise(naive_run):
    """The critic step minimises mean D(x) - mean D(G(eps)) (+ penalty): after training, D is lower on the
    training images than on decodes of prior noise, by more than the noise of either mean."""
    model, _, splits = naive_run
    real = _np(model.prior.energy(keras.ops.convert_to_tensor(splits.train[:500])))
    eps = keras.random.normal((500, model.latent_dim), seed=1)
    fake = _np(model.prior.energy(model.decoder_mean(eps)))
    spread = 3 * (real.std() + fake.std()) / np.sqrt(500)
    assert real.mean() < fake.mean() - spread, (real.mean(), fake.mean(), spread)


@pytest.mark.parametrize("penalty_weight", ["code", "paper"])
def test_one_step_loss_is_the_elbo_plus_the_weighted_penalty(penalty_weight, tmp_path):
    """With no L2 and no KL clamp the logged loss of the first train step is -recon + KL + c zeta, with c the
    constant w (code) or beta = w sigmoid(xi) of that step (paper); training lowers the validation loss."""
    config = vaepp_config("vaepp", penalty_weight=penalty_weight, l2=0.0, kl_clamp="paper")
    import csv

    class FirstStep(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            if not hasattr(self, "logs"):
                self.logs = {k: float(v) for k, v in logs.items()}

    first = FirstStep()
    model, _ = fit.train(config, tmp_path, run_evaluation=False, extra_callbacks=[first])
    logs = first.logs
    weight = model.prior.energy_weight if penalty_weight == "code" else logs["beta"]
    np.testing.assert_allclose(logs["loss"], logs["reconstruction"] + logs["kl"] + weight * logs["penalty"], rtol=1e-5)
    with open(tmp_path / "history.csv") as f:
        rows = list(csv.DictReader(f))
    assert float(rows[-1]["val_loss"]) < float(rows[0]["val_loss"])


def test_penalty_section_is_validated_with_suggestions():
    with pytest.raises(config_lib.ConfigError, match=r"train.procedure.penalty.weigth'; did you mean 'train.procedure.penalty.weight'"):
        config_lib.from_dict({"model": {"prior": {"name": "pull_back"}},
                              "train": {"procedure": {"name": "vaepp", "penalty": {"name": "wgan_gp", "weigth": 3}}}})
