"""SVI refinement of a single-latent model's Gaussian posterior, and the bounds built on its trajectory.

BSVI paper (Shu et al. 2019) Algorithm 1, lines 4-11: lambda_0 = (mean, log_var) from the encoder; for
i = 0..k-1 draw z_i = mean_i + sigma_i * eps_i, score the log importance weight
l_i = log p(x | z_i) + beta * (log p(z_i) - log q(z_i; lambda_i)), and take one SGD-with-momentum ascent
step on l_i with respect to lambda_i. Every step is one decoder forward and backward; the loop runs inside
the compiled step (`keras.ops.fori_loop`: `lax.fori_loop` on JAX, a `tf.while_loop` on TensorFlow) and keeps no
gradient history, so lambda_1..k are constants for every outer gradient (Algorithm 1's stop-gradient).

The trajectory gives k + 1 weights (the last one scored at lambda_k): the SVI-k bound is E[l_k], the BSVI-k
bound E[log sum_i pi_i w_i] (Theorem 1, a generalised IWAE bound over dependent samples), and with pi
one-hot on k the BSVI bound is the SVI bound. `training.procedures.svi` trains with them and
`evaluation.refinement` evaluates with them (BSVI-500, ELBO* = SVI-500).
"""

import math
from dataclasses import dataclass
from typing import NamedTuple

import keras
from keras import ops

from layers.autodiff import value_and_input_gradient
from layers.distributions import log_normal_diag
from layers.registry import option


@dataclass
class SVIOptions:
    """The SVI step (BSVI paper Appendix D: SGD with momentum, lr 1.0, momentum 0.5, clipping 1.0)."""

    learning_rate: float = option(1.0, exclusive_minimum=0)
    """eta of lambda_{i+1} = lambda_i + eta * v_{i+1}."""
    momentum: float = option(0.5, minimum=0)
    """v_{i+1} = momentum * v_i + grad (SA-VAE's form of heavy-ball momentum)."""
    clip_norm: float = option(1.0, minimum=0)
    """Largest L2 norm of the (mean, log_var) gradient of one step; 0 disables clipping."""
    gradient: str = option("batch_mean", choices=("batch_mean", "per_example"))
    """batch_mean: the gradient of the batch-mean objective, as SA-VAE's code does and the BSVI paper follows
    (default; the per-image step is eta / B), clipped as one (mean, log_var) tensor (SA-VAE clips the two
    separately, at 5; the BSVI paper says only "clipping 1.0") | per_example: each image's own gradient,
    clipped per image, so a result does not depend on the other images of the batch (then lr 1.0 is B times
    the paper's step: use e.g. learning_rate 0.02, clip_norm 7 for B = 50)."""
    estimator: str = option("total", choices=("total", "path"))
    """total: the reparameterised gradient of ln w itself (Algorithm 1 line 9) | path: "sticking the
    landing" (Roeder et al. 2017), the same expectation without the score term of log q, so its variance
    vanishes when q is the exact posterior."""


def check_single_latent(model, what):
    """Refinement acts on one Gaussian q(z | x): refuse hierarchical models with a clear message."""
    if model.stochastic_layers != 1:
        raise ValueError(
            f"{what} refines a single Gaussian q(z | x), but {type(model).__name__} has "
            f"{model.stochastic_layers} stochastic layers; use a single-latent architecture (e.g. model.architecture=vae)")


def log_weight_terms(model, x, z, mean, log_var, density):
    """(log p(x | z), log p(z) - log q(z; mean, log_var)) per row; l = first + beta * second."""
    return model.conditional_log_prob(x, z), density(z) - log_normal_diag(z, mean, log_var)


class Trajectory(NamedTuple):
    """lambda_0..lambda_k and the terms of l_0..l_{k-1} scored on the way (all constants)."""

    means: object  # [k + 1, B, d]
    log_vars: object  # [k + 1, B, d]
    log_px: object  # [k, B]
    log_ratio: object  # [k, B]


def refine(model, x, mean, log_var, noise, density, options, kl_weight=1.0):
    """Run k = len(noise) SVI steps from lambda_0 = (mean, log_var) with noise eps_i [k, B, d]."""
    d = ops.shape(mean)[-1]
    lam = ops.stop_gradient(ops.concatenate([mean, log_var], axis=-1))
    batch = ops.cast(ops.shape(lam)[0], "float32")

    def objective(lam_, eps):
        m, lv = lam_[:, :d], lam_[:, d:]
        z = m + ops.exp(0.5 * lv) * eps
        log_px, log_pz = model.conditional_log_prob(x, z), density(z)
        log_ratio = log_pz - log_normal_diag(z, m, lv)
        if options.estimator == "path":  # log q's parameters held constant, z's path kept
            path_ratio = log_pz - log_normal_diag(z, ops.stop_gradient(m), ops.stop_gradient(lv))
            return log_px + kl_weight * path_ratio, (log_px, log_ratio)
        return log_px + kl_weight * log_ratio, (log_px, log_ratio)

    def step(i, carry):
        lam_, velocity, lams, terms = carry
        eps = ops.take(noise, i, axis=0)
        _, (log_px, log_ratio), grad = value_and_input_gradient(lambda v: objective(v, eps), lam_)
        if options.gradient == "batch_mean":
            grad = grad / batch
            norm = ops.sqrt(ops.sum(ops.square(grad)))
        else:
            norm = ops.sqrt(ops.sum(ops.square(grad), axis=-1, keepdims=True))
        if options.clip_norm > 0:
            grad = grad * ops.minimum(1.0, options.clip_norm / ops.maximum(norm, 1e-12))
        velocity = ops.stop_gradient(options.momentum * velocity + grad)
        lams = ops.slice_update(lams, (i, 0, 0), lam_[None])
        terms = ops.slice_update(terms, (i, 0, 0), ops.stack([log_px, log_ratio])[None])
        return ops.stop_gradient(lam_ + options.learning_rate * velocity), velocity, lams, terms

    k = ops.shape(noise)[0]
    init = (lam, ops.zeros_like(lam), ops.zeros((k, *ops.shape(lam))), ops.zeros((k, 2, ops.shape(lam)[0])))
    last, _, lams, terms = ops.fori_loop(0, k, step, init)
    lams = ops.concatenate([lams, last[None]], axis=0)
    return Trajectory(lams[..., :d], lams[..., d:], terms[:, 0], terms[:, 1])


def draw_noise(model, steps, batch_shape, seed=None):
    """eps [steps, B, d] ~ N(0, I), drawn before the loop (no generator state changes inside it)."""
    return keras.random.normal((steps, *batch_shape), seed=model.seed_generator if seed is None else seed)


def score(model, x, means, log_vars, noise, density):
    """log p(x | z_i) and log p(z_i) - log q(z_i; lambda_i) at z_i = mean_i + sigma_i eps_i for every i:
    [n, B] each. Differentiable in the model's weights (the decoder runs once on all n * B points)."""
    n, b, d = ops.shape(means)[0], ops.shape(means)[1], ops.shape(means)[2]
    z = means + ops.exp(0.5 * log_vars) * noise
    x_rep = ops.reshape(ops.repeat(x[None], n, axis=0), (-1, *ops.shape(x)[1:]))
    log_px = ops.reshape(model.conditional_log_prob(x_rep, ops.reshape(z, (-1, d))), (n, b))
    log_pz = ops.stack([density(z[i]) for i in range(n)])  # per slice: a training-form prior aligns rows
    return log_px, log_pz - log_normal_diag(z, means, log_vars)


def log_buffer_weights(count, logits=None):
    """log pi over the k + 1 buffer entries: uniform 1 / (k + 1), or softmax(logits) (BSVI-pi)."""
    if logits is None:
        return ops.full((count,), -math.log(count))
    return ops.log_softmax(logits)


def bsvi_bound(log_w, log_pi):
    """log sum_i pi_i w_i per example, for log_w [k + 1, B] and log_pi [k + 1] (paper Eq. 11)."""
    return ops.logsumexp(log_w + log_pi[:, None], axis=0)
