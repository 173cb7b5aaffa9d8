"""Priors (`layers/priors`): densities against TFP, normalisation, sampling and the registry.

Every prior is a Keras layer; tests build it explicitly with `prior.build((None, latent_dim))`, set
its variables to known values, and compare with float64 TFP / NumPy oracles. The VampPrior gets a
tiny deterministic "encoder" written with `keras.ops` (and mirrored in NumPy for the oracle).
"""

import keras
import numpy as np
import pytest
import tensorflow_probability as tfp
from keras import ops

from layers.priors import PRIORS
from layers.priors.mixture_of_gaussians import MixtureOfGaussians
from layers.priors.standard_normal import StandardNormal
from layers.priors.vampprior import VampPrior
from tests.helpers import _f32, _np, _t

tfd = tfp.distributions

N_SAMPLES = 20_000


@pytest.fixture(autouse=True)
def _seed():
    keras.utils.set_random_seed(1234)


# --------------------------------------------------------------------------------------------------
# helpers: priors with known parameters, and closed-form mixture oracles
# --------------------------------------------------------------------------------------------------


def _mog(latent_dim, k, learn_weights, rng, mean_scale=2.0, log_var_range=(-1.0, 1.0), logits=None):
    prior = MixtureOfGaussians(latent_dim, k, learn_weights=learn_weights)
    prior.build((None, latent_dim))
    prior.means.assign(_f32(rng.uniform(-mean_scale, mean_scale, size=(k, latent_dim))).astype(np.float32))
    prior.log_vars.assign(_f32(rng.uniform(*log_var_range, size=(k, latent_dim))).astype(np.float32))
    if logits is not None:
        prior.logits.assign(np.asarray(logits, dtype=np.float32))
    elif learn_weights:
        prior.logits.assign(rng.normal(size=k).astype(np.float32))
    return prior


def _mog_params(prior):
    means, log_vars, logits = (_np(v) for v in (prior.means, prior.log_vars, prior.logits))
    return means, log_vars, logits - np.log(np.exp(logits).sum())


class _LinearEncoder:
    """images [K, H, W, C] -> (mean, log_var): mean = s * tanh(x A + a), log_var = clip(x B + b, lo, hi)."""

    def __init__(self, image_shape, latent_dim, rng, mean_scale=2.0, log_var_range=(-6.0, 2.0)):
        size = int(np.prod(image_shape))
        self.size = size
        self.A = _f32(rng.normal(size=(size, latent_dim)) / np.sqrt(size) * 2.0)
        self.a = _f32(rng.normal(size=latent_dim) * 0.5)
        self.B = _f32(rng.normal(size=(size, latent_dim)) / np.sqrt(size) * 3.0)
        self.b = _f32(rng.uniform(*log_var_range, size=latent_dim))
        self.mean_scale = mean_scale
        self.log_var_range = log_var_range
        self.calls = 0

    def __call__(self, images):
        self.calls += 1
        flat = ops.reshape(images, (-1, self.size))
        mean = self.mean_scale * ops.tanh(ops.matmul(flat, _t(self.A)) + _t(self.a))
        log_var = ops.clip(ops.matmul(flat, _t(self.B)) + _t(self.b), *self.log_var_range)
        return mean, log_var

    def numpy(self, images):
        flat = np.asarray(images, dtype=np.float64).reshape(-1, self.size)
        mean = self.mean_scale * np.tanh(flat @ self.A + self.a)
        return mean, np.clip(flat @ self.B + self.b, *self.log_var_range)


def _vamp(latent_dim, image_shape, k, encoder, rng, low=-0.5, high=1.5, **kwargs):
    prior = VampPrior(latent_dim, image_shape, k, **kwargs)
    prior.build((None, latent_dim))
    prior.pseudo_inputs.assign(rng.uniform(low, high, size=(k, *image_shape)).astype(np.float32))
    prior.attach_encoder(encoder)
    return prior


def _vamp_params(prior, encoder):
    u = np.clip(_np(prior.pseudo_inputs), 0.0, 1.0)
    means, log_vars = encoder.numpy(u)
    return means, log_vars, np.full(len(means), -np.log(len(means)))


def _mixture_log_prob(z, means, log_vars, log_weights):
    mix = tfd.MixtureSameFamily(
        tfd.Categorical(logits=log_weights), tfd.MultivariateNormalDiag(means, np.exp(0.5 * log_vars))
    )
    return mix.log_prob(np.asarray(z, dtype=np.float64)).numpy()


def _assert_moments(samples, means, log_vars, log_weights, n_se=5.0):
    """Sample mean and variance per dimension vs the mixture's closed form, within n_se standard errors."""
    w = np.exp(log_weights)[:, None]
    var_k = np.exp(log_vars)
    mu = (w * means).sum(0)
    var = (w * (var_k + means**2)).sum(0) - mu**2
    delta = means - mu
    m4 = (w * (delta**4 + 6 * delta**2 * var_k + 3 * var_k**2)).sum(0)
    n = len(samples)
    se_mean = np.sqrt(var / n)
    se_var = np.sqrt((m4 - var**2) / n)
    np.testing.assert_array_less(np.abs(samples.mean(0) - mu), n_se * se_mean)
    np.testing.assert_array_less(np.abs(samples.var(0) - var), n_se * se_var)


def _responsibility_argmax(z, means, log_vars, log_weights):
    log_comp = -0.5 * (np.log(2 * np.pi) + log_vars[None] + (z[:, None, :] - means[None]) ** 2 / np.exp(log_vars)[None])
    return np.argmax(log_comp.sum(-1) + log_weights[None], axis=1)


# --------------------------------------------------------------------------------------------------
# log_prob against TFP
# --------------------------------------------------------------------------------------------------


def test_standard_normal_log_prob_matches_tfp():
    prior = StandardNormal(4)
    prior.build((None, 4))
    z = _f32(np.random.default_rng(0).normal(size=(40, 4)) * 2.0)
    got = _np(prior.log_prob(_t(z)))
    want = tfd.MultivariateNormalDiag(np.zeros(4), np.ones(4)).log_prob(z).numpy()
    assert got.shape == (40,)
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-4)
    np.testing.assert_allclose(_np(prior(_t(z))), got, atol=1e-6)  # calling the layer is log_prob


@pytest.mark.parametrize("learn_weights", [False, True])
def test_mog_log_prob_matches_tfp(learn_weights):
    rng = np.random.default_rng(1)
    d, k = 4, 6
    prior = _mog(d, k, learn_weights, rng, log_var_range=(-4.0, 1.5))
    means, log_vars, log_weights = _mog_params(prior)
    if learn_weights:
        assert np.ptp(log_weights) > 0.5  # genuinely unequal weights
    else:
        np.testing.assert_allclose(log_weights, -np.log(k), atol=1e-6)  # uniform
    z = _f32(np.concatenate([rng.normal(size=(34, d)) * 2.5, means + 0.05]))
    got = _np(prior.log_prob(_t(z)))
    want = _mixture_log_prob(z, means, log_vars, log_weights)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=2e-4)


@pytest.mark.parametrize("learn_weights", [False, True])
def test_mog_weights_trainable_only_when_learned(learn_weights):
    prior = MixtureOfGaussians(3, 4, learn_weights=learn_weights)
    prior.build((None, 3))
    trainable = {id(v) for v in prior.trainable_weights}
    assert id(prior.means) in trainable and id(prior.log_vars) in trainable
    assert (id(prior.logits) in trainable) is learn_weights
    assert tuple(prior.means.shape) == (4, 3) and tuple(prior.logits.shape) == (4,)
    assert prior.num_components == 4
    np.testing.assert_allclose(_np(prior.log_vars), 0.0)  # unit variances at initialisation
    np.testing.assert_allclose(_np(prior.logits), 0.0)  # uniform weights at initialisation


def test_vampprior_log_prob_matches_mixture_of_encoded_clipped_pseudo_inputs():
    rng = np.random.default_rng(2)
    d, k, image_shape = 4, 6, (3, 2, 1)
    encoder = _LinearEncoder(image_shape, d, rng)
    prior = _vamp(d, image_shape, k, encoder, rng)
    means, log_vars, log_weights = _vamp_params(prior, encoder)
    z = _f32(np.concatenate([rng.normal(size=(34, d)) * 2.0, means + 0.01]))
    got = _np(prior.log_prob(_t(z)))
    want = _mixture_log_prob(z, means, log_vars, log_weights)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=2e-3)
    # the clip to [0, 1] matters for these pseudo-inputs: the unclipped mixture is a different density
    raw_means, raw_log_vars = encoder.numpy(_np(prior.pseudo_inputs))
    unclipped = _mixture_log_prob(z, raw_means, raw_log_vars, log_weights)
    assert np.abs(unclipped - want).max() > 0.1


def test_vampprior_encodes_pseudo_inputs_on_every_call():
    # The components follow the pseudo-inputs (no stale cache): change them and the density changes.
    rng = np.random.default_rng(3)
    encoder = _LinearEncoder((3, 2, 1), 4, rng)
    prior = _vamp(4, (3, 2, 1), 6, encoder, rng)
    z = _t(rng.normal(size=(40, 4)))
    before = _np(prior.log_prob(z))
    prior.pseudo_inputs.assign(rng.uniform(0, 1, size=(6, 3, 2, 1)).astype(np.float32))
    after = _np(prior.log_prob(z))
    want = _mixture_log_prob(_np(z), *_vamp_params(prior, encoder))
    np.testing.assert_allclose(after, want, rtol=1e-5, atol=1e-3)
    assert np.abs(after - before).max() > 1e-2


# --------------------------------------------------------------------------------------------------
# normalisation: grid integrals of exp(log_prob)
# --------------------------------------------------------------------------------------------------


def _make_prior(kind, latent_dim, rng):
    if kind == "standard_normal":
        prior = StandardNormal(latent_dim)
        prior.build((None, latent_dim))
        return prior
    if kind == "mog":
        return _mog(latent_dim, 4, True, rng, mean_scale=2.0, log_var_range=(-1.0, 1.0))
    encoder = _LinearEncoder((2, 2, 1), latent_dim, rng, mean_scale=2.0, log_var_range=(-1.0, 1.0))
    return _vamp(latent_dim, (2, 2, 1), 4, encoder, rng)


@pytest.mark.parametrize("kind", ["standard_normal", "mog", "vampprior"])
def test_density_integrates_to_one_in_1d(kind):
    prior = _make_prior(kind, 1, np.random.default_rng(4))
    grid = np.linspace(-12.0, 12.0, 4801)
    density = np.exp(_np(prior.log_prob(_t(grid[:, None]))))
    assert density.shape == grid.shape
    assert abs(np.trapezoid(density, grid) - 1.0) < 1e-3


@pytest.mark.parametrize("kind", ["standard_normal", "mog", "vampprior"])
def test_density_integrates_to_one_in_2d(kind):
    prior = _make_prior(kind, 2, np.random.default_rng(5))
    axis = np.linspace(-9.0, 9.0, 481)
    zz = np.stack(np.meshgrid(axis, axis, indexing="ij"), -1).reshape(-1, 2)
    density = np.exp(_np(prior.log_prob(_t(zz)))).reshape(len(axis), len(axis))
    integral = np.trapezoid(np.trapezoid(density, axis, axis=1), axis)
    assert abs(integral - 1.0) < 1e-3


# --------------------------------------------------------------------------------------------------
# sampling
# --------------------------------------------------------------------------------------------------


def test_standard_normal_samples():
    prior = StandardNormal(2)
    prior.build((None, 2))
    z = _np(prior.sample(N_SAMPLES, seed=0))
    assert z.shape == (N_SAMPLES, 2)
    _assert_moments(z, np.zeros((1, 2)), np.zeros((1, 2)), np.zeros(1))
    assert prior.num_components == 0
    with pytest.raises(NotImplementedError):
        prior.component_sample(0, 10)


def test_mog_sample_moments():
    rng = np.random.default_rng(6)
    prior = _mog(2, 4, True, rng, mean_scale=3.0, log_var_range=(-2.0, 1.0))
    z = _np(prior.sample(N_SAMPLES, seed=1))
    assert z.shape == (N_SAMPLES, 2)
    _assert_moments(z, *_mog_params(prior))


def test_mog_sample_is_reproducible_for_an_integer_seed():
    prior = _mog(2, 4, True, np.random.default_rng(7))
    a, b, c = (_np(prior.sample(N_SAMPLES, seed=s)) for s in (11, 11, 12))
    np.testing.assert_array_equal(a, b)
    assert np.abs(a - c).max() > 1e-3


def _separated_mog():
    """Four well-separated components with unequal learned weights 0.1 / 0.2 / 0.3 / 0.4."""
    prior = MixtureOfGaussians(2, 4, learn_weights=True)
    prior.build((None, 2))
    prior.means.assign(np.array([[-8, -8], [-8, 8], [8, -8], [8, 8]], dtype=np.float32))
    prior.log_vars.assign(np.log(np.array([[0.5, 1.0], [1.0, 0.3], [0.8, 0.8], [0.4, 1.2]], dtype=np.float32)))
    weights = np.array([0.1, 0.2, 0.3, 0.4])
    prior.logits.assign(np.log(weights).astype(np.float32) + 3.0)  # softmax is shift invariant
    return prior, weights


def _conditional_chi2(z, means, log_vars, log_weights):
    """Sum of squared z-scores of each component's sample mean and variance (16 dof for K=4, d=2)."""
    component = _responsibility_argmax(z, means, log_vars, log_weights)
    stat = 0.0
    for j in range(len(means)):
        eps = (z[component == j] - means[j]) / np.exp(0.5 * log_vars[j])  # standardised noise
        m = len(eps)
        stat += ((eps.mean(0) / np.sqrt(1 / m)) ** 2).sum() + (((eps.var(0) - 1) / np.sqrt(2 / m)) ** 2).sum()
    return stat


def test_mog_sample_component_frequencies_follow_learned_weights():
    prior, weights = _separated_mog()
    means, log_vars, log_weights = _mog_params(prior)
    np.testing.assert_allclose(np.exp(log_weights), weights, atol=1e-6)
    z = _np(prior.sample(N_SAMPLES, seed=2))
    _assert_moments(z, means, log_vars, log_weights)
    component = _responsibility_argmax(z, means, log_vars, log_weights)
    freq = np.bincount(component, minlength=4) / N_SAMPLES
    se = np.sqrt(weights * (1 - weights) / N_SAMPLES)
    np.testing.assert_array_less(np.abs(freq - weights), 5 * se)


def test_mog_sample_within_component_draws_are_that_gaussian_seed_generator():
    # With a SeedGenerator (fresh seed per random op) each component's draws are its own Gaussian.
    prior, _ = _separated_mog()
    z = _np(prior.sample(N_SAMPLES, seed=keras.random.SeedGenerator(2)))
    assert _conditional_chi2(z, *_mog_params(prior)) < 45.0  # chi^2(16): mean 16, sd 5.7


def test_mog_sample_within_component_draws_are_that_gaussian_int_seed():
    prior, _ = _separated_mog()
    params = _mog_params(prior)
    for seed in (2, 3):
        z = _np(prior.sample(N_SAMPLES, seed=seed))
        assert _conditional_chi2(z, *params) < 45.0  # chi^2(16): mean 16, sd 5.7


def test_mog_component_sample_draws_from_that_component_only():
    rng = np.random.default_rng(8)
    prior = MixtureOfGaussians(2, 4, learn_weights=True)
    prior.build((None, 2))
    prior.means.assign(np.array([[-10, 0], [0, 10], [10, 0], [0, -10]], dtype=np.float32))
    prior.log_vars.assign(rng.uniform(-2, 0.5, size=(4, 2)).astype(np.float32))
    prior.logits.assign(np.array([2.0, -1.0, 0.0, 0.5], dtype=np.float32))
    means, log_vars, log_weights = _mog_params(prior)
    for index in range(4):
        z = _np(prior.component_sample(index, 4000, seed=index))
        assert z.shape == (4000, 2)
        assert np.all(_responsibility_argmax(z, means, log_vars, log_weights) == index)
        _assert_moments(z, means[index : index + 1], log_vars[index : index + 1], np.zeros(1))


def test_vampprior_sample_moments_and_uniform_components():
    # Encoder mean = 8 * u with u the clipped 1x1x2 pseudo-input: the four components sit at the corners
    # of a square of side 8 *only if* the pseudo-inputs (-0.3, 1.4, ...) are clipped to [0, 1].
    class CornerEncoder:
        def __call__(self, images):
            flat = ops.reshape(images, (-1, 2))
            return 8.0 * flat, -1.0 + 0.5 * flat

        def numpy(self, images):
            flat = np.asarray(images, dtype=np.float64).reshape(-1, 2)
            return 8.0 * flat, -1.0 + 0.5 * flat

    encoder = CornerEncoder()
    prior = VampPrior(2, (1, 1, 2), 4)
    prior.build((None, 2))
    corners = np.array([[-0.3, -0.2], [1.4, 0.0], [0.0, 1.7], [1.0, 1.2]], np.float32)
    prior.pseudo_inputs.assign(corners.reshape(4, 1, 1, 2))
    prior.attach_encoder(encoder)
    means, log_vars, log_weights = _vamp_params(prior, encoder)
    np.testing.assert_allclose(means, [[0, 0], [8, 0], [0, 8], [8, 8]])
    z = _np(prior.sample(N_SAMPLES, seed=3))
    assert z.shape == (N_SAMPLES, 2)
    _assert_moments(z, means, log_vars, log_weights)
    component = _responsibility_argmax(z, means, log_vars, log_weights)
    freq = np.bincount(component, minlength=4) / N_SAMPLES
    np.testing.assert_array_less(np.abs(freq - 0.25), 5 * np.sqrt(0.25 * 0.75 / N_SAMPLES))
    for index in range(4):
        zc = _np(prior.component_sample(index, 4000, seed=10 + index))
        assert zc.shape == (4000, 2)
        assert np.all(_responsibility_argmax(zc, means, log_vars, log_weights) == index)
        _assert_moments(zc, means[index : index + 1], log_vars[index : index + 1], np.zeros(1))


def test_vampprior_sample_moments_random_encoder():
    rng = np.random.default_rng(9)
    encoder = _LinearEncoder((2, 3, 1), 2, rng, mean_scale=3.0, log_var_range=(-3.0, 1.0))
    prior = _vamp(2, (2, 3, 1), 4, encoder, rng)
    z = _np(prior.sample(N_SAMPLES, seed=4))
    assert z.shape == (N_SAMPLES, 2)
    _assert_moments(z, *_vamp_params(prior, encoder))


# --------------------------------------------------------------------------------------------------
# VampPrior pseudo-input initialisation and trainability
# --------------------------------------------------------------------------------------------------


def _training_images(n, image_shape, seed=0):
    return np.random.default_rng(seed).uniform(0.0, 1.0, size=(n, *image_shape)).astype(np.float32)


def test_vampprior_training_data_init_uses_noisy_distinct_training_images():
    images = _training_images(40, (3, 3, 1))
    prior = VampPrior(2, (3, 3, 1), 8, init="training_data", trainable=False)
    prior.build((None, 2))
    prior.initialize_from_data(images, seed=0)
    u = _np(prior.pseudo_inputs)
    dist = np.abs(u[:, None] - images[None]).reshape(8, 40, -1).max(-1)  # [K, N] max-abs distance
    nearest = dist.argmin(1)
    assert len(set(nearest.tolist())) == 8  # K distinct training images
    residual = u - images[nearest]
    assert np.abs(residual).max() < 0.06  # N(0, 0.01) noise: 6 sigma
    assert 0.006 < residual.std() < 0.014
    assert np.abs(residual).max() > 1e-4  # noise was added
    # reproducible for a seed, different for another
    other = VampPrior(2, (3, 3, 1), 8, init="training_data", trainable=False)
    other.build((None, 2))
    other.initialize_from_data(images, seed=0)
    np.testing.assert_array_equal(_np(other.pseudo_inputs), u)
    other.initialize_from_data(images, seed=1)
    assert np.abs(_np(other.pseudo_inputs) - u).max() > 0.1


def test_vampprior_training_data_init_needs_enough_images():
    prior = VampPrior(2, (2, 2, 1), 10, init="training_data")
    prior.build((None, 2))
    with pytest.raises(ValueError, match="components"):
        prior.initialize_from_data(_training_images(5, (2, 2, 1)), seed=0)


def test_vampprior_random_init_ignores_data():
    prior = VampPrior(2, (4, 4, 1), 50, init="random", pseudo_inputs_mean=0.05, pseudo_inputs_std=0.01)
    prior.build((None, 2))
    before = _np(prior.pseudo_inputs)
    assert before.shape == (50, 4, 4, 1)
    assert abs(before.mean() - 0.05) < 0.002 and abs(before.std() - 0.01) < 0.001
    prior.initialize_from_data(_training_images(60, (4, 4, 1)), seed=0)
    np.testing.assert_array_equal(_np(prior.pseudo_inputs), before)


@pytest.mark.parametrize("trainable", [True, False])
def test_vampprior_pseudo_inputs_trainability(trainable):
    prior = VampPrior(2, (2, 2, 1), 3, init="training_data", trainable=trainable)
    prior.build((None, 2))
    assert (id(prior.pseudo_inputs) in {id(v) for v in prior.trainable_weights}) is trainable
    assert (id(prior.pseudo_inputs) in {id(v) for v in prior.non_trainable_weights}) is (not trainable)
    assert prior.num_components == 3


# --------------------------------------------------------------------------------------------------
# registry and configs
# --------------------------------------------------------------------------------------------------


def _build_prior(options, latent_dim, image_shape):
    return PRIORS.build(options, latent_dim=latent_dim, image_shape=image_shape, name="prior")


def test_build_prior_standard_normal():
    prior = _build_prior(PRIORS.options("standard_normal"), 6, (28, 28, 1))
    assert isinstance(prior, StandardNormal) and prior.latent_dim == 6
    prior.build((None, 6))
    assert prior.weights == []


@pytest.mark.parametrize("learn_weights", [False, True])
def test_build_prior_mog(learn_weights):
    prior = _build_prior(PRIORS.options("mog", components=7, learn_weights=learn_weights), 5, (28, 28, 1))
    assert isinstance(prior, MixtureOfGaussians)
    assert prior.latent_dim == 5 and prior.components == 7 and prior.learn_weights is learn_weights
    prior.build((None, 5))
    assert tuple(prior.means.shape) == (7, 5)
    assert (id(prior.logits) in {id(v) for v in prior.trainable_weights}) is learn_weights


@pytest.mark.parametrize("init,trainable", [("random", True), ("training_data", False)])
def test_build_prior_vampprior(init, trainable):
    config = PRIORS.options("vampprior", components=30, init=init, pseudo_inputs_mean=0.4,
                            pseudo_inputs_std=0.05, trainable=trainable)
    prior = _build_prior(config, 4, (4, 4, 1))
    assert isinstance(prior, VampPrior)
    assert prior.latent_dim == 4 and prior.components == 30 and prior.image_shape == (4, 4, 1)
    assert prior.init == init
    prior.build((None, 4))
    u = _np(prior.pseudo_inputs)
    assert u.shape == (30, 4, 4, 1)
    assert abs(u.mean() - 0.4) < 0.01 and abs(u.std() - 0.05) < 0.005  # uses the configured N(mean, std)
    assert (id(prior.pseudo_inputs) in {id(v) for v in prior.trainable_weights}) is trainable


def test_build_prior_rejects_unknown_name():
    with pytest.raises(KeyError, match="'not_a_prior' is not a registered prior.*vampprior"):
        PRIORS["not_a_prior"]
