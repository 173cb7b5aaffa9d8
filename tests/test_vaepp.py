"""The VAEPP procedures as `fit` runs them (digits, under the active backend): the naive procedure's two
optimizers each move their own weights, its critic learns to score data below decodes of N(0, I), the step
size follows the halving schedule, the latent GAN trains after the VAE only, and the one-step loss is the sum
the paper's Algorithm 2 (or the code) specifies. The naive run also carries the paper's q options (truncated
normal, q(z | e), soft target)."""

import keras
import numpy as np
import pytest

from tests.helpers import _np
from training import config as config_lib, fit

STEPS = 12  # 1297 digits training images, batch 100


def vaepp_config(procedure, model=None, train=None, prior=None, **options):
    return config_lib.from_dict({
        "name": "vaepp-test", "seed": 3, "data": {"name": "digits"},
        "model": {"architecture": "vae", "latent_dim": 4, "hidden_units": 32, **(model or {}),
                  "prior": {"name": "pull_back", "critic_units": 16, "normal_samples": 32,
                            "validation_normalizer_draws": 500, "final_normalizer_draws": 500,
                            "sampler_start": "sir", **(prior or {})}},
        "train": {"procedure": {"name": procedure, **options}, "epochs": 2, "batch_size": 100,
                  "learning_rate": 5e-3, "gradient_normalization": False, "warmup_epochs": 0,
                  "early_stopping_patience": 0, "eval_batch_size": 250, "verbose": "0", "steps_per_execution": 1,
                  **(train or {})},
    })


class GeneratorAtVAEEnd(keras.callbacks.Callback):
    """The latent GAN generator's weights when the VAE's `model.fit` begins and ends (before the GAN phase)."""

    def snapshot(self):
        return [_np(w) for w in self.model.prior.gan_generator.weights]

    def on_train_begin(self, logs=None):
        self.begin = self.snapshot()

    def on_train_end(self, logs=None):
        self.end = self.snapshot()


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
    # the paper's NLL-model options ride along: the truncated q, the q(z | e) trick with the soft target, and
    # the step size halved after epoch 1 (the code's lr_anneal_epoch_freq)
    # and the latent GAN's phase after the VAE (tiny)
    config = vaepp_config("vaepp_naive", critic_learning_rate=5e-4,
                          model={"posterior": "truncated_normal", "encoder_input": "grey", "training_target": "grey"},
                          train={"learning_rate_halving_epochs": [1]},
                          prior={"sampler_start": "latent_gan", "mala_steps": 3,
                                 "latent_gan": {"epochs": 2, "batch_size": 64, "critic_steps": 1, "units": 8}})
    first_step, generator = FirstStepMoves(), GeneratorAtVAEEnd()
    run_dir = tmp_path_factory.mktemp("naive")
    model, _ = fit.train(config, run_dir, run_evaluation=False, extra_callbacks=[first_step, generator])
    from training import data as data_lib

    return model, (first_step.moves, generator), data_lib.load_splits(config.data), run_dir


def test_fit_trains_the_gan_after_the_vae_only_and_saves_it(naive_run):
    """The VAE's steps leave the GAN's nets alone (frozen, outside its optimizer and L2); the phase after
    them moves the generator; the saved weights hold the trained GAN, so a reloaded model samples alike."""
    from training.checkpoints import load_run_model

    model, (_, watch), _, run_dir = naive_run
    for begin, end in zip(watch.begin, watch.end):
        np.testing.assert_array_equal(begin, end)
    after = [_np(w) for w in model.prior.gan_generator.weights]
    assert any(not np.allclose(a, e) for a, e in zip(after, watch.end))
    assert not model.prior.gan_generator.trainable_variables  # frozen again for any later training
    reloaded = load_run_model(run_dir)
    np.testing.assert_allclose(_np(reloaded.prior.sample(16, seed=7)), _np(model.prior.sample(16, seed=7)),
                               rtol=1e-5, atol=1e-6)


def test_halving_schedule_sets_the_vae_step_size_per_epoch(naive_run):
    """history.csv logs 5e-3 in epoch 1 and 2.5e-3 in epoch 2; the VAE's Adam ends at the halved rate and the
    critic's Adam keeps its own."""
    import csv

    model, _, _, run_dir = naive_run
    rows = list(csv.DictReader(open(run_dir / "history.csv")))
    np.testing.assert_allclose([float(r["learning_rate"]) for r in rows], [5e-3, 2.5e-3], rtol=1e-6)
    np.testing.assert_allclose(_np(model.procedure.vae_optimizer.learning_rate), 2.5e-3, rtol=1e-6)
    np.testing.assert_allclose(_np(model.procedure.critic_optimizer.learning_rate), 5e-4, rtol=1e-6)


def test_naive_procedure_steps_both_optimizers_once_per_train_step(naive_run):
    """Adam's first step moves every weight with a gradient by its step size times the gradient's sign: the
    critic's largest move is the critic Adam's 5e-4, the decoder's the VAE optimizer's 5e-3; each optimizer,
    and the model's step counter, counted every train step."""
    model, ((critic_move, decoder_move), _), _, _ = naive_run
    procedure = model.procedure
    counts = [int(_np(o.iterations)) for o in (procedure.vae_optimizer, procedure.critic_optimizer, model.optimizer)]
    assert counts == [2 * STEPS] * 3
    np.testing.assert_allclose(critic_move, 5e-4, rtol=1e-2)
    np.testing.assert_allclose(decoder_move, 5e-3, rtol=1e-2)


def test_naive_critic_scores_data_below_decoded_noise(naive_run):
    """The critic step minimises mean D(x) - mean D(G(eps)) (+ penalty): after training, D is lower on the
    training images than on decodes of prior noise, by more than the noise of either mean."""
    model, _, splits, _ = naive_run
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


def test_the_test_nll_of_the_q_e_trick_proposes_from_the_grey_test_images(naive_run):
    """With encoder_input: grey, `training.evaluate`'s NLL uses q(z | e) on the grey test images (as the code
    evaluates) and says so, beside the same networks under N(0, I)."""
    from evaluation import report

    model, _, splits, run_dir = naive_run
    config = config_lib.load(run_dir / "config.yaml", ["evaluate.num_samples=10", "evaluate.max_examples=50"])
    out = report.evaluate_run(run_dir, model, splits, config, ["nll"], verbose=False)
    assert out["proposal"] == "q(z | e), e the grey image" and out["num_examples"] == 50
    assert np.isfinite(out["nll"]) and np.isfinite(out["nll_standard_normal_prior"])
