"""ByPE-VAE: the pseudocoreset prior and its coreset update.

The estimator is checked three ways: against the direct [M, S, D] computation it avoids, against the
exact KL gradient of a linear-Gaussian model where both "posteriors" of paper Eq. 15-16 are Gaussian in
closed form, and by coreset steps that must decrease that exact KL.
"""

import json

import numpy as np
import pytest
import tensorflow_probability as tfp
from keras import ops

from layers.priors.pseudocoreset import PseudocoresetPrior
from tests.helpers import _np, _t
from tests.test_fit import digits_config, history
from training import fit
from training.procedures import coreset

tfd = tfp.distributions


# --- the estimator against the direct computation ------------------------------------------------------
def direct_gradients(points, weights, data, means, log_var, num_train, centering):
    """Paper Eq. 34-37 literally, with the [M, S, D] gradient tensor (float64 NumPy)."""
    v = np.exp(log_var)
    dim = points.shape[1]

    def potentials(x):
        return -0.5 * (dim * np.log(2 * np.pi * v) + ((x[:, None, :] - means[None]) ** 2).sum(-1) / v)

    f_x, f_u = potentials(data), potentials(points)
    f_x = f_x - f_x.mean(1, keepdims=True)
    f_u = f_u - f_u.mean(1, keepdims=True)
    residual = num_train / len(data) * f_x.sum(0) - weights @ f_u
    grads = (means[None, :, :] - points[:, None, :]) / v  # [M, S, D]
    axis = 2 if centering == "pixels" else 1
    grads = grads - grads.mean(axis, keepdims=True)
    s = means.shape[0]
    grad_w = -(f_u * residual).sum(1) / s
    grad_u = -weights[:, None] * np.einsum("msd,s->md", grads, residual) / s
    return grad_w, grad_u


@pytest.mark.parametrize("centering", ["pixels", "samples"])
@pytest.mark.parametrize("log_var", [0.0, np.log(0.5)])
def test_closed_form_gradients_equal_the_direct_m_s_d_computation(centering, log_var):
    rng = np.random.default_rng(0)
    m, s, d, b, n = 7, 11, 5, 4, 40
    points, data, means = rng.uniform(0, 1, (m, d)), rng.uniform(0, 1, (b, d)), rng.uniform(0, 1, (s, d))
    weights = rng.uniform(2, 8, m)
    expected_w, expected_u = direct_gradients(points, weights, data, means, log_var, n, centering)
    grad_w, grad_u = coreset.coreset_gradients(
        _t(points), _t(weights), _t(data), _t(means), _t(log_var), n, centering)
    np.testing.assert_allclose(_np(grad_w), expected_w, rtol=2e-3, atol=1e-3 * np.abs(expected_w).max())
    np.testing.assert_allclose(_np(grad_u), expected_u, rtol=2e-3, atol=1e-3 * np.abs(expected_u).max())


def test_unknown_centering_is_rejected():
    x = _t(np.ones((2, 3)))
    with pytest.raises(ValueError, match="pixels"):
        coreset.coreset_gradients(x, _t(np.ones(2)), x, x, _t(0.0), 10, "rows")


# --- a linear-Gaussian model with a closed-form KL ------------------------------------------------------
class LinearGaussian:
    """p(x | z) = N(x; A z + c, v I), p0(z) = N(0, I): the posteriors of Eq. 15-16 are Gaussian."""

    def __init__(self, seed=0, latent=2, dim=3, num_data=20, variance=1.0):
        rng = np.random.default_rng(seed)
        self.a = rng.normal(size=(dim, latent))
        self.c = rng.normal(size=dim) * 0.3
        self.v = variance
        self.data = self.a @ rng.normal(size=(latent, num_data)) + self.c[:, None] + rng.normal(size=(dim, num_data)) * np.sqrt(variance)
        self.data = self.data.T  # [N, D]

    def posterior(self, points, weights):
        precision = np.eye(self.a.shape[1]) + weights.sum() * self.a.T @ self.a / self.v
        cov = np.linalg.inv(precision)
        mean = cov @ self.a.T @ ((weights[:, None] * (points - self.c)).sum(0)) / self.v
        return mean, cov

    def kl(self, points, weights):
        """KL(p(z | U, w) || p(z | X)) in closed form."""
        m1, s1 = self.posterior(points, weights)
        m2, s2 = self.posterior(self.data, np.ones(len(self.data)))
        inv2 = np.linalg.inv(s2)
        return 0.5 * (np.trace(inv2 @ s1) + (m2 - m1) @ inv2 @ (m2 - m1) - len(m1)
                      + np.linalg.slogdet(s2)[1] - np.linalg.slogdet(s1)[1])

    def kl_gradient(self, points, weights, h=1e-5):
        """Central finite differences of the closed-form KL (float64)."""
        grad_w, grad_u = np.zeros_like(weights), np.zeros_like(points)
        for i in range(len(weights)):
            e = np.zeros_like(weights)
            e[i] = h
            grad_w[i] = (self.kl(points, weights + e) - self.kl(points, weights - e)) / (2 * h)
        for idx in np.ndindex(*points.shape):
            e = np.zeros_like(points)
            e[idx] = h
            grad_u[idx] = (self.kl(points + e, weights) - self.kl(points - e, weights)) / (2 * h)
        return grad_w, grad_u

    def estimator(self, points, weights, rng, num_samples, centering="samples"):
        mean, cov = self.posterior(points, weights)
        z = rng.multivariate_normal(mean, cov, size=num_samples)
        decoder_means = z @ self.a.T + self.c
        grad_w, grad_u = coreset.coreset_gradients(
            _t(points), _t(weights), _t(self.data), _t(decoder_means), _t(np.log(self.v)), len(self.data), centering)
        return _np(grad_w), _np(grad_u)


def test_estimator_expectation_matches_the_exact_kl_gradient():
    """Averaged over draws (B = N, so only the S prior samples are random), Eq. 34 with the paper's
    centring over samples is the gradient of the exact KL up to the (S - 1) / S factor of a sample
    covariance (measured error 0.3%; tolerance 2% of the gradient norm). The official code's centring
    over pixels is not: its pseudo-point gradient is off by about 15% here."""
    model = LinearGaussian()
    rng = np.random.default_rng(1)
    points = model.data[:4] + rng.normal(size=(4, 3)) * 0.5
    weights = np.array([3.0, 6.0, 4.0, 5.0])
    exact_w, exact_u = model.kl_gradient(points, weights)
    draws = [model.estimator(points, weights, rng, num_samples=2000) for _ in range(40)]
    mean_w = np.mean([g[0] for g in draws], axis=0)
    mean_u = np.mean([g[1] for g in draws], axis=0)
    assert np.linalg.norm(mean_w - exact_w) < 0.02 * np.linalg.norm(exact_w)
    assert np.linalg.norm(mean_u - exact_u) < 0.02 * np.linalg.norm(exact_u)
    pixels = [model.estimator(points, weights, rng, 2000, centering="pixels")[1] for _ in range(40)]
    assert np.linalg.norm(np.mean(pixels, axis=0) - exact_u) > 0.05 * np.linalg.norm(exact_u)


def test_coreset_steps_decrease_the_exact_kl():
    """Projected Adam steps with the ByPE schedule (gamma_j = gamma_0 / (j + 1)) shrink KL(p(z|U,w) || p(z|X))."""
    model = LinearGaussian(seed=3)
    rng = np.random.default_rng(2)
    points = rng.normal(size=(3, 3)) * 2.0
    weights = np.full(3, len(model.data) / 3.0)
    moment1 = np.zeros(3 + 9)
    moment2 = np.zeros(3 + 9)
    start = model.kl(points, weights)
    for j in range(300):
        grad_w, grad_u = model.estimator(points, weights, rng, num_samples=500)
        direction, moment1, moment2 = coreset.adam_direction(
            _t(np.concatenate([grad_w, grad_u.ravel()])), _t(moment1), _t(moment2), _t(float(j % 100)))
        moment1, moment2, direction = _np(moment1), _np(moment2), _np(direction)
        step = 0.5 / (j % 100 + 1.0)  # the restarting schedule with persistent moments, phases of 100 steps
        weights = np.maximum(weights - step * direction[:3], 0.0)
        points = points - step * direction[3:].reshape(points.shape)
    end = model.kl(points, weights)
    assert end < 0.2 * start, (start, end)


# --- the prior layer -------------------------------------------------------------------------------------
def identity_prior(points, weights, num_train, log_var=np.log(0.3)):
    """A 2-d pseudocoreset prior whose encoder mean is the pseudo-point itself."""
    prior = PseudocoresetPrior(2, (1, 2, 1), num_train=num_train, components=len(points))
    prior.attach_encoder(lambda x: (ops.reshape(x, (-1, 2)), ops.zeros((ops.shape(x)[0], 2))))
    prior.build()
    prior.points.assign(np.asarray(points, "float32").reshape(-1, 1, 2, 1))
    prior.point_weights.assign(np.asarray(weights, "float32"))
    prior.log_variance.assign(log_var)
    return prior


def test_log_prob_is_the_centred_weighted_mixture_and_normalises():
    points = np.array([[-2.0, 0.0], [1.0, 1.0], [0.5, -1.5]])
    weights = np.array([10.0, 30.0, 26.0])  # mean 22 != N/M = 20: Algorithm 2 line 2 centres them
    prior = identity_prior(points, weights, num_train=60)
    centred = weights + (60 / 3 - weights.mean())
    oracle = tfd.MixtureSameFamily(tfd.Categorical(probs=centred / 60),
                                   tfd.Independent(tfd.Normal(points, np.sqrt(0.3)), 1))
    z = np.random.default_rng(0).normal(size=(50, 2)) * 2
    np.testing.assert_allclose(_np(prior.log_prob(_t(z))), oracle.log_prob(z).numpy(), rtol=1e-5, atol=1e-5)
    grid = np.linspace(-7, 7, 281)
    zz = np.stack(np.meshgrid(grid, grid), -1).reshape(-1, 2)
    mass = np.exp(_np(prior.log_prob(_t(zz)))).sum() * (grid[1] - grid[0]) ** 2
    assert abs(mass - 1.0) < 1e-3


def test_negative_centred_weights_switch_a_component_off_without_nan():
    prior = identity_prior([[0.0, 0.0], [3.0, 3.0]], [0.0, 100.0], num_train=10)  # w~ = [-45, 55] -> [0, 55]
    log_w = _np(prior.component_log_weights())
    assert log_w[0] == -np.inf and log_w[1] == pytest.approx(0.0, abs=1e-6)
    assert np.all(np.isfinite(_np(prior.log_prob(_t([[0.0, 0.0], [3.0, 3.0]])))))


def test_sampling_frequencies_follow_the_weights():
    points = np.array([[-10.0, 0.0], [0.0, 10.0], [10.0, 0.0], [0.0, -10.0]])
    weights = np.array([10.0, 20.0, 30.0, 40.0])
    prior = identity_prior(points, weights, num_train=100, log_var=np.log(0.01))
    z = _np(prior.sample(20000, seed=3))
    nearest = np.argmin(((z[:, None] - points[None]) ** 2).sum(-1), axis=1)
    freq = np.bincount(nearest, minlength=4) / len(z)
    np.testing.assert_allclose(freq, weights / 100, atol=0.015)
    # each draw is N(u_m, sigma^2 I) around its pseudo-point
    spread = z - points[nearest]
    np.testing.assert_allclose(spread.std(0), [0.1, 0.1], rtol=0.05)
    plate = _np(prior.component_sample(2, 5000, seed=4))
    np.testing.assert_allclose(plate.mean(0), points[2], atol=0.01)


# --- the phase inside fit -------------------------------------------------------------------------------
def bype_config(epochs, interval=2, sets=(), **coreset_options):
    coreset_sets = [f"model.prior.coreset.{key}={value}" for key, value in coreset_options.items()]
    return digits_config(prior="bype", epochs=epochs, sets=[
        "data.preprocessing=continuous", "model.likelihood=squared_error", f"model.prior.coreset.interval={interval}",
        "model.prior.coreset.num_samples=50", *coreset_sets, *sets])


def test_training_runs_coreset_phases_every_k_epochs(tmp_path):
    model, metrics = fit.train(bype_config(epochs=5, interval=2), tmp_path)
    rows = history(tmp_path)
    ran = [float(r["coreset_seconds"]) > 0 for r in rows]
    assert ran == [False, False, True, False, True]  # after epochs 2 and 4, at the start of epochs 3 and 5
    prior = model.prior
    w = _np(prior.point_weights)
    assert np.all(w >= 0) and not np.allclose(w, w[0])  # the weights moved and stayed non-negative
    assert float(rows[-1]["val_loss"]) < float(rows[0]["val_loss"])
    assert np.isfinite(metrics["nll"])
    assert _np(prior.update_count) == pytest.approx(prior.num_train // 100)  # restart schedule: j counts one phase only


def test_resume_across_a_coreset_phase_is_exact(tmp_path):
    straight, split = tmp_path / "straight", tmp_path / "split"
    model_a, _ = fit.train(bype_config(epochs=4, interval=2), straight, run_evaluation=False)
    fit.train(bype_config(epochs=2, interval=2), split, run_evaluation=False)
    model_b, _ = fit.train(bype_config(epochs=4, interval=2), split, resume=True, run_evaluation=False)
    for ra, rb in zip(history(straight), history(split)):
        np.testing.assert_allclose(float(ra["val_loss"]), float(rb["val_loss"]), rtol=1e-5)
    for name in ("points", "point_weights", "moment1", "moment2", "update_count", "log_variance"):
        np.testing.assert_allclose(_np(getattr(model_a.prior, name)), _np(getattr(model_b.prior, name)),
                                   rtol=1e-5, atol=1e-6, err_msg=name)
    assert json.loads((straight / "checkpoint" / "state.json").read_text()) == \
        json.loads((split / "checkpoint" / "state.json").read_text())


def test_likelihood_potential_needs_a_gaussian_likelihood(tmp_path):
    config = bype_config(epochs=3, interval=1, potential="likelihood",
                         sets=["data.preprocessing=dynamic_binarization", "model.likelihood=bernoulli"])
    with pytest.raises(ValueError, match="unit_gaussian"):
        fit.train(config, tmp_path, run_evaluation=False)


@pytest.mark.parametrize("architecture,preprocessing,likelihood", [
    ("hvae", "dynamic_binarization", "bernoulli"), ("conv_hvae", "continuous", "squared_error")])
def test_hierarchical_models_train_with_a_coreset_prior_on_z2(tmp_path, architecture, preprocessing, likelihood):
    config = bype_config(epochs=2, interval=1, steps=3, sets=[
        f"model.architecture={architecture}", f"data.preprocessing={preprocessing}", f"model.likelihood={likelihood}"])
    model, metrics = fit.train(config, tmp_path)
    rows = history(tmp_path)
    assert [float(r["coreset_seconds"]) > 0 for r in rows] == [False, True]
    assert _np(model.prior.update_count) == 3  # `steps` overrides one pass over the data
    assert np.isfinite(metrics["nll"]) and np.all(np.isfinite(_np(model.prior.points)))
    # Algorithm 1: decoded samples have the image shape and lie in the likelihood's range
    images = _np(model.sample(6, seed=1))
    assert images.shape == (6, 8, 8, 1) and images.min() >= 0.0 and images.max() <= 1.0
