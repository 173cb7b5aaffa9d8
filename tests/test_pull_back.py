"""VAEPP's pull-back prior and the truncated-normal posterior, under the active backend.

Oracles are closed forms: with a linear critic on an identity "decoder", D(G(z)) = a . z + b, so
Z = E_N[exp(-beta (a . z + b))] = exp(beta^2 |a|^2 / 2 - beta b) exactly; both proposals must recover it in
exp space within their Monte-Carlo error (the q-proposal with one training image, M = 1, where it is an
ordinary importance-sampling estimate); the density integrates to 1 on a 2-D grid once log Z is exact; the
w = 0 is the standard-normal
model bit for bit. The contract tests (tests/test_contract.py) add normalisation with the prior's own
estimate, seeded SIR + MALA sampling against the CDF integrated from log_prob, serialization and export.
"""

import math

import keras
import numpy as np
import pytest
from keras import ops

from layers.priors import PRIORS
from tests.helpers import _np, _t
from training import config as config_lib
from zoo.base import build_model

D = 2
A = np.array([0.6, -0.3])
B = 0.25


def linear_prior(energy_weight=2.0, num_train=1, aggregate_size="paper", xi=0.4, **options):
    """A pull-back prior whose critic is linear, D(x) = a . x + b, on G(z) = z (images of shape (d, 1, 1))."""
    prior = PRIORS.build(PRIORS.options("pull_back", energy_weight=energy_weight, aggregate_size=aggregate_size,
                                        **options),
                         latent_dim=D, image_shape=(D, 1, 1), num_train=num_train, seed=0, name="prior")
    prior.critic = keras.Sequential([keras.layers.Flatten(), keras.layers.Dense(1)], name="critic")
    prior.attach_decoder(lambda z: ops.reshape(z, (-1, D, 1, 1)))
    prior.build((None, D))
    prior.critic.layers[-1].set_weights([A[:, None].astype("float32"), np.array([B], "float32")])
    prior.xi.assign(xi)
    return prior


def exact_log_z(prior):
    beta = float(_np(prior.beta()))
    return 0.5 * beta ** 2 * float(A @ A) - beta * B


def test_beta_is_w_sigmoid_xi_and_starts_at_half_w():
    prior = PRIORS.build(PRIORS.options("pull_back", energy_weight=10.0), latent_dim=D, image_shape=(4, 4, 1),
                         num_train=5, seed=0, name="prior")
    prior.build((None, D))
    assert float(_np(prior.beta())) == 5.0
    prior.xi.assign(3.0)
    np.testing.assert_allclose(float(_np(prior.beta())), 10.0 / (1.0 + math.exp(-3.0)), rtol=1e-6)


def test_normal_proposal_recovers_the_closed_form_partition_function():
    prior = linear_prior()
    log_z, stderr = prior.estimate_log_normalizer(num_samples=200_000, batch_size=50_000, seed=3)
    assert 0 < stderr < 0.02
    ratio = math.exp(log_z - exact_log_z(prior))  # Z-hat / Z, unbiased in exp space
    assert abs(ratio - 1.0) < 4.0 * stderr, (ratio, stderr)


def box_log_z(prior, low, high):
    """log of the integral of N(z) exp(-beta (a . z + b)) over the box [low, high]: completing the square,
    exp(beta^2 |a|^2 / 2 - beta b) prod_d [Phi(high_d + beta a_d) - Phi(low_d + beta a_d)]."""
    from scipy.stats import norm

    beta = float(_np(prior.beta()))
    mass = np.prod(norm.cdf(high + beta * A) - norm.cdf(low + beta * A))
    return exact_log_z(prior) + math.log(mass)


@pytest.mark.parametrize("proposal", ["aggregate", "code"])
@pytest.mark.parametrize("posterior,support", [("gaussian", "full"), ("truncated_normal", "full"),
                                               ("truncated_normal", "code")])
def test_posterior_proposal_recovers_the_closed_form_partition_function(posterior, support, proposal):
    """One training image (M = 1) whose q(z | e) = N(m, s^2) is any proposal: Z_q = E_q[f / q] = Z (the
    aggregate posterior of one image is q(z | e) itself, so both proposals are exact importance sampling).
    With a truncated model q (the family the prior takes from the model, `attach_encoder`), support full
    proposes from the untruncated Gaussian and recovers Z; support code proposes from the truncated q, which
    covers m +- 2 s only: its estimate is the integral over that box, in closed form too, and is below Z."""
    prior = linear_prior(num_train=1, normalizer_support=support)
    mean, log_var = np.array([[0.3, -0.2]], "float32"), np.array([[0.2, -0.1]], "float32")
    prior.attach_encoder(lambda x: (_t(np.repeat(mean, ops.shape(x)[0], 0)), _t(np.repeat(log_var, ops.shape(x)[0], 0))),
                         posterior)
    log_z, stderr = prior.estimate_log_normalizer(np.zeros((1, D, 1, 1), "float32"), num_samples=100_000,
                                                  batch_size=25_000, seed=5, proposal=proposal)
    exact = exact_log_z(prior)
    if support == "code" and posterior == "truncated_normal":
        sd = np.exp(0.5 * log_var[0].astype("float64"))
        exact = box_log_z(prior, mean[0] - 2 * sd, mean[0] + 2 * sd)
        assert exact < exact_log_z(prior) - 0.05
    ratio = math.exp(log_z - exact)
    assert stderr < 0.03 and abs(ratio - 1.0) < 4.0 * stderr, (ratio, stderr)


def test_code_aggregate_size_shifts_log_z_by_log_50000_over_n():
    images = np.zeros((3, D, 1, 1), "float32")
    estimates = []
    for mode in ("paper", "code"):
        prior = linear_prior(num_train=3, aggregate_size=mode)
        prior.attach_encoder(lambda x: (ops.zeros((ops.shape(x)[0], D)), ops.zeros((ops.shape(x)[0], D))))
        estimates.append(prior.estimate_log_normalizer(images, num_samples=150, seed=1, proposal="code")[0])
    np.testing.assert_allclose(estimates[1] - estimates[0], math.log(50000 / 3), rtol=1e-5)


def test_aggregate_proposal_is_unbiased_where_the_code_bound_is_loose():
    """Three training images with the same q(z | e): the aggregate posterior is that q, so its estimate is
    unbiased, while the code's bound q(z | e) / M overestimates Z by exactly M = 3 (log 3 nats)."""
    images = np.zeros((3, D, 1, 1), "float32")
    prior = linear_prior(num_train=3)
    mean, log_var = np.array([[0.3, -0.2]], "float32"), np.array([[0.2, -0.1]], "float32")
    prior.attach_encoder(lambda x: (_t(np.repeat(mean, ops.shape(x)[0], 0)), _t(np.repeat(log_var, ops.shape(x)[0], 0))))
    estimates = {p: prior.estimate_log_normalizer(images, 60_000, batch_size=20_000, seed=2, proposal=p)
                 for p in ("aggregate", "code")}
    log_z, stderr = estimates["aggregate"]
    assert abs(math.exp(log_z - exact_log_z(prior)) - 1.0) < 4.0 * stderr, (log_z, stderr)
    np.testing.assert_allclose(estimates["code"][0] - log_z, math.log(3.0), rtol=1e-6)


def test_aggregate_density_matches_a_direct_mixture():
    from layers.priors.pull_back import _log_gaussian_mixture
    from scipy.stats import multivariate_normal

    rng = np.random.default_rng(4)
    means, log_vars, z = rng.normal(size=(5, 3)), rng.normal(size=(5, 3)) * 0.5, rng.normal(size=(7, 3))
    direct = [math.log(np.mean([multivariate_normal(m, np.diag(np.exp(v))).pdf(row) for m, v in zip(means, log_vars)]))
              for row in z]
    np.testing.assert_allclose(_log_gaussian_mixture(z, means, log_vars, chunk=2), direct, rtol=1e-10)
    # truncated: each term is zero outside its +-2 sigma box and divided by the box's mass inside
    z = means[[0, 1, 1, 3]] + np.array([1.0, -1.9, 2.1, 0.5])[:, None] * np.exp(0.5 * log_vars[[0, 1, 1, 3]])
    mass = math.erf(2 / math.sqrt(2)) ** 3
    direct = [math.log(np.mean([multivariate_normal(m, np.diag(np.exp(v))).pdf(row) / mass
                                * np.all(np.abs(row - m) <= 2 * np.exp(0.5 * v)) for m, v in zip(means, log_vars)]))
              for row in z]
    np.testing.assert_allclose(_log_gaussian_mixture(z, means, log_vars, chunk=2, family="truncated_normal"), direct,
                               rtol=1e-10)


def test_training_mixture_is_the_mean_of_both_proposals_in_exp_space():
    prior = linear_prior(num_train=4)
    z = _t(np.random.default_rng(0).normal(size=(4, D)))
    log_q = _t(np.full(4, -2.0))
    mixture = float(_np(prior.training_log_normalizer(z, log_q, seed=9)))
    normal = float(_np(prior.log_normalizer_normal(keras.random.normal((prior.normal_samples, D), seed=9))))
    posterior = float(_np(prior.log_normalizer_posterior(z, log_q)))
    np.testing.assert_allclose(mixture, math.log(0.5 * (math.exp(normal) + math.exp(posterior))), rtol=1e-5)


def test_density_integrates_to_one_once_log_z_is_exact():
    prior = linear_prior()
    prior.set_log_normalizer(exact_log_z(prior))
    axis = np.linspace(-9.0, 9.0, 361)
    a, b = np.meshgrid(axis, axis, indexing="ij")
    p = np.exp(_np(prior.log_prob(_t(np.stack([a.ravel(), b.ravel()], -1))))).reshape(a.shape)
    h = axis[1] - axis[0]
    np.testing.assert_allclose(np.trapezoid(np.trapezoid(p, dx=h, axis=1), dx=h), 1.0, atol=1e-4)


def test_code_floor_bounds_the_normal_estimate():
    """log Z_N >= -20 - (d/2) log 2 pi in code mode (the code floors its form, which adds (d/2) log 2 pi)."""
    prior = linear_prior(energy_weight=1e4, xi=5.0)  # exp(-beta D) underflows for most eps
    prior.critic.layers[-1].set_weights([np.zeros((D, 1), "float32"), np.array([1.0], "float32")])
    eps = keras.random.normal((64, D), seed=1)
    floor = -20.0 - 0.5 * D * math.log(2 * math.pi)
    np.testing.assert_allclose(float(_np(prior.log_normalizer_normal(eps))), floor, rtol=1e-6)
    prior.normal_log_z_floor = "paper"
    assert float(_np(prior.log_normalizer_normal(eps))) < floor - 1000


def test_zero_energy_weight_is_the_standard_normal_model_bit_for_bit():
    """w = 0: the same log p(z), the same training and evaluation objective as a standard-normal VAE with
    the same weights."""
    def model(prior):
        raw = {"model": {"architecture": "vae", "latent_dim": D, "hidden_units": 8, "prior": prior}}
        return build_model(config_lib.from_dict(raw).model, (4, 4, 1), seed=0, num_train=10)

    standard = model("standard_normal")
    pull_back = model({"name": "pull_back", "energy_weight": 0.0})
    for layer in ("encoder_net", "encoder_head", "decoder_net", "likelihood"):
        getattr(pull_back, layer).set_weights(getattr(standard, layer).get_weights())
    z = _t(np.random.default_rng(1).normal(size=(7, D)))
    np.testing.assert_array_equal(_np(pull_back.prior.log_prob(z)), _np(standard.prior.log_prob(z)))
    np.testing.assert_array_equal(_np(pull_back.prior.training_log_prob(z, {})), _np(standard.prior.log_prob(z)))
    x = _t((np.random.default_rng(2).random((5, 4, 4, 1)) < 0.5))
    for training in (True, False):
        standard.seed_generator = keras.random.SeedGenerator(4)
        pull_back.seed_generator = keras.random.SeedGenerator(4)
        a = standard.objective({"image": x}, training=training)[0]
        b = pull_back.objective({"image": x}, training=training)[0]
        assert float(_np(a)) == float(_np(b))


def test_standard_normal_nll_is_the_same_networks_under_n01():
    """`nll_standard_normal_prior` (the code's test_nll beside its adv_test_nll) is the IWAE estimate of a
    standard-normal VAE with the model's encoder, decoder and likelihood weights, seed for seed."""
    from evaluation.density import standard_prior_twin

    def model(prior):
        raw = {"model": {"architecture": "vae", "latent_dim": D, "hidden_units": 8, "prior": prior}}
        return build_model(config_lib.from_dict(raw).model, (4, 4, 1), seed=0, num_train=10)

    pull_back = model({"name": "pull_back", "sampler_start": "sir"})
    standard = model("standard_normal")
    for layer in ("encoder_net", "encoder_head", "decoder_net", "likelihood"):
        weights = [w + 0.1 for w in getattr(pull_back, layer).get_weights()]  # not the initial values
        getattr(pull_back, layer).set_weights(weights)
        getattr(standard, layer).set_weights(weights)
    twin = standard_prior_twin(pull_back)
    x = (np.random.default_rng(3).random((6, 4, 4, 1)) < 0.5).astype("float32")
    for m in (twin, standard):
        m.seed_generator = keras.random.SeedGenerator(11)
    np.testing.assert_allclose(_np(twin.log_likelihood(x, 50)), _np(standard.log_likelihood(x, 50)), rtol=1e-6)
    assert twin.prior.registered_name == "standard_normal" and pull_back.prior.registered_name == "pull_back"


def test_sampling_modes_are_the_papers_three_rows():
    """`sampling_modes` (the evaluation's Frechet rows): vaepp is the sampler itself (start + MALA, with its
    acceptance rate), gan_vaepp the same chains stopped at their GAN start, normal plain N(0, I) draws."""
    from scipy import stats

    prior = linear_prior()
    modes = prior.sampling_modes()
    assert list(modes) == ["vaepp", "gan_vaepp", "normal"]
    z, rate = modes["vaepp"](2000, 11)
    np.testing.assert_allclose(_np(z), _np(prior.sample_chain(2000, 11)[0]), rtol=1e-6)
    assert 0.0 < float(_np(rate)) <= 1.0
    start, none = modes["gan_vaepp"](2000, 11)
    assert none is None
    np.testing.assert_allclose(_np(start), _np(prior.sample_chain(2000, 11, mala_steps=0)[0]), rtol=1e-6)
    assert np.abs(_np(start) - _np(z)).max() > 1e-6  # MALA moved the chains
    normal, _ = modes["normal"](2000, 11)
    assert stats.kstest(_np(normal).ravel(), "norm").pvalue > 1e-3
    sir_only = PRIORS.build(PRIORS.options("pull_back", sampler_start="sir"), latent_dim=D, image_shape=(D, 1, 1),
                            num_train=1, seed=0, name="prior")
    assert list(sir_only.sampling_modes()) == ["vaepp", "normal"]
