"""SVI refinement and Buffered SVI (Shu et al. 2019, Algorithm 1, Eq. 11-13, 16-19, 24) under the active backend.

The references are closed forms and the paper's equations, never the code under test retyped:
- a linear-Gaussian model, p(z) = N(0, I) (the registered standard_normal prior) and p(x | z) = N(W z + b,
  s^2 I) with orthogonal columns of W, whose marginal N(b, W W^T + s^2 I) and posterior are Gaussian in
  closed form and whose posterior is diagonal, so q(z; lambda) can be exact. Its log-weight gradient is
  closed form too, so the SVI steps (Algorithm 1 line 9 with Appendix D's momentum and clipping) and a
  whole compiled train step (phi on l_0, theta on l_k or the BSVI bound) are checked against float64 NumPy;
- Theorem 1 (the BSVI bound is below log p(x)), Eq. 13 (pi one-hot on k gives the SVI bound; optimising
  pi, a concave problem, only tightens it; its optimum is computed independently by the EM fixed point
  pi_i <- mean_b r_bi), Lemma 1 / Eq. 16 (the theta-gradient is sum_i r_i grad log p(x, z_i) with
  r_i = pi_i w_i / sum_j pi_j w_j) and Eq. 24 (BSVI-SIR's resampled gradient has that expectation);
- the training procedures as `training.fit` runs them on the digits (history columns, the buffer weights
  saved and reloaded, exact resumption), the compiled inner loop (one while/scan whatever k), the
  config check, and the BSVI-500 evaluation against the closed form and against IWAE-1000.

Gradients outside a train step go through `layers.autodiff.gradients`, on JAX inside `tracked_state`
(`grads_of`). Budget: ~45 s (TensorFlow), ~90 s (JAX), ~30 s (PyTorch) on 2 CPU cores; the resume check
(three short runs) is marked slow."""

import json
import math

import keras
import numpy as np
import pytest
from keras import ops
from scipy.stats import multivariate_normal, norm

from layers.autodiff import BACKEND, gradients, tracked_state
from layers.buffer_weights import BufferWeights
from layers.distributions import LOG_2PI, log_normal_diag
from layers.priors import PRIORS
from tests.helpers import _f32, _np, _t
from tests.test_fit import digits_config, history
from training import checkpoints, config as config_lib, data as data_lib, fit
from evaluation import density, refinement
from training.procedures import PROCEDURES
from zoo import svi
from zoo.base import LatentVariableModel, build_model
from zoo.compiled import backend_function

# --------------------------------------------------------------------------------------------------
# The linear-Gaussian model and its closed forms
# --------------------------------------------------------------------------------------------------

LATENT, DATA = 2, 3
# orthogonal columns, so W^T W (and the posterior covariance (I + W^T W / s^2)^-1) is diagonal
W_INIT = (np.linalg.qr(np.random.default_rng(0).normal(size=(DATA, LATENT)))[0] * [1.5, 0.8]).astype(np.float32)
B_INIT = np.array([0.3, -0.2, 0.5], np.float32)
S_INIT = 0.7


class LinearGaussian(LatentVariableModel):
    """p(z) = N(0, I), p(x | z) = N(W z + b, s^2 I); q(z | x) = N(A x + c, diag exp(v)) (a linear encoder)."""

    def __init__(self, seed=0, **kwargs):
        prior = PRIORS.build(PRIORS.options("standard_normal"), latent_dim=LATENT, name="prior")
        super().__init__((DATA,), LATENT, likelihood=None, prior=prior, hidden_units=1, seed=seed, **kwargs)
        const = keras.initializers.Constant
        self.W = self.add_weight(name="W", shape=(DATA, LATENT), initializer=const(W_INIT))
        self.b = self.add_weight(name="b", shape=(DATA,), initializer=const(B_INIT))
        self.log_s = self.add_weight(name="log_s", shape=(), initializer=const(math.log(S_INIT)))
        self.enc_A = self.add_weight(name="encoder_A", shape=(DATA, LATENT), initializer=const(0.3))
        self.enc_c = self.add_weight(name="encoder_c", shape=(LATENT,), initializer=const(0.5))
        self.enc_v = self.add_weight(name="encoder_v", shape=(LATENT,), initializer=const(-0.5))
        self.prior.build((None, LATENT))
        self.built = True

    def encode(self, x):
        mean = ops.matmul(x, self.enc_A) + self.enc_c
        return mean, ops.zeros_like(mean) + self.enc_v

    def conditional_log_prob(self, x, z):
        return log_normal_diag(x, ops.matmul(z, ops.transpose(self.W)) + self.b, 2.0 * self.log_s)

    def inference_variables(self):
        return [self.enc_A, self.enc_c, self.enc_v]

    def theta(self):
        return [self.W, self.b, self.log_s]


def decoder_params(model):
    return _np(model.W), _np(model.b), float(np.exp(_np(model.log_s)))


def exact_log_px(model, x):
    """log N(x; b, W W^T + s^2 I) per row (float64)."""
    W, b, s = decoder_params(model)
    return multivariate_normal(b, W @ W.T + s**2 * np.eye(DATA)).logpdf(np.asarray(x, np.float64))


def exact_posterior(model, x):
    """Mean [B, d] and log-variance [d] of p(z | x); the covariance is diagonal by construction."""
    W, b, s = decoder_params(model)
    cov = np.linalg.inv(np.eye(LATENT) + W.T @ W / s**2)
    assert abs(cov[0, 1]) < 1e-6 * cov[0, 0]
    return (np.asarray(x, np.float64) - b) @ W @ cov.T / s**2, np.log(np.diag(cov))


def log_weight_parts(model, x, z, mean, log_var):
    """(log p(x | z), log p(z) - log q(z; mean, log_var)) by SciPy (float64), on the last axis."""
    W, b, s = decoder_params(model)
    log_px = norm.logpdf(x, z @ W.T + b, s).sum(-1)
    return log_px, norm.logpdf(z).sum(-1) - norm.logpdf(z, mean, np.exp(0.5 * log_var)).sum(-1)


def per_index_gradients(model, x, z):
    """grad_theta log p(x, z) for theta = (W, b, log s), flattened: [..., D d + D + 1] (float64)."""
    W, b, s = decoder_params(model)
    e = x - z @ W.T - b  # [..., D]
    g_W = e[..., :, None] * z[..., None, :] / s**2
    g_log_s = np.sum(e**2 / s**2 - 1.0, axis=-1, keepdims=True)
    return np.concatenate([g_W.reshape(*e.shape[:-1], -1), e / s**2, g_log_s], axis=-1)


def flat(grads):
    return np.concatenate([_np(g).ravel() for g in grads])


def grads_of(state, loss_fn, variables):
    """`layers.autodiff.gradients` as a train step calls it: on JAX inside `tracked_state` over `state` (every
    variable the loss reads), with the advanced seed-generator state written back so later draws are fresh."""
    if BACKEND != "jax":
        return gradients(loss_fn, variables)
    state = list(state)
    with tracked_state(state, [v.value for v in state]) as scope:
        out = gradients(loss_fn, variables)
    for v in state:
        v.assign(scope.get_current_value(v))
    return out


def trajectory_and_weights(model, x, mean0, log_var0, noise, options, kl_weight=1.0):
    """The compiled refine (as a train step runs it) on k = len(noise) - 1 steps, and the k + 1 log-weights
    at beta = 1: refine's l_0..l_{k-1} and l_k scored by `score` at lambda_k with noise[k]."""
    k = len(noise) - 1

    def fn(x_, m_, lv_, eps):
        trajectory = svi.refine(model, x_, m_, lv_, eps[:k], model.prior.density(), options, kl_weight=kl_weight)
        last_px, last_ratio = svi.score(model, x_, trajectory.means[k:], trajectory.log_vars[k:], eps[k:],
                                        model.prior.density())
        log_w = ops.concatenate([trajectory.log_px + trajectory.log_ratio, last_px + last_ratio], axis=0)
        return trajectory, log_w

    trajectory, log_w = backend_function(model, fn)(*(_t(a) for a in (x, mean0, log_var0, noise)))
    return trajectory, _np(log_w)


def repeated(x_row, n):
    return np.repeat(np.asarray(x_row, np.float32)[None], n, axis=0)


X4 = np.array([[0.9, -1.1, 0.4], [-0.5, 0.8, 1.6], [2.0, 0.1, -0.7], [0.2, 0.3, 0.1]], np.float32)


def noise_of(k, batch, seed):
    return np.random.default_rng(seed).normal(size=(k, batch, LATENT)).astype(np.float32)


# --------------------------------------------------------------------------------------------------
# 1. The SVI steps, the bounds and the gradients on the linear Gaussian
# --------------------------------------------------------------------------------------------------


def log_weight_gradient(model, x, m, lv, eps, estimator, kl_weight):
    """d l / d (mean, log_var) of l = log p(x | z) + beta (log p(z) - log q(z; lambda)) at z = m + sigma eps,
    in closed form: with g_z = W^T (x - W z - b) / s^2 - beta z, total: (g_z, g_z sigma eps / 2 + beta / 2);
    path (log q's parameters held): (g_z + beta eps / sigma, (g_z + beta eps / sigma) sigma eps / 2)."""
    W, b, s = decoder_params(model)
    sigma = np.exp(0.5 * lv)
    z = m + sigma * eps
    g_z = (x - z @ W.T - b) @ W / s**2 - kl_weight * z
    if estimator == "path":
        g_z = g_z + kl_weight * eps / sigma
        return np.concatenate([g_z, 0.5 * g_z * sigma * eps], axis=-1)
    return np.concatenate([g_z, 0.5 * g_z * sigma * eps + 0.5 * kl_weight], axis=-1)


def numpy_svi(model, x, mean0, log_var0, noise, options, kl_weight=1.0):
    """Algorithm 1 lines 5-11 with Appendix D's step in float64: v_{i+1} = mu v_i + clip(g_i), lambda_{i+1} =
    lambda_i + eta v_{i+1}; batch_mean divides g by B and clips the whole [B, 2d] tensor, per_example clips
    each row. Returns the means, log-variances [k + 1, B, d] and whether each row's step was clipped."""
    m, lv, v = _f32(mean0), _f32(log_var0), np.zeros((len(x), 2 * LATENT))
    means, log_vars, clipped = [m], [lv], []
    for eps in noise:
        g = log_weight_gradient(model, _f32(x), m, lv, _f32(eps), options.estimator, kl_weight)
        if options.gradient == "batch_mean":
            g = g / len(x)
            norms = np.full((len(x), 1), np.sqrt(np.sum(g**2)))
        else:
            norms = np.sqrt(np.sum(g**2, axis=-1, keepdims=True))
        if options.clip_norm > 0:
            clipped.append(norms > options.clip_norm)
            g = g * np.minimum(1.0, options.clip_norm / norms)
        v = options.momentum * v + g
        m, lv = m + options.learning_rate * v[:, :LATENT], lv + options.learning_rate * v[:, LATENT:]
        means.append(m)
        log_vars.append(lv)
    return np.array(means), np.array(log_vars), np.concatenate(clipped) if clipped else None


@pytest.mark.parametrize("estimator,gradient,kl_weight", [("total", "batch_mean", 1.0), ("path", "per_example", 1.0),
                                                          ("total", "per_example", 0.5), ("path", "batch_mean", 0.5)])
def test_svi_steps_are_algorithm_1_with_momentum_and_clipping(estimator, gradient, kl_weight):
    """refine's lambda_0..lambda_k are the float64 recursion of Algorithm 1 line 9 with momentum and
    clipping (`numpy_svi`, closed-form gradients), for both estimators, both gradient modes and a KL
    weight; the recorded terms are the unweighted log p(x | z_i) and log p(z_i) - log q(z_i; lambda_i)."""
    model = LinearGaussian()
    k = 6
    options = svi.SVIOptions(learning_rate=0.3, momentum=0.5, clip_norm=3.0 if gradient == "batch_mean" else 4.0,
                             gradient=gradient, estimator=estimator)
    mean0 = np.array([[1.0, -1.0], [0.0, 0.5], [-1.5, 1.0], [0.3, 0.3]], np.float32)
    log_var0 = np.array([[0.5, -1.0], [0.0, 0.2], [1.0, -0.5], [-0.3, 0.0]], np.float32)
    noise = noise_of(k, len(X4), seed=3)
    trajectory = svi.refine(model, _t(X4), _t(mean0), _t(log_var0), _t(noise), model.prior.density(), options,
                            kl_weight=kl_weight)
    means, log_vars, clipped = numpy_svi(model, X4, mean0, log_var0, noise, options, kl_weight)
    assert clipped.any() and not clipped.all(), "the case must exercise both clipped and unclipped steps"
    np.testing.assert_allclose(_np(trajectory.means), means, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(_np(trajectory.log_vars), log_vars, rtol=1e-4, atol=1e-4)
    z = means[:k] + np.exp(0.5 * log_vars[:k]) * _f32(noise)
    log_px, log_ratio = log_weight_parts(model, _f32(X4)[None], z, means[:k], log_vars[:k])
    np.testing.assert_allclose(_np(trajectory.log_px), log_px, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(_np(trajectory.log_ratio), log_ratio, rtol=1e-5, atol=1e-4)


def test_refinement_keeps_no_gradient_history():
    """Algorithm 1's stop-gradient: lambda_0..lambda_k are constants for the encoder's and the decoder's
    gradients (the sum of the trajectory has zero gradient with respect to every weight)."""
    model = LinearGaussian()
    x = _t(X4)

    def loss():
        mean, log_var = model.encode(x)
        trajectory = svi.refine(model, x, mean, log_var, _t(noise_of(3, 4, seed=0)), model.prior.density(),
                                svi.SVIOptions(learning_rate=0.3))
        touch = sum(ops.sum(v) for v in model.trainable_variables)  # so every weight is part of the graph
        return ops.sum(trajectory.means) + ops.sum(trajectory.log_vars) + 0.0 * touch, {}

    _, _, grads = grads_of(model.variables, loss, model.trainable_variables)
    for variable, grad in zip(model.trainable_variables, grads):
        np.testing.assert_array_equal(_np(grad), 0.0, err_msg=variable.path)


@pytest.mark.parametrize("gradient,learning_rate,clip_norm", [("per_example", 0.1, 0.0), ("batch_mean", 0.4, 1.0)])
def test_path_estimator_converges_to_the_exact_posterior(gradient, learning_rate, clip_norm):
    """With "sticking the landing" the step's noise vanishes at q = p(z | x), so SVI from an arbitrary
    lambda_0 reaches the exact posterior mean and log-variance (the posterior is Gaussian and diagonal)."""
    model = LinearGaussian()
    options = svi.SVIOptions(learning_rate=learning_rate, clip_norm=clip_norm, gradient=gradient, estimator="path")
    mean0, log_var0 = np.full((4, LATENT), 2.0, np.float32), np.full((4, LATENT), 1.0, np.float32)
    trajectory, _ = trajectory_and_weights(model, X4, mean0, log_var0, noise_of(201, 4, seed=1), options)
    mean, log_var = exact_posterior(model, _f32(X4))
    assert np.abs(_np(trajectory.means[0]) - mean).max() > 1.0  # lambda_0 is far from the answer
    np.testing.assert_allclose(_np(trajectory.means[-1]), mean, atol=1e-4)
    np.testing.assert_allclose(_np(trajectory.log_vars[-1]), np.broadcast_to(log_var, (4, LATENT)), atol=1e-4)


def test_total_estimator_gets_near_the_exact_posterior():
    """The total gradient (Algorithm 1 line 9) keeps its noise at the optimum: with a small step the
    trajectory fluctuates around the posterior; its mean over the last 200 of 400 steps and 32 chains is
    close to the exact posterior mean and log-variance."""
    model = LinearGaussian()
    options = svi.SVIOptions(learning_rate=0.02, clip_norm=0.0, gradient="per_example", estimator="total")
    x = np.repeat(X4, 8, axis=0)
    start = np.full((len(x), LATENT), 2.0, np.float32), np.full((len(x), LATENT), 1.0, np.float32)
    trajectory, _ = trajectory_and_weights(model, x, *start, noise_of(401, len(x), seed=2), options)
    mean, log_var = exact_posterior(model, _f32(X4))
    means = _np(trajectory.means[-200:]).reshape(200, 4, 8, LATENT).mean(axis=(0, 2))
    log_vars = _np(trajectory.log_vars[-200:]).mean(axis=(0, 1))
    np.testing.assert_allclose(means, mean, atol=0.05)
    np.testing.assert_allclose(log_vars, log_var, atol=0.1)
    final = _np(trajectory.means[-1]).reshape(4, 8, LATENT)
    np.testing.assert_allclose(final, np.repeat(mean[:, None], 8, axis=1), atol=0.8)


def test_bsvi_bound_is_below_log_px_and_tightens_with_k():
    """Theorem 1: E[log (1/(k+1)) sum_i w_i] <= log p(x) over the dependent samples of an SVI trajectory
    (1000 independent chains from a poor lambda_0, per-example steps); more steps tighten it, up to a
    small gap at k = 64."""
    model = LinearGaussian()
    options = svi.SVIOptions(learning_rate=0.05, clip_norm=0.0, gradient="per_example", estimator="total")
    chains = 1000
    x = repeated(X4[0], chains)
    log_px = exact_log_px(model, _f32(X4[:1]))
    mean, _ = exact_posterior(model, _f32(X4[:1]))
    start = repeated(mean[0] + 2.0, chains), np.full((chains, LATENT), 1.0, np.float32)
    expected, errors = [], []
    for k in (1, 4, 16, 64):
        _, log_w = trajectory_and_weights(model, x, *start, noise_of(k + 1, chains, seed=k), options)
        bound = _np(svi.bsvi_bound(_t(log_w), svi.log_buffer_weights(k + 1)))
        assert bound.shape == (chains,) and np.all(np.isfinite(bound))
        expected.append(bound.mean())
        errors.append(bound.std() / math.sqrt(chains))
        assert expected[-1] < log_px + 3 * errors[-1], (k, expected[-1], log_px)
    for i in range(3):
        assert expected[i + 1] > expected[i] + 3 * math.hypot(errors[i], errors[i + 1]), expected
    assert expected[-1] > log_px - 0.2, (expected, log_px)


def test_one_hot_buffer_weights_give_the_svi_bound():
    """Eq. 13: with pi one-hot on k the BSVI bound is the SVI bound l_k (Eq. 12), exactly; the bsvi procedure
    with learned pi at that vertex has the svi procedure's loss and theta-gradient."""
    model = LinearGaussian()
    k, x = 5, X4
    options = svi.SVIOptions(learning_rate=0.5)
    mean0, log_var0 = (_np(t).astype(np.float32) for t in model.encode(_t(x)))
    noise = noise_of(k + 1, len(x), seed=4)
    trajectory, log_w = trajectory_and_weights(model, x, mean0, log_var0, noise, options)
    one_hot = svi.log_buffer_weights(k + 1, _t([-np.inf] * k + [0.0]))
    np.testing.assert_allclose(_np(svi.bsvi_bound(_t(log_w), one_hot)), log_w[-1], rtol=1e-7, atol=0)
    uniform = _np(svi.bsvi_bound(_t(log_w), svi.log_buffer_weights(k + 1)))
    np.testing.assert_allclose(uniform, np.logaddexp.reduce(log_w, axis=0) - math.log(k + 1), rtol=1e-6)

    # the SVI bound at lambda_k, from the closed-form weights
    m_k, lv_k = _np(trajectory.means[k]), _np(trajectory.log_vars[k])
    l_k = np.sum(log_weight_parts(model, _f32(x), m_k + np.exp(0.5 * lv_k) * _f32(noise[k]), m_k, lv_k), axis=0)
    np.testing.assert_allclose(log_w[-1], l_k, rtol=1e-5, atol=1e-4)

    data = {"image": _t(x)}
    svi_procedure = PROCEDURES.build(PROCEDURES.options("svi", steps=k, **vars(options)))
    bsvi_procedure = PROCEDURES.build(PROCEDURES.options("bsvi_pi", steps=k, **vars(options)))
    bsvi_procedure.attach(model)
    model.procedure_state.logits.assign(np.array([-1e4] * k + [0.0], np.float32))
    results = [grads_of(model.variables, lambda p=p: p.theta_loss(model, data, trajectory, _t(noise)), model.theta())
               for p in (svi_procedure, bsvi_procedure)]
    (svi_loss, svi_logs, svi_grads), (bsvi_loss, _, bsvi_grads) = results
    np.testing.assert_allclose(float(_np(svi_loss)), -l_k.mean(), rtol=1e-5)
    np.testing.assert_allclose(float(_np(bsvi_loss)), float(_np(svi_loss)), rtol=1e-6)
    np.testing.assert_allclose(flat(bsvi_grads), flat(svi_grads), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(_np(svi_logs["log_w"]), log_w, rtol=1e-6, atol=1e-5)


def reference_bsvi_loss(model, x, trajectory, noise, log_pi, kl_weight):
    """-mean_b log sum_i pi_i p(x, z_i) / q(z_i; lambda_i) (Eq. 11) written out: z_i = m_i + sigma_i eps_i, p(x | z) =
    N(W z + b, s^2 I), p(z) = N(0, I), q = N(m_i, diag sigma_i^2), beta on log p(z) - log q as in warm-up."""
    z = trajectory.means + ops.exp(0.5 * trajectory.log_vars) * noise  # [k + 1, B, d]
    residual = x[None] - ops.einsum("ibd,nd->ibn", z, model.W) - model.b
    log_px = -0.5 * ops.sum(LOG_2PI + 2.0 * model.log_s + ops.square(residual) * ops.exp(-2.0 * model.log_s), axis=-1)
    log_pz = -0.5 * ops.sum(LOG_2PI + ops.square(z), axis=-1)
    log_q = -0.5 * ops.sum(LOG_2PI + trajectory.log_vars + ops.square(noise), axis=-1)
    log_w = log_px + kl_weight * (log_pz - log_q) + log_pi[:, None]
    return -ops.mean(ops.logsumexp(log_w, axis=0))


@pytest.mark.parametrize("learn_weights,kl_weight", [(False, 1.0), (True, 1.0), (True, 0.5)])
def test_bsvi_theta_gradient_is_the_gradient_of_eq_11(learn_weights, kl_weight):
    """The bsvi procedure's theta-objective on a trajectory from refine has the autodiff gradient of Eq. 11
    written out, and (Lemma 1, Eq. 16) the closed form -mean_b sum_i r_bi grad log p(x, z_bi); with learned
    pi its logits' gradient is the softmax closed form -mean_b (r_b - pi)."""
    model = LinearGaussian()
    model.kl_weight.assign(kl_weight)
    k, x = 4, X4
    procedure = PROCEDURES.build(PROCEDURES.options("bsvi", steps=k, learn_weights=learn_weights))
    procedure.attach(model)
    variables = model.theta()
    if learn_weights:
        model.procedure_state.logits.assign(np.array([0.5, -1.0, 0.0, 1.0, 0.3], np.float32))
        variables = variables + [model.procedure_state.logits]
    options = svi.SVIOptions(learning_rate=0.5)
    mean0, log_var0 = (_np(t).astype(np.float32) for t in model.encode(_t(x)))
    noise = noise_of(k + 1, len(x), seed=5)
    trajectory, _ = trajectory_and_weights(model, x, mean0, log_var0, noise, options, kl_weight=kl_weight)
    data = {"image": _t(x)}
    loss, logs, grads = grads_of(model.variables, lambda: procedure.theta_loss(model, data, trajectory, _t(noise)),
                                 variables)

    log_pi_value = _np(procedure.log_pi(model))
    ref_loss, _, ref_grads = grads_of(
        model.variables,
        lambda: (reference_bsvi_loss(model, _t(x), trajectory, _t(noise), procedure.log_pi(model), kl_weight), {}),
        variables)
    np.testing.assert_allclose(float(_np(loss)), float(_np(ref_loss)), rtol=1e-6)
    np.testing.assert_allclose(flat(grads), flat(ref_grads), rtol=1e-5, atol=1e-6)

    # Lemma 1 in float64: r_bi = pi_i w_bi / sum_j pi_j w_bj (w at beta), theta-gradient sum_i r_bi grad log p(x, z_bi)
    means, log_vars = _np(trajectory.means), _np(trajectory.log_vars)
    z = means + np.exp(0.5 * log_vars) * _f32(noise)
    log_px, log_ratio = log_weight_parts(model, _f32(x)[None], z, means, log_vars)
    np.testing.assert_allclose(_np(logs["log_w"]), log_px + log_ratio, rtol=1e-5, atol=1e-4)
    log_r = log_px + kl_weight * log_ratio + log_pi_value[:, None]
    r = np.exp(log_r - np.logaddexp.reduce(log_r, axis=0))  # [k + 1, B]
    np.testing.assert_allclose(float(_np(loss)), -np.mean(np.logaddexp.reduce(log_r, axis=0)), rtol=1e-5)
    lemma_1 = -np.mean(np.einsum("ib,ibp->bp", r, per_index_gradients(model, _f32(x)[None], z)), axis=0)
    np.testing.assert_allclose(flat(grads[:3]), lemma_1, rtol=1e-4, atol=1e-5)
    if learn_weights:
        np.testing.assert_allclose(_np(grads[3]), -(r.mean(axis=1) - np.exp(log_pi_value)), rtol=1e-4, atol=1e-6)


def test_bsvi_sir_gradient_is_unbiased_for_the_bsvi_gradient():
    """Eq. 24 / Lemma 1: the mean of BSVI-SIR's theta-gradient over 20 x 50 resampled indices per image,
    i ~ Cat(pi_i w_i / sum_j pi_j w_j) with a non-uniform learned pi, is the exact BSVI gradient (the bsvi
    procedure's) within 4.5 standard errors of the resampling (computed in closed form from the per-index
    gradients); pi's gradient and the logged loss are the exact ones (the negative BSVI bound)."""
    model = LinearGaussian()
    k, m, calls, x = 4, 50, 20, X4
    sir = PROCEDURES.build(PROCEDURES.options("bsvi_sir", steps=k, learn_weights=True, resamples=m))
    sir.attach(model)
    exact = PROCEDURES.build(PROCEDURES.options("bsvi", steps=k, learn_weights=True))
    model.procedure_state.logits.assign(np.array([1.0, -0.5, 0.5, 0.0, -1.0], np.float32))
    options = svi.SVIOptions(learning_rate=0.05, clip_norm=0.0, gradient="per_example")
    mean0 = _np(model.encode(_t(x))[0]).astype(np.float32)
    noise = noise_of(k + 1, len(x), seed=6)
    trajectory, log_w = trajectory_and_weights(model, x, mean0, np.zeros_like(mean0), noise, options)
    data = {"image": _t(x)}
    variables = model.theta() + [model.procedure_state.logits]

    exact_loss, _, exact_grads = grads_of(model.variables, lambda: exact.theta_loss(model, data, trajectory, _t(noise)),
                                          variables)
    estimates = []
    for _ in range(calls):
        loss, logs, grads = grads_of(model.variables, lambda: sir.theta_loss(model, data, trajectory, _t(noise)),
                                     variables)
        np.testing.assert_allclose(float(_np(loss)), float(_np(exact_loss)), rtol=1e-6)
        np.testing.assert_allclose(_np(grads[3]), _np(exact_grads[3]), rtol=1e-5, atol=1e-6)
        estimates.append(flat(grads[:3]))
    np.testing.assert_allclose(_np(logs["log_w"]), log_w, rtol=1e-6, atol=1e-5)
    estimates = np.array(estimates)
    assert np.ptp(estimates, axis=0).max() > 0, "every call drew the same indices"

    means, log_vars = _np(trajectory.means), _np(trajectory.log_vars)
    z = means + np.exp(0.5 * log_vars) * _f32(noise)
    per_index = -per_index_gradients(model, _f32(x)[None], z)  # [k + 1, B, P]: the loss's gradient per pick
    log_r = log_w + _np(model.procedure_state.log_pi())[:, None]
    r = np.exp(log_r - np.logaddexp.reduce(log_r, axis=0))
    assert r.max(axis=0).min() < 0.9, "the resampling distribution must not be degenerate"
    exact_b = np.einsum("ib,ibp->bp", r, per_index)
    variance_b = np.einsum("ib,ibp->bp", r, per_index**2) - exact_b**2
    se = np.sqrt(variance_b.sum(axis=0) / (len(x) ** 2 * m * calls))
    np.testing.assert_allclose(flat(exact_grads[:3]), exact_b.mean(axis=0), rtol=1e-4, atol=1e-5)
    assert np.all(np.abs(estimates.mean(axis=0) - exact_b.mean(axis=0)) < 4.5 * se + 1e-5), (
        estimates.mean(axis=0), exact_b.mean(axis=0), se)
    # a sampler that ignored pi or w would be far off: the exact gradient is not the uniform mixture's
    uniform_pick = per_index.mean(axis=0).mean(axis=0)
    assert np.any(np.abs(uniform_pick - exact_b.mean(axis=0)) > 10 * se)


def test_learned_buffer_weights_stay_on_the_simplex_and_only_tighten_the_bound():
    """BufferWeights' pi = softmax(logits) is on the simplex for any logits; gradient ascent on the logits
    with fixed weights never lowers the batch's BSVI bound (Eq. 13 is concave in pi) and reaches the
    optimum over the simplex computed by the EM fixed point pi_i <- mean_b r_bi, which is at least the SVI
    bound (pi one-hot on k) and the uniform bound."""
    k = 8
    layer = BufferWeights(k + 1)
    np.testing.assert_allclose(np.exp(_np(layer.log_pi())), 1.0 / (k + 1), rtol=1e-6)
    for logits in (np.linspace(-40, 40, k + 1), np.random.default_rng(0).normal(size=k + 1) * 5):
        layer.logits.assign(logits.astype(np.float32))
        pi = np.exp(_np(layer.log_pi()))
        assert np.all(np.isfinite(_np(layer.log_pi()))) and np.all(pi >= 0)
        np.testing.assert_allclose(pi.sum(), 1.0, rtol=1e-6)
    layer.logits.assign(np.zeros(k + 1, np.float32))

    model = LinearGaussian()
    options = svi.SVIOptions(learning_rate=0.05, clip_norm=0.0, gradient="per_example")
    x = np.repeat(X4, 16, axis=0)
    mean, _ = exact_posterior(model, _f32(x))
    start = (mean + 1.5).astype(np.float32), np.full((len(x), LATENT), 0.5, np.float32)
    _, log_w = trajectory_and_weights(model, x, *start, noise_of(k + 1, len(x), seed=7), options)
    log_w_t = _t(log_w)

    bounds = []
    for _ in range(150):
        loss, _, (grad,) = grads_of(layer.variables, lambda: (-ops.mean(svi.bsvi_bound(log_w_t, layer.log_pi())), {}),
                                    [layer.logits])
        bounds.append(-float(_np(loss)))
        layer.logits.assign(layer.logits - 2.0 * grad)
        pi = np.exp(_np(layer.log_pi()))
        assert np.all(pi >= 0) and abs(pi.sum() - 1.0) < 1e-5
    bounds = np.array(bounds)
    assert np.all(np.diff(bounds) >= -1e-5), np.diff(bounds).min()

    pi = np.full(k + 1, 1.0 / (k + 1))
    for _ in range(20000):  # EM for mixture weights: monotone, converges to the maximum of the concave problem
        log_r = log_w + np.log(pi)[:, None]
        pi = np.exp(log_r - np.logaddexp.reduce(log_r, axis=0)).mean(axis=1)
    optimum = np.mean(np.logaddexp.reduce(log_w + np.log(pi)[:, None], axis=0))
    svi_bound, uniform = log_w[-1].mean(), np.mean(np.logaddexp.reduce(log_w, axis=0) - math.log(k + 1))
    assert optimum >= max(svi_bound, uniform) - 1e-9
    assert bounds[0] == pytest.approx(uniform, abs=1e-4)
    assert optimum - 0.01 < bounds[-1] < optimum + 1e-4, (bounds[-1], optimum)
    assert bounds[-1] > svi_bound


def test_double_sampling_scores_fresh_points_and_stays_a_bound():
    """BSVI-DS (Eq. 22): the weights are scored at a second draw z_i ~ q(z; lambda_i), not at the SVI steps'
    own points, and the bound remains below log p(x) (1000 chains)."""
    model = LinearGaussian()
    k, chains = 4, 1000
    procedure = PROCEDURES.build(PROCEDURES.options("bsvi_ds", steps=k))
    options = svi.SVIOptions(learning_rate=0.05, clip_norm=0.0, gradient="per_example")
    x = repeated(X4[1], chains)
    start = np.zeros((chains, LATENT), np.float32), np.zeros((chains, LATENT), np.float32)
    noise = noise_of(k + 1, chains, seed=8)
    trajectory, log_w = trajectory_and_weights(model, x, *start, noise, options)
    loss, logs = procedure.theta_loss(model, {"image": _t(x)}, trajectory, _t(noise))
    ds_log_w = _np(logs["log_w"])
    assert np.all(np.abs(ds_log_w - log_w) > 0), "double sampling reused the trajectory's points"
    bound = np.logaddexp.reduce(ds_log_w, axis=0) - math.log(k + 1)
    np.testing.assert_allclose(float(_np(loss)), -bound.mean(), rtol=1e-5)
    assert bound.mean() < exact_log_px(model, _f32(X4[1:2]))[()] + 3 * bound.std() / math.sqrt(chains)


def set_exact_encoder(model):
    """q(z | x) = p(z | x): mean = (x - b) W Sigma / s^2 = x A + c, log-variance log diag Sigma."""
    W, b, s = decoder_params(model)
    cov = np.linalg.inv(np.eye(LATENT) + W.T @ W / s**2)
    A = W @ cov.T / s**2
    model.enc_A.assign(A.astype(np.float32))
    model.enc_c.assign((-b @ A).astype(np.float32))
    model.enc_v.assign(np.log(np.diag(cov)).astype(np.float32))


@pytest.mark.parametrize("procedure", ["iwae", "svi", "bsvi_pi", "bsvi_sir"])
def test_train_step_bounds_are_log_px_at_the_exact_posterior(procedure):
    """The compiled train step (Keras `fit` on one batch) of every kind of procedure: with q(z | x) the exact
    posterior every weight p(x, z) / q(z) is p(x), and the path-estimator SVI steps stay at it (their
    gradient is zero there), so the logged SVI-0, SVI-k, BSVI-k and IWAE bounds and the loss are the exact
    log p(x) of the linear Gaussian (before the update)."""
    import tensorflow as tf

    model = LinearGaussian()
    set_exact_encoder(model)
    options = {"samples": 5} if procedure == "iwae" else {"steps": 3, "estimator": "path", "learning_rate": 0.5}
    PROCEDURES.build(PROCEDURES.options(procedure, **options)).attach(model)
    log_px = exact_log_px(model, _f32(X4)).mean()
    model.compile(optimizer=keras.optimizers.SGD(0.01))
    logs = model.fit(tf.data.Dataset.from_tensor_slices({"image": X4}).batch(len(X4)), epochs=1, shuffle=False,
                     verbose=0).history
    names = ("iwae_bound",) if procedure == "iwae" else ("svi_0_bound", "svi_k_bound", "bsvi_k_bound")
    for name in names:
        assert logs[name][0] == pytest.approx(log_px, abs=1e-4), (name, logs, log_px)
    assert logs["loss"][0] == pytest.approx(-log_px, abs=1e-4)
    assert np.abs(_np(model.W) - W_INIT).max() > 0, "theta was not updated"


@pytest.mark.parametrize("procedure", ["svi", "bsvi"])
def test_train_step_moves_phi_on_l_0_and_theta_on_the_refined_bound(procedure):
    """One compiled train step (Keras `fit` on one batch, SGD with learning rate 1: every weight moves by minus
    its gradient) in closed form. The step's noise eps_0..eps_k is replayed from the recorded state of the
    model's seed generator; lambda_0 = (x A + c, v) is the linear encoder's output and lambda_1..k the
    float64 recursion of Algorithm 1 (the default SVI step). phi = (A, c, v) moves by the gradient of
    mean_b l_0 through lambda_0 = f_phi(x) (line 12); theta = (W, b, log s) by that of mean_b l_k at lambda_k
    (SVI, line 14) or of the BSVI bound (line 16, via Lemma 1: sum_i r_i grad log p(x, z_i))."""
    import tensorflow as tf

    model = LinearGaussian()
    k = 3
    options = svi.SVIOptions()
    PROCEDURES.build(PROCEDURES.options(procedure, steps=k, **vars(options))).attach(model)
    model.compile(optimizer=keras.optimizers.SGD(1.0))
    replay = keras.random.SeedGenerator(0)
    replay.state.assign(model.seed_generator.state.value)
    noise = _f32(_np(keras.random.normal((k + 1, len(X4), LATENT), seed=replay)))

    x = _f32(X4)
    A, c, v = (_np(w) for w in model.inference_variables())
    mean0, log_var0 = x @ A + c, np.broadcast_to(v, (len(x), LATENT))
    means, log_vars, _ = numpy_svi(model, X4, mean0, log_var0, noise[:k], options)
    dl0 = log_weight_gradient(model, x, mean0, log_var0, noise[0], "total", 1.0)  # d l_0 / d (m_0, lv_0)
    expected_phi = [-x.T @ dl0[:, :LATENT] / len(x), -dl0[:, :LATENT].mean(0), -dl0[:, LATENT:].mean(0)]
    z = means + np.exp(0.5 * log_vars) * noise  # z_0..z_k [k + 1, B, d]
    per_index = per_index_gradients(model, x[None], z)  # grad_theta log p(x, z_i) [k + 1, B, P]
    if procedure == "svi":
        expected_theta = -per_index[k].mean(axis=0)
    else:
        log_w = np.sum(log_weight_parts(model, x[None], z, means, log_vars), axis=0)
        r = np.exp(log_w - np.logaddexp.reduce(log_w, axis=0))  # pi uniform
        expected_theta = -np.einsum("ib,ibp->bp", r, per_index).mean(axis=0)
    before = [_np(w) for w in model.trainable_variables]

    model.fit(tf.data.Dataset.from_tensor_slices({"image": X4}).batch(len(X4)), epochs=1, shuffle=False, verbose=0)
    moved = {w.path: before[i] - _np(w) for i, w in enumerate(model.trainable_variables)}
    for w, expected in zip(model.inference_variables(), expected_phi):
        np.testing.assert_allclose(moved[w.path], expected, rtol=1e-4, atol=2e-5, err_msg=w.path)
    np.testing.assert_allclose(np.concatenate([moved[w.path].ravel() for w in model.theta()]), expected_theta,
                               rtol=1e-4, atol=2e-5)


# --------------------------------------------------------------------------------------------------
# 2. Training as training runs it
# --------------------------------------------------------------------------------------------------

LEAN_OPTIONS = {"iwae": {"samples": 3}, "svi": {"steps": 3}, "bsvi": {"steps": 2}, "bsvi_pi": {"steps": 2},
                "bsvi_ds": {"steps": 2}, "bsvi_sir": {"steps": 2, "resamples": 2}}


def lean_config(procedure, epochs, **train):
    """digits_config with a standard normal prior, the procedure's cheapest settings and 7 batches an epoch."""
    return digits_config(prior="standard_normal", epochs=epochs, batch_size=200,
                         procedure={"name": procedure, **LEAN_OPTIONS[procedure]}, **train)


@pytest.mark.parametrize("procedure", list(LEAN_OPTIONS))
def test_fit_trains_with_every_refinement_procedure(tmp_path, procedure):
    """One epoch of `fit.train` on the digits: a finite loss, the procedure's health-check columns in the
    history; bsvi_pi's buffer weights move, are saved in config.json and the weights, and reload."""
    model, _ = fit.train(lean_config(procedure, epochs=1), tmp_path, run_evaluation=False)
    (row,) = history(tmp_path)
    assert math.isfinite(float(row["loss"])) and math.isfinite(float(row["val_loss"]))
    columns = ("iwae_bound",) if procedure == "iwae" else ("svi_0_bound", "svi_k_bound", "bsvi_k_bound")
    for column in columns:
        assert math.isfinite(float(row[column])), column
    if procedure != "bsvi_pi":
        assert model.procedure_state is None
        return
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["config"]["procedure_state"]["class_name"] == "BufferWeights"
    logits = _np(model.procedure_state.logits)
    assert logits.shape == (3,) and np.abs(logits).max() > 1e-4, "pi was not trained"
    assert any(v is model.procedure_state.logits for v in model.trainable_variables)
    reloaded = checkpoints.load_run_model(tmp_path)
    assert isinstance(reloaded.procedure_state, BufferWeights)
    np.testing.assert_array_equal(_np(reloaded.procedure_state.logits), logits)


@pytest.mark.slow  # three short runs: ~20-40 s
def test_bsvi_sir_resumes_bit_identically(tmp_path):
    """2 epochs in one go == 1 epoch, stop, resume for 1 more (checkpoint every epoch): the same weights,
    optimizer state and resampling-generator state, bit for bit."""
    straight, split = tmp_path / "straight", tmp_path / "split"
    model_a, _ = fit.train(lean_config("bsvi_sir", epochs=2, checkpoint_every=1), straight, run_evaluation=False)
    fit.train(lean_config("bsvi_sir", epochs=1, checkpoint_every=1), split, run_evaluation=False)
    assert json.loads((split / "checkpoint" / "state.json").read_text())["epoch"] == 1
    model_b, _ = fit.train(lean_config("bsvi_sir", epochs=2, checkpoint_every=1), split, resume=True,
                           run_evaluation=False)
    assert [r["epoch"] for r in history(split)] == ["1", "2"]
    assert len(model_a.variables) == len(model_b.variables)
    for va, vb in zip(model_a.variables, model_b.variables):
        np.testing.assert_array_equal(ops.convert_to_numpy(va), ops.convert_to_numpy(vb), err_msg=va.path)
    for va, vb in zip(model_a.optimizer.variables, model_b.optimizer.variables):
        np.testing.assert_array_equal(ops.convert_to_numpy(va), ops.convert_to_numpy(vb), err_msg=va.path)
    for ra, rb in zip(history(straight), history(split)):
        assert ra == rb


# --------------------------------------------------------------------------------------------------
# 3. The inner loop is one compiled loop
# --------------------------------------------------------------------------------------------------


def _refine_fn(model):
    options = svi.SVIOptions()
    return lambda x, m, lv, noise: svi.refine(model, x, m, lv, noise, model.prior.density(), options)


@pytest.mark.skipif(BACKEND != "jax", reason="jaxprs exist on JAX only (TensorFlow has its own graph test)")
def test_refine_is_one_jax_loop_whatever_k():
    """The k SVI steps are one `lax` loop (while or scan) in the jaxpr of refine, which has the same size for
    k = 3, 7 and 30 (an unrolled Python loop would grow with k)."""
    import jax

    model = LinearGaussian()
    x, m0 = _t(X4), _t(np.zeros((4, LATENT)))

    sizes = {}
    for k in (3, 7, 30):
        closed = jax.make_jaxpr(_refine_fn(model))(x, m0, m0, _t(noise_of(k, 4, seed=0)))
        loops = [e for e in closed.jaxpr.eqns if e.primitive.name in ("while", "scan")]
        assert len(loops) == 1, [e.primitive.name for e in closed.jaxpr.eqns]
        sizes[k] = (len(closed.jaxpr.eqns), len(str(closed.jaxpr).splitlines()))
    assert sizes[3] == sizes[7] == sizes[30], sizes


@pytest.mark.skipif(BACKEND != "tensorflow", reason="tf.function graphs exist on TensorFlow only (JAX: the jaxpr test)")
def test_refine_is_one_tf_while_loop_whatever_k():
    """The tf.function graph of refine holds one While op and the same number of ops for k = 3 and 30."""
    import tensorflow as tf

    model = LinearGaussian()
    sizes = {}
    for k in (3, 30):
        specs = [tf.TensorSpec((4, DATA)), tf.TensorSpec((4, LATENT)), tf.TensorSpec((4, LATENT)),
                 tf.TensorSpec((k, 4, LATENT))]
        graph = tf.function(_refine_fn(model)).get_concrete_function(*specs).graph
        types = [op.type for op in graph.get_operations()]
        assert sum(t in ("While", "StatelessWhile") for t in types) == 1, types
        sizes[k] = len(types)
    assert sizes[3] == sizes[30], sizes


# --------------------------------------------------------------------------------------------------
# 4. Configuration and evaluation
# --------------------------------------------------------------------------------------------------


SINGLE_LATENT_PROCEDURES = [name for name in PROCEDURES.names() if PROCEDURES[name].single_latent]


def test_every_refinement_procedure_is_marked_single_latent():
    assert set(LEAN_OPTIONS) <= set(SINGLE_LATENT_PROCEDURES)


@pytest.mark.parametrize("procedure", SINGLE_LATENT_PROCEDURES)
def test_refinement_procedures_need_a_single_latent(procedure):
    """Validation refuses a procedure that refines one Gaussian q(z | x) with a hierarchical model, naming
    the requirement; the same procedure with the single-latent vae is accepted."""
    with pytest.raises(config_lib.ConfigError, match=rf"'{procedure}' refines a single Gaussian.*'hvae' has 2 "
                                                     r"stochastic layers.*single-latent architecture"):
        digits_config("hvae", "standard_normal", procedure=procedure)
    assert digits_config("vae", "standard_normal", procedure=procedure).train.procedure.name == procedure


def test_bsvi_evaluation_of_the_linear_gaussian_matches_the_closed_form():
    """BSVI-500 and ELBO* on the linear Gaussian with the path estimator (otherwise the step's defaults, 16
    images per batch): q_500 is the exact posterior, so ELBO* is the exact log p(x) and KL* the closed-form
    KL(p(z | x) || p(z)); the BSVI-500 bound is below log p(x) by at most the few poor early weights
    (log 501/450 if 50 steps are far from the posterior); the three ELBO* numbers add up."""
    model = LinearGaussian()
    x = np.random.default_rng(9).normal(size=(32, DATA)).astype(np.float32) * 1.5
    result = refinement.evaluate(model, x, steps=500, options=svi.SVIOptions(estimator="path"), batch_size=16,
                                 elbo_samples=100)
    nll = -exact_log_px(model, _f32(x)).mean()
    mean, log_var = exact_posterior(model, _f32(x))
    kl = np.mean(0.5 * np.sum(np.exp(log_var) + mean**2 - 1.0 - log_var, axis=-1))
    assert result["negative_elbo_star"] == pytest.approx(nll, abs=2e-3), (result, nll)
    # KL* is a 100-draw Monte-Carlo mean of log q - log p(z) = sum_j (sigma_j^2 - 1) eps_j^2 / 2 + mu_j sigma_j eps_j
    # + const: its standard error in closed form
    variance = np.sum(0.5 * (np.exp(log_var) - 1.0) ** 2 + mean**2 * np.exp(log_var), axis=-1)
    se = math.sqrt(variance.sum() / 100) / len(x)
    assert abs(result["kl_star"] - kl) < 4 * se + 2e-3, (result, kl, se)
    assert result["kl_star"] + result["reconstruction_star"] == pytest.approx(result["negative_elbo_star"], rel=1e-6)
    assert nll - 2e-3 < result["bsvi_nll"] < nll + math.log(501 / 450), (result, nll)
    assert (result["steps"], result["num_examples"], result["svi"]["estimator"]) == (500, 32, "path")


@pytest.fixture(scope="module")
def digits_vae(tmp_path_factory):
    config = digits_config(prior="standard_normal", epochs=2, batch_size=100)
    model, _ = fit.train(config, tmp_path_factory.mktemp("digits_vae"), run_evaluation=False)
    return model, data_lib.load_splits(config.data).test[:50]


def test_bsvi_evaluation_is_close_to_iwae_on_a_trained_vae(digits_vae):
    """On a small trained digits VAE, BSVI-500 (Appendix B, the defaults of `evaluation.refinement`) is finite
    and within 1 nat of IWAE-1000, and KL* + Reconstruction* = -ELBO*; refinement makes ELBO* no worse than
    the amortised ELBO."""
    model, images = digits_vae
    result = refinement.evaluate(model, images, batch_size=50, elbo_samples=50)
    iwae_nll = -np.mean(model.log_likelihood(images, num_samples=1000))
    assert math.isfinite(result["bsvi_nll"]) and result["bsvi_nll_standard_error"] > 0
    assert abs(result["bsvi_nll"] - iwae_nll) < 1.0, (result["bsvi_nll"], iwae_nll)
    assert result["kl_star"] + result["reconstruction_star"] == pytest.approx(result["negative_elbo_star"], rel=1e-6)
    amortised = density.elbo_metrics(model, images, 50)["negative_elbo"]
    assert result["negative_elbo_star"] < amortised + 0.5, (result["negative_elbo_star"], amortised)


def test_bsvi_evaluation_refuses_hierarchical_models():
    config = digits_config("hvae", "standard_normal")
    model = build_model(config.model, (8, 8, 1), seed=0, num_train=10)
    with pytest.raises(ValueError, match="single Gaussian q.*2 stochastic layers.*single-latent"):
        refinement.evaluate(model, np.zeros((4, 8, 8, 1), np.float32), steps=2)
