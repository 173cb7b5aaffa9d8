"""The log-densities of `layers/distributions.py` against TensorFlow Probability / float64 NumPy.

TFP (on float64 NumPy inputs) is the oracle for the Gaussian, Bernoulli and mixture densities; the
discretised logistic is checked against a float64 NumPy transcription of the reference formula. The
functions under test run in float32 under the active Keras backend.
"""

import numpy as np
import pytest
import tensorflow_probability as tfp
from keras import ops

from layers.distributions import (
    log_bernoulli_logits,
    log_discretized_logistic,
    log_mixture_normal_diag,
    log_normal_diag,
    log_standard_normal,
    softplus,
)
from tests.helpers import _f32, _np, _t

tfd = tfp.distributions


# --------------------------------------------------------------------------------------------------
# Diagonal Gaussian and standard normal
# --------------------------------------------------------------------------------------------------


def _gaussian_inputs(rng, shape):
    x = _f32(rng.normal(size=shape) * 2.0)
    mean = _f32(rng.normal(size=shape))
    log_var = rng.uniform(-6.0, 2.0, size=shape)
    flat = log_var.reshape(-1)
    flat[::3] = -6.0  # the extremes of the encoders' clipped log-variance
    flat[1::3] = 2.0
    return x, mean, _f32(log_var)


def test_log_normal_diag_matches_multivariate_normal_diag():
    rng = np.random.default_rng(0)
    x, mean, log_var = _gaussian_inputs(rng, (64, 7))
    got = _np(log_normal_diag(_t(x), _t(mean), _t(log_var)))
    want = tfd.MultivariateNormalDiag(mean, np.exp(0.5 * log_var)).log_prob(x).numpy()
    assert got.shape == (64,)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-3)


@pytest.mark.parametrize("event_ndims", [0, 1, 3])
def test_log_normal_diag_event_ndims_sums_trailing_axes(event_ndims):
    rng = np.random.default_rng(1)
    x, mean, log_var = _gaussian_inputs(rng, (5, 4, 3, 2))
    got = _np(log_normal_diag(_t(x), _t(mean), _t(log_var), event_ndims=event_ndims))
    elementwise = tfd.Normal(mean, np.exp(0.5 * log_var)).log_prob(x).numpy()
    want = elementwise.sum(axis=tuple(range(-event_ndims, 0))) if event_ndims else elementwise
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-3)


def test_log_normal_diag_extreme_log_variances_exact_values():
    # log_var = -6 (sigma = e^-3) and 2 (sigma = e) at a few offsets, checked against TFP.
    x = np.array([[0.0, 0.05, -0.1, 3.0, -5.0, 10.0]])
    mean = np.zeros_like(x)
    for lv in (-6.0, 2.0):
        log_var = np.full_like(x, lv)
        got = _np(log_normal_diag(_t(x), _t(mean), _t(log_var), event_ndims=0))
        want = tfd.Normal(mean, np.exp(0.5 * log_var)).log_prob(x).numpy()
        assert np.all(np.isfinite(got))
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-4)


def test_log_standard_normal_matches_tfp():
    rng = np.random.default_rng(2)
    z = _f32(rng.normal(size=(50, 6)) * 3.0)
    got = _np(log_standard_normal(_t(z)))
    want = tfd.MultivariateNormalDiag(np.zeros(6), np.ones(6)).log_prob(z).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-4)
    got0 = _np(log_standard_normal(_t(z), event_ndims=0))
    np.testing.assert_allclose(got0, tfd.Normal(0.0, 1.0).log_prob(z).numpy().astype(np.float64), atol=1e-5)


def test_log_standard_normal_equals_log_normal_diag_with_zero_mean_unit_variance():
    rng = np.random.default_rng(3)
    z = rng.normal(size=(10, 4, 4, 1))
    a = _np(log_standard_normal(_t(z), event_ndims=3))
    b = _np(log_normal_diag(_t(z), _t(np.zeros_like(z)), _t(np.zeros_like(z)), event_ndims=3))
    np.testing.assert_allclose(a, b, atol=1e-5)


# --------------------------------------------------------------------------------------------------
# Bernoulli
# --------------------------------------------------------------------------------------------------


def test_log_bernoulli_logits_matches_tfp():
    rng = np.random.default_rng(4)
    x = rng.integers(0, 2, size=(8, 5, 5, 1)).astype(np.float64)
    logits = _f32(rng.normal(size=x.shape) * 4.0)
    got = _np(log_bernoulli_logits(_t(x), _t(logits)))
    want = tfd.Bernoulli(logits=logits, dtype=np.float64).log_prob(x).numpy().sum(axis=(1, 2, 3))
    assert got.shape == (8,)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-4)


def test_log_bernoulli_logits_stable_for_large_logits():
    logits = np.array([50.0, 50.0, -50.0, -50.0, 0.0, 20.0, -20.0, 88.0, -88.0])
    x = np.array([1.0, 0.0, 1.0, 0.0, 1.0, 0.0, 1.0, 1.0, 0.0])
    got = _np(log_bernoulli_logits(_t(x), _t(logits), event_ndims=0))
    want = tfd.Bernoulli(logits=logits, dtype=np.float64).log_prob(x).numpy()
    assert np.all(np.isfinite(got))
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-5)
    # the confident-and-right cases are ~0 nats, the confident-and-wrong ones cost |logit| nats
    np.testing.assert_allclose(got[[0, 3]], [0.0, 0.0], atol=1e-6)
    np.testing.assert_allclose(got[[1, 2]], [-50.0, -50.0], rtol=1e-6)


def test_softplus_is_exact_and_finite_over_the_float32_range():
    a = np.concatenate([np.linspace(-100.0, 100.0, 2001), [-88.7, 88.7, 0.0]]).astype(np.float32)
    got = _np(softplus(_t(a)))
    np.testing.assert_allclose(got, np.logaddexp(0.0, a.astype(np.float64)), rtol=1e-6, atol=1e-7)


def test_image_densities_broadcast_one_image_against_many_samples():
    """The IWAE evaluation scores x [B, 1, H, W, C] against S decodings [B, S, H, W, C]; flattening the
    event axes must not change the broadcast result (a scalar variance included)."""
    rng = np.random.default_rng(7)
    x = rng.integers(0, 2, size=(2, 1, 4, 3, 2)).astype(np.float32)
    params = _f32(rng.normal(size=(2, 5, 4, 3, 2)) * 3.0)
    got = _np(log_bernoulli_logits(_t(x), _t(params)))
    want = np.stack([[_np(log_bernoulli_logits(_t(x[b, 0]), _t(params[b, s]), event_ndims=3)) for s in range(5)]
                     for b in range(2)])
    assert got.shape == (2, 5)
    np.testing.assert_allclose(got, want, rtol=1e-6)
    got = _np(log_normal_diag(_t(x), _t(params), _t(np.float32(-1.0)), event_ndims=3))
    want = tfd.Normal(params.astype(np.float64), np.exp(-0.5)).log_prob(x).numpy().sum(axis=(2, 3, 4))
    np.testing.assert_allclose(got, want, rtol=1e-5)


def test_log_bernoulli_logits_accepts_grey_targets():
    # x * logits - softplus(logits) is the cross-entropy for x in [0, 1] (continuous Bernoulli without
    # its normaliser); check the closed form rather than TFP, which rejects non-binary samples.
    rng = np.random.default_rng(5)
    x = rng.uniform(size=(3, 4))
    logits = rng.normal(size=(3, 4)) * 3
    got = _np(log_bernoulli_logits(_t(x), _t(logits), event_ndims=1))
    want = (x * logits - np.logaddexp(0.0, logits)).sum(-1)
    np.testing.assert_allclose(got, want, atol=1e-5)


# --------------------------------------------------------------------------------------------------
# Discretised logistic (256 bins)
# --------------------------------------------------------------------------------------------------


def _sigmoid(a):
    return 0.5 * (1.0 + np.tanh(0.5 * a))


def _reference_discretized_logistic(x, mean, log_scale, bins=256):
    """The reference formula in float64: floor to the bin's lower edge, CDF difference, log(p + 1e-7)."""
    x0 = np.floor(x * bins) / bins
    s = np.exp(log_scale)
    p = _sigmoid((x0 + 1.0 / bins - mean) / s) - _sigmoid((x0 - mean) / s)
    return np.log(p + 1e-7)


def test_log_discretized_logistic_matches_reference_formula():
    rng = np.random.default_rng(6)
    shape = (16, 6, 6, 1)
    k = rng.integers(0, 256, size=shape)
    u = rng.uniform(0.05, 0.95, size=shape)
    u.reshape(-1)[::4] = 0.0  # exact bin edges k/256 (representable in float32)
    x = _f32((k + u) / 256.0)
    mean = _f32(np.clip(x + rng.normal(size=shape) * 0.05, 1 / 512, 1 - 1 / 512))
    mean.reshape(-1)[::7] = _f32(rng.uniform(1 / 512, 1 - 1 / 512, size=mean.reshape(-1)[::7].shape))
    log_scale = _f32(rng.uniform(-4.5, 0.0, size=shape))
    got = _np(log_discretized_logistic(_t(x), _t(mean), _t(log_scale)))
    want = _reference_discretized_logistic(x, mean, log_scale).sum(axis=(1, 2, 3))
    assert got.shape == (16,)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=5e-3)


def test_log_discretized_logistic_elementwise_including_tails():
    # Per-pixel values (event_ndims=0), including bins far in both tails of the logistic where the
    # CDF difference underflows and the 1e-7 floor dominates, and the 0 and 255 edge bins.
    xs = np.array([0.0, 0.5 / 256, 1.0 / 256, 0.25, 0.5, 0.75, 255.5 / 256, 1.0 - 1e-6])
    means = np.array([1 / 512, 0.5, 1 - 1 / 512, 0.3])
    log_scales = np.array([-4.5, -2.0, 0.0])
    X, M, L = (_f32(a) for a in np.meshgrid(xs, means, log_scales, indexing="ij"))
    got = _np(log_discretized_logistic(_t(X), _t(M), _t(L), event_ndims=0))
    want = _reference_discretized_logistic(X, M, L)
    assert np.all(np.isfinite(got))
    assert got.min() >= np.log(1e-7) - 1e-4  # never below the reference's floor
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=2e-4)


@pytest.mark.parametrize("mean,log_scale", [(0.5, -4.5), (0.3, -4.5), (0.7, -4.0), (0.5, -3.0), (0.1, -1.0),
                                            (1 / 512, 0.0)])
def test_log_discretized_logistic_sums_over_all_bins(mean, log_scale):
    x = _f32((np.arange(256) + 0.5) / 256.0).reshape(256, 1, 1, 1)
    m = np.full_like(x, mean)
    ls = np.full_like(x, log_scale)
    total = float(np.exp(_np(log_discretized_logistic(_t(x), _t(m), _t(ls)))).sum())
    # The bins telescope: sum_k p_k = sigma((1 - mu)/s) - sigma(-mu/s) (no special edge bins, as in the
    # reference), plus the 256 floors of 1e-7.
    s = np.exp(log_scale)
    telescoped = _sigmoid((1.0 - mean) / s) - _sigmoid(-mean / s) + 256e-7
    np.testing.assert_allclose(total, telescoped, atol=1e-5)
    if s < 0.06 and 0.2 <= mean <= 0.8:  # essentially all the logistic mass is inside [0, 1]
        assert abs(total - 1.0) < 2e-4


# --------------------------------------------------------------------------------------------------
# Mixture of diagonal Gaussians
# --------------------------------------------------------------------------------------------------


def _mixture_oracle(z, means, log_vars, logits):
    mix = tfd.MixtureSameFamily(
        tfd.Categorical(logits=logits), tfd.MultivariateNormalDiag(means, np.exp(0.5 * log_vars))
    )
    return mix.log_prob(z).numpy()


def _mixture_case(seed, batch, k, d, log_var_range, z_scale, near_components):
    rng = np.random.default_rng(seed)
    means = _f32(rng.normal(size=(k, d)) * 2.0)
    log_vars = _f32(rng.uniform(*log_var_range, size=(k, d)))
    logits = rng.normal(size=k) * 2.0
    log_weights = _f32(logits - np.log(np.exp(logits).sum()))
    z = rng.normal(size=(batch, d)) * z_scale
    if near_components:  # the first rows sit right next to a component centre
        n = min(batch, k)
        z[:n] = means[:n] + 0.02 * rng.normal(size=(n, d))
    return _f32(z), means, log_vars, log_weights


@pytest.mark.parametrize(
    "seed,batch,k,d,log_var_range,z_scale,near",
    [
        (0, 64, 1, 1, (-6.0, 2.0), 2.0, True),
        (1, 64, 5, 3, (-6.0, 2.0), 2.0, True),
        (2, 64, 5, 3, (-1.0, 1.0), 3.0, False),
        # all components narrow (log_var = -6): z next to a centre, and z between components
        (3, 64, 4, 6, (-6.0, -6.0), 2.0, True),
        # the zoo's sizes (d = 40, encoder log-variances in [-6, 2])
        (4, 64, 50, 40, (-6.0, 2.0), 3.0, True),
    ],
)
def test_log_mixture_normal_diag_matches_mixture_same_family(seed, batch, k, d, log_var_range, z_scale, near):
    z, means, log_vars, log_weights = _mixture_case(seed, batch, k, d, log_var_range, z_scale, near)
    got = _np(log_mixture_normal_diag(_t(z), _t(means), _t(log_vars), _t(log_weights)))
    want = _mixture_oracle(z, means, log_vars, log_weights)
    assert got.shape == (batch,)
    assert np.all(np.isfinite(got))
    # float32 budget of the expanded quadratic z^2/s^2 - 2 z mu/s^2 + mu^2/s^2: a few eps times the
    # magnitude of its terms (a direct (z - mu)^2 / s^2 would not need it)
    terms = (np.abs(z)[:, None, :] + np.abs(means)[None]) ** 2 * np.exp(-log_vars)[None]
    budget = np.finfo(np.float32).eps * terms.sum(-1).max(-1)
    np.testing.assert_array_less(np.abs(got - want), 1e-4 + 1e-5 * np.abs(want) + budget)


def test_log_mixture_normal_diag_far_from_all_components_is_finite_and_correct():
    # Every component density underflows to exactly 0 in float32 and float64 (log p ~ -1e6 .. -1e8);
    # a max-shifted log-sum-exp must still give the right finite value.
    rng = np.random.default_rng(7)
    k, d = 4, 6
    means = _f32(rng.normal(size=(k, d)))
    log_vars = _f32(rng.uniform(-6.0, 0.0, size=(k, d)))
    log_weights = _f32(np.full(k, -np.log(k)))
    z = _f32(np.concatenate([rng.normal(size=(60, d)) * 100.0, np.full((2, d), 50.0), np.full((2, d), -200.0)]))
    got = _np(log_mixture_normal_diag(_t(z), _t(means), _t(log_vars), _t(log_weights)))
    want = _mixture_oracle(z, means, log_vars, log_weights)
    assert np.all(np.isfinite(got))
    assert np.all(want < -1e3)
    np.testing.assert_allclose(got, want, rtol=1e-5)


def test_log_mixture_normal_diag_single_component_equals_log_normal_diag():
    rng = np.random.default_rng(8)
    z = rng.normal(size=(64, 1)) * 3
    mean = rng.normal(size=(1, 1))
    log_var = rng.uniform(-3, 1, size=(1, 1))
    got = _np(log_mixture_normal_diag(_t(z), _t(mean), _t(log_var), _t(np.zeros(1))))
    want = _np(log_normal_diag(_t(z), _t(np.broadcast_to(mean, z.shape)), _t(np.broadcast_to(log_var, z.shape))))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-4)
