"""VAEPP's latent GAN (training.latent_gan, layers.latent_gan) under the active backend: weight-normalised
layers keep their column norms at the scale g whatever the direction's length; the phase, as `fit` runs it,
learns a known Gaussian of codes (Frechet distance from over 1 to under 0.15), takes `critic_steps` critic steps per generator step, reruns to the same
weights from the same seed. The phase inside `fit` (the VAE's steps leave the GAN alone, a reloaded run samples
alike) is checked on tests/test_vaepp.py's VAEPP run."""

import keras
import numpy as np
import pytest
from keras import ops

from layers.dense import WeightNormDense
from layers.priors import PRIORS
from tests.helpers import _np, _t
from training import latent_gan

TARGET_MEAN = np.array([1.0, -0.5])
TARGET_STD = 0.5
EPOCHS = 10  # WGAN training oscillates: from epoch 7 on the distance stays below 0.05 on every backend


def test_weight_norm_kernel_has_column_norms_g_and_ignores_the_direction_length():
    layer = WeightNormDense(3)
    layer.build((None, 4))
    layer.scale.assign(np.array([0.5, 2.0, 3.0], "float32"))
    x = _t(np.random.default_rng(0).normal(size=(5, 4)))
    before = _np(layer(x))
    np.testing.assert_allclose(np.linalg.norm(_np(layer.kernel()), axis=0), [0.5, 2.0, 3.0], rtol=1e-5)
    layer.direction.assign(layer.direction * 7.0)
    np.testing.assert_allclose(_np(layer(x)), before, rtol=1e-5, atol=1e-6)


def code_prior(**gan):
    """A pull-back prior whose 'encoder' is the identity on 2-D codes, so its GAN's data are the codes; its
    initial weights are the same on every call (as `fit` seeds them)."""
    keras.utils.set_random_seed(0)
    options = {"epochs": 1, "batch_size": 64, "critic_steps": 3, "units": 16, "learning_rate": 1e-3,
               "generator_output": "linear", **gan}
    prior = PRIORS.build(PRIORS.options("pull_back", latent_gan=options), latent_dim=2, image_shape=(2, 1, 1),
                         num_train=1, seed=0, name="prior")
    prior.attach_encoder(lambda x: (ops.reshape(x, (-1, 2)), ops.zeros_like(ops.reshape(x, (-1, 2)))))
    prior.build((None, 2))
    return prior


def gaussian_codes(n=3840, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.normal(size=(n, 2)) * TARGET_STD + TARGET_MEAN).astype("float32")


def generated(prior, n=4000):
    return _np(prior.latent_gan_start(n, seed=5))


def frechet_to_target(z):
    """Frechet distance between the Gaussian fitted to z and N(TARGET_MEAN, TARGET_STD^2 I) (2-D, closed form)."""
    mean, cov = z.mean(axis=0), np.cov(z, rowvar=False)
    eig = np.linalg.eigvalsh(cov)
    return float(np.sum((mean - TARGET_MEAN) ** 2) + np.trace(cov) + 2 * TARGET_STD ** 2
                 - 2 * TARGET_STD * np.sum(np.sqrt(np.clip(eig, 0, None))))


def test_phase_learns_a_gaussian_of_codes_with_critic_steps_per_generator_step():
    """The generator starts near 0 and ends at the codes' mean and spread (WGAN-div in z-space, Adam 1e-3)."""
    prior = code_prior(epochs=EPOCHS, critic_steps=5)
    start = frechet_to_target(generated(prior))
    trainer, logs = latent_gan.train(prior, gaussian_codes(), seed=1)
    end = frechet_to_target(generated(prior))
    assert start > 1.0 and end < 0.15, (start, end)
    gan_vaepp, acceptance = prior.sample_chain(4000, seed=8, mala_steps=0)  # the paper's GAN-VAEPP row
    assert frechet_to_target(_np(gan_vaepp)) < 0.15 and float(_np(acceptance)) == 1.0
    plain = _np(prior.sample_chain(4000, seed=8, mala_steps=0, start="normal")[0])  # N(0, I) decoding
    assert abs(plain.mean()) < 0.1 and abs(plain.std() - 1.0) < 0.1
    assert all(np.isfinite(v) for v in logs.values()) and set(logs) == set(latent_gan.LOG_NAMES)
    generator_steps = EPOCHS * (3840 // (5 * 64))
    assert int(_np(trainer.generator_optimizer.iterations)) == generator_steps
    assert int(_np(trainer.critic_optimizer.iterations)) == 5 * generator_steps


def test_phase_is_deterministic_per_seed():
    weights = []
    for seed in (4, 4, 5):
        prior = code_prior(critic_steps=1)
        latent_gan.train(prior, gaussian_codes(640), seed=seed)
        weights.append(np.concatenate([_np(w).ravel() for w in prior.gan_generator.weights]))
    np.testing.assert_array_equal(weights[0], weights[1])
    assert not np.allclose(weights[0], weights[2])


def test_sampler_start_errors_name_the_choices():
    prior = code_prior()
    with pytest.raises(ValueError, match="sampler start 'gan': choose one of latent_gan, sir, normal"):
        prior.start(4, seed=0, kind="gan")
    sir_only = PRIORS.build(PRIORS.options("pull_back", sampler_start="sir"), latent_dim=2, image_shape=(2, 1, 1),
                            num_train=1, seed=0, name="prior")
    assert sir_only.latent_gan is None
    with pytest.raises(ValueError, match="has no latent GAN"):
        sir_only.start(4, seed=0, kind="latent_gan")


def test_phase_needs_one_full_step_of_codes():
    prior = code_prior(batch_size=64, critic_steps=3)
    with pytest.raises(ValueError, match=r"critic_steps x batch_size = 192 .* 100 images; lower model.prior.latent_gan.batch_size"):
        latent_gan.train(prior, gaussian_codes(100), seed=0)
