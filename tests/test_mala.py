"""The MALA sampler of `layers.mala` under the active backend.

Oracles: an independent float64 NumPy density and proposal density, never the module retyped:
- detailed balance of the acceptance rule on the non-Gaussian 1-D target p(z) ~ exp(-z^4 / 4):
  p(z) q(z'|z) alpha(z -> z') = p(z') q(z|z') alpha(z' -> z) on a grid of pairs, with alpha = min(1, exp(r))
  from the module's log acceptance ratio r and q the Gaussian N(z - a z^3, 2a) written with SciPy;
- one transition (`mala_step`) with given noise and uniforms: the Langevin proposal and the direction of
  the accept test, and the rejection of a non-finite proposal;
- 400 chains started at (8, -8) on a correlated 2-D Gaussian reach its mean and covariance within
  Monte-Carlo tolerance;
- reproducibility from an integer seed, the acceptance rate, the compiled function (tf.function /
  jax.jit through `zoo.compiled.backend_function`) against eager, and the stop-gradient.
Budget: ~10-20 s per backend on 2 CPU cores."""

import keras
import numpy as np
import pytest
from keras import ops
from scipy.stats import multivariate_normal, norm

from layers.autodiff import BACKEND, gradients, tracked_state
from layers.mala import log_acceptance_ratio, mala, mala_step
from tests.helpers import _f32, _np, _t
from zoo.compiled import backend_function


def quartic(z):
    """U(z) = sum z^4 / 4 (1-D target p ~ exp(-z^4/4), grad U = z^3)."""
    return 0.25 * ops.sum(z**4, axis=-1)


MEAN = np.array([1.0, -2.0])
COV = np.array([[1.0, 0.6], [0.6, 0.5]])


class GaussianTarget(keras.layers.Layer):
    """U(z) = (z - m)^T P (z - m) / 2 with the mean m a weight (so a compiled function reads a variable)."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.mean = self.add_weight(name="mean", shape=(2,), initializer=keras.initializers.Constant(MEAN))
        self.precision = ops.convert_to_tensor(np.linalg.inv(COV).astype(np.float32))
        self.built = True

    def call(self, z):
        e = z - self.mean
        return 0.5 * ops.sum(ops.matmul(e, self.precision) * e, axis=-1)


def far_start(n):
    return _t(np.tile([8.0, -8.0], (n, 1)))


def test_the_acceptance_rule_satisfies_detailed_balance_on_a_quartic_target():
    step = 0.3
    grid = np.linspace(-1.6, 1.6, 15)
    z, z_new = (g.reshape(-1, 1) for g in np.meshgrid(grid, grid))
    forward = _np(log_acceptance_ratio(quartic, _t(z), _t(z_new), step))
    backward = _np(log_acceptance_ratio(quartic, _t(z_new), _t(z), step))
    z, z_new = _f32(z)[:, 0], _f32(z_new)[:, 0]
    log_p = lambda x: -(x**4) / 4  # noqa: E731  (unnormalised: the constant is on both sides)
    log_q = lambda b, a: norm.logpdf(b, a - step * a**3, np.sqrt(2 * step))  # noqa: E731
    left = log_p(z) + log_q(z_new, z) + np.minimum(0.0, forward)
    right = log_p(z_new) + log_q(z, z_new) + np.minimum(0.0, backward)
    np.testing.assert_allclose(left, right, atol=2e-4)
    # not trivially balanced: some moves are rejected with positive probability
    assert (forward < -0.1).sum() > 20


def test_one_transition_is_the_langevin_proposal_and_the_metropolis_test():
    step = 0.6
    z = np.linspace(-1.8, 1.8, 40).reshape(-1, 1).astype(np.float32)
    noise = np.random.default_rng(1).normal(size=z.shape).astype(np.float32)
    zf = _f32(z)[:, 0]
    proposal = zf - step * zf**3 + np.sqrt(2 * step) * _f32(noise)[:, 0]
    log_r = (zf**4 / 4 - proposal**4 / 4
             + norm.logpdf(zf, proposal - step * proposal**3, np.sqrt(2 * step))
             - norm.logpdf(proposal, zf - step * zf**3, np.sqrt(2 * step)))
    alpha = np.minimum(1.0, np.exp(log_r))
    clear = (alpha < 0.95) | (log_r > 0.05)  # away from the threshold (float32 rounding)
    assert (alpha < 0.95).sum() >= 8 and (log_r > 0.05).sum() >= 4
    # u just below alpha: every move accepted; just above: only the moves with alpha = 1
    for u, expect in ((0.98 * alpha, np.ones_like(alpha)), (np.minimum(1.02 * alpha, 0.999), (log_r > 0).astype(float))):
        z_next, accepted, (u_next, g_next) = mala_step(quartic, _t(z), step, _t(noise), _t(u))
        np.testing.assert_array_equal(_np(accepted)[clear], expect[clear])
        kept = np.where(_np(accepted) > 0, proposal, zf)
        np.testing.assert_allclose(_np(z_next)[:, 0], kept, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(_np(u_next), kept**4 / 4, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(_np(g_next)[:, 0], kept**3, rtol=1e-4, atol=1e-5)


def test_a_non_finite_proposal_is_rejected():
    z = np.array([[0.5], [0.2]], np.float32)
    noise = np.array([[np.inf], [0.1]], np.float32)
    z_next, accepted, (u_next, _) = mala_step(quartic, _t(z), 0.1, _t(noise), _t(np.zeros(2)))
    # u = 0: log u = -inf accepts every finite proposal; the infinite one is refused
    np.testing.assert_array_equal(_np(accepted), [0.0, 1.0])
    assert np.isfinite(_np(z_next)).all() and np.isfinite(_np(u_next)).all()
    np.testing.assert_array_equal(_np(z_next)[0], z[0])
    # a proposal whose energy overflows to inf (or NaN) is refused as well
    exploding = lambda x: ops.where(x[:, 0] > 1.0, np.float32(np.nan), quartic(x))  # noqa: E731
    z_next, accepted, _ = mala_step(exploding, _t(z), 0.1, _t([[20.0], [0.1]]), _t(np.zeros(2)))
    np.testing.assert_array_equal(_np(accepted), [0.0, 1.0])


def test_chains_from_far_away_reach_a_correlated_gaussian():
    n = 400
    target = GaussianTarget()
    z, rate = mala(target, far_start(n), 0.05, 600, seed=4)
    z = _np(z)
    se_mean = np.sqrt(np.diag(COV) / n)
    assert np.all(np.abs(z.mean(0) - MEAN) < 4.5 * se_mean), (z.mean(0), MEAN)
    cov = np.cov(z.T)
    se_cov = np.sqrt((np.outer(np.diag(COV), np.diag(COV)) + COV**2) / n)
    assert np.all(np.abs(cov - COV) < 4.5 * se_cov), (cov, COV)
    # the target's density is the right one: the samples' mean log density is that of exact samples
    exact = multivariate_normal(MEAN, COV)
    assert abs(exact.logpdf(z).mean() - (-exact.entropy())) < 4.5 * np.sqrt(0.5 * 2 / n)
    assert 0.5 < float(_np(rate)) <= 1.0


def test_the_seed_fixes_the_chain_and_a_large_step_lowers_the_acceptance():
    target = GaussianTarget()
    start = _t(np.random.default_rng(2).normal(size=(64, 2)))
    first, rate = mala(target, start, 0.05, 30, seed=7)
    again, rate_again = mala(target, start, 0.05, 30, seed=7)
    other, _ = mala(target, start, 0.05, 30, seed=8)
    np.testing.assert_array_equal(_np(first), _np(again))
    assert float(_np(rate)) == float(_np(rate_again))
    assert not np.allclose(_np(first), _np(other))
    assert 0.0 < float(_np(rate)) <= 1.0
    _, big_rate = mala(target, start, 1.0, 30, seed=7)
    assert 0.0 <= float(_np(big_rate)) < float(_np(rate)) - 0.3
    # a SeedGenerator advances between calls
    generator = keras.random.SeedGenerator(3)
    a, _ = mala(target, start, 0.05, 5, seed=generator)
    b, _ = mala(target, start, 0.05, 5, seed=generator)
    assert not np.allclose(_np(a), _np(b))
    # no steps: the start and no rejection
    same, ones = mala(target, start, 0.05, 0, seed=7)
    np.testing.assert_array_equal(_np(same), _np(start))
    assert float(_np(ones)) == 1.0


def test_compiled_sampler_matches_eager():
    """tf.function on TensorFlow, jax.jit on JAX (eager without autograd on PyTorch), reading a variable."""
    target = GaussianTarget()
    start = far_start(16)
    compiled = backend_function(target, lambda z0: mala(target, z0, 0.05, 40, seed=9))
    if BACKEND == "tensorflow":
        import tensorflow as tf

        assert isinstance(compiled, tf.types.experimental.PolymorphicFunction)
    z_compiled, rate_compiled = compiled(start)
    z_eager, rate_eager = mala(target, start, 0.05, 40, seed=9)
    np.testing.assert_allclose(_np(z_compiled), _np(z_eager), rtol=1e-5, atol=1e-5)
    assert abs(float(_np(rate_compiled)) - float(_np(rate_eager))) < 1e-6
    # the traced function reads the variable: shifting the mean and the start shifts the chains (the
    # Gaussian target is translation-equivariant, same draws)
    target.mean.assign(MEAN + 1.0)
    z_moved, _ = compiled(start + 1.0)
    np.testing.assert_allclose(_np(z_moved) - _np(z_compiled), 1.0, atol=1e-3)


def test_the_sampler_is_stop_gradiented():
    """No gradient flows from the samples to the energy's weights or to the start (VAEPP detaches MALA)."""
    target = GaussianTarget()
    start = keras.Variable(far_start(8), name="start")
    variables = [target.mean, start]

    def loss():
        z, _ = mala(target, start.value, 0.05, 3, seed=1)
        # + 0 * ...: keeps the variables in the graph, so a detached sampler gives exact zeros
        return ops.sum(z) + 0.0 * (ops.sum(target.mean) + ops.sum(start.value)), {}

    if BACKEND == "jax":
        with tracked_state(variables, [v.value for v in variables]):
            _, _, grads = gradients(loss, variables)
    else:
        _, _, grads = gradients(loss, variables)
    for g in grads:
        np.testing.assert_array_equal(_np(g), 0.0)
