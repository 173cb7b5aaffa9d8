"""The two posterior families of VAEPP's code (layers/posteriors.py): each log-density integrates to 1 on a
fine grid, the truncated draws stay within +-2 sigma with the truncated normal's closed-form variance, and
the renormalising mass is erf(2 / sqrt 2)."""

import math

import numpy as np
import pytest

from layers.posteriors import LOG_TRUNCATED_MASS, log_posterior_density, sample_posterior
from tests.helpers import _np, _t


@pytest.mark.parametrize("family", ["gaussian", "truncated_normal"])
def test_posterior_density_integrates_to_one_and_draws_stay_in_its_support(family):
    mean, log_var = 0.4, math.log(0.3 ** 2)
    grid = np.linspace(mean - 3.0, mean + 3.0, 600_001)[:, None]
    m, v = _t(np.full_like(grid, mean)), _t(np.full_like(grid, log_var))
    p = np.exp(_np(log_posterior_density(_t(grid), m, v, family)))
    np.testing.assert_allclose(np.trapezoid(p, grid[:, 0]), 1.0, atol=2e-4)
    z = _np(sample_posterior(_t(np.full((20_000, 2), mean)), _t(np.full((20_000, 2), log_var)), family, seed=3))
    t = (z - mean) / 0.3
    if family == "truncated_normal":
        assert np.abs(t).max() <= 2.0 + 1e-5
        np.testing.assert_allclose(LOG_TRUNCATED_MASS, math.log(0.9544997361), rtol=1e-9)
        # the truncated standard normal's variance: 1 - 2 c phi(c) / (2 Phi(c) - 1), c = 2
        c = 2.0
        var = 1.0 - 2 * c * math.exp(-c * c / 2) / math.sqrt(2 * math.pi) / math.erf(c / math.sqrt(2))
        np.testing.assert_allclose(t.var(), var, rtol=0.03)
    else:
        assert np.abs(t).max() > 3.0
        np.testing.assert_allclose(t.var(), 1.0, rtol=0.03)


# --- the VAE's q options as the model uses them ---------------------------------------------------------


def tiny_vae(**options):
    """A 2x2x1 Bernoulli VAE with one latent and a standard-normal prior (weights seeded)."""
    import keras

    from training import config as config_lib
    from zoo.base import build_model

    keras.utils.set_random_seed(0)
    section = config_lib.from_dict({"model": {"architecture": "vae", "latent_dim": 1, "hidden_units": 8,
                                              **options}}).model
    return build_model(section, (2, 2, 1), seed=0, num_train=8)


def test_truncated_iwae_converges_to_the_likelihood_restricted_to_the_box():
    """With `posterior: truncated_normal` q has support mean +- 2 sigma only, so the IWAE estimate converges
    to log of the integral of p(x, z) over that box (a lower bound on log p(x), as the VAEPP code's NLL is),
    not to log p(x): both by trapezoid quadrature of `log_joint` on a 1-D grid, against S = 40,000."""
    model = tiny_vae(posterior="truncated_normal")
    bias = model.encoder_head.log_var_head.bias  # q narrower than the posterior: its box misses mass
    bias.assign(np.full(tuple(bias.shape), math.log(0.15 ** 2), "float32"))
    x = (np.random.default_rng(1).random((2, 2, 2, 1)) < 0.5).astype("float32")
    estimate = model.log_likelihood(x, num_samples=40_000, max_batch=40_000)
    mean, log_var = (_np(a)[:, 0] for a in model.encode(_t(x)))
    for i in range(len(x)):
        sd = math.exp(0.5 * log_var[i])
        box = np.linspace(mean[i] - 2 * sd, mean[i] + 2 * sd, 20_001)
        full = np.linspace(-15.0, 15.0, 60_001)
        integral = [np.trapezoid(np.exp(_np(model.log_joint(_t(np.repeat(x[i:i + 1], len(g), 0)), _t(g[:, None])))), g)
                    for g in (box, full)]
        np.testing.assert_allclose(estimate[i], math.log(integral[0]), atol=0.02)
        assert math.log(integral[0]) < math.log(integral[1]) - 0.01  # the box misses mass: a real bound
    log_w = _np(model.log_importance_weights(_t(x), 1000))
    terms = model.elbo_terms(_t(np.repeat(x, 1000, 0)))
    single = (_np(terms["log_px"]) - _np(terms["kl"])).reshape(len(x), 1000)
    # the training ELBO's draw is the estimator's: the same distribution of log w, within 5 standard errors
    np.testing.assert_array_less(np.abs(single.mean(1) - log_w.mean(1)),
                                 5 * np.hypot(single.std(1), log_w.std(1)) / math.sqrt(1000))


def test_grey_options_read_the_batch_greyscale_in_training_only():
    """encoder_input / training_target grey (VAEPP's q(z | e) trick and soft target): in a training step the
    encoder and log p(x | z) read the batch's grey e; in evaluation the model is the plain one. Checked
    against the same weights with the options off, fed e as its image (same noise: the seed generators
    restart from the same state)."""
    import keras

    grey_model = tiny_vae(encoder_input="grey", training_target="grey")
    plain = tiny_vae()
    plain.set_weights(grey_model.get_weights())
    rng = np.random.default_rng(2)
    e = rng.random((6, 2, 2, 1)).astype("float32")
    x = (rng.random(e.shape) < e).astype("float32")
    assert grey_model.reads_grey and not plain.reads_grey

    def terms(model, image, batch):
        model.seed_generator = keras.random.SeedGenerator(5)
        return {k: _np(v) for k, v in model.elbo_terms(_t(image), batch=batch).items()}

    got = terms(grey_model, x, {"image": _t(x), "grey": _t(e)})
    want = terms(plain, e, {"image": _t(e)})
    for key in ("log_px", "kl"):
        np.testing.assert_allclose(got[key], want[key], rtol=1e-5, atol=1e-5)
    binary = terms(plain, x, {"image": _t(x)})
    assert np.abs(got["log_px"] - binary["log_px"]).max() > 1e-3  # e and x give different targets
    for key, value in terms(grey_model, x, None).items():
        np.testing.assert_allclose(value, terms(plain, x, None)[key], rtol=1e-6)
    with pytest.raises(ValueError, match="grey"):
        grey_model.elbo_terms(_t(x), batch={"image": _t(x)})


def test_iwae_with_the_grey_image_as_the_proposals_input_still_estimates_log_p_x():
    """`log_likelihood(x, S, encoder_images=e)` (the test proposal q(z | e) of the q(z | e) trick) is an
    importance sampler for the same p(x): it converges to the quadrature log p(x) like q(z | x) does, and
    with e = x it is the plain estimate itself (the same draws)."""
    import keras

    model = tiny_vae(encoder_input="grey")
    rng = np.random.default_rng(4)
    e = rng.random((2, 2, 2, 1)).astype("float32")
    x = (rng.random(e.shape) < e).astype("float32")
    full = np.linspace(-15.0, 15.0, 60_001)
    for i in range(len(x)):
        log_joint = _np(model.log_joint(_t(np.repeat(x[i:i + 1], len(full), 0)), _t(full[:, None])))
        exact = math.log(np.trapezoid(np.exp(log_joint), full))
        np.testing.assert_allclose(model.log_likelihood(x[i:i + 1], 40_000, 40_000, encoder_images=e[i:i + 1])[0],
                                   exact, atol=0.02)
    runs = []
    for encoder_images in (None, x):
        model.seed_generator = keras.random.SeedGenerator(9)
        runs.append(model.log_likelihood(x, 100, encoder_images=encoder_images))
    np.testing.assert_allclose(runs[0], runs[1], rtol=1e-6)
