"""ByPE's coreset phase: update the pseudocoreset (U, w) with the VAE held fixed (Algorithm 2, lines 4-17).

The KL gradients are the stochastic estimator of paper Eq. 34-37. With a Gaussian potential
f(x, z) = log N(x | m(z), v I), where m(z) is the decoder mean, everything the estimator needs reduces
to matrix products, so no [M, S, D] gradient tensor is ever formed:

- potentials F[n, s] = f(x_n, z_s) come from squared distances ||x||^2 - 2 x.m + ||m||^2 (one matmul);
- grad_u f(u_m, z_s) = (m(z_s) - u_m) / v, so with the residual r [S] (Eq. 34),
  sum_s grad_u f(u_m, z_s) r_s = (m^T r - u_m sum_s r_s) / v, one [S, D] x [S] product for all m.
  Centring over pixels (official code) subtracts that row's mean over D; centring over samples
  (paper Eq. 35) gives (m^T r - mean_s(m) sum_s r_s) / v instead.

The official code's choices the paper leaves open are options of `CoresetConfig` (layers/priors/pseudocoreset.py):
steps per phase, S, the potential's variance, the restarting step-size schedule with persistent Adam
moments, the centring axis, and whether U is clipped.
"""

import math
import time

import keras
import numpy as np
from keras import ops

from layers.distributions import LOG_2PI, pairwise_squared_distances
from layers.priors.mixture import split_seed
from layers.priors.pseudocoreset import PseudocoresetPrior
from training.procedures.base import prior_callbacks
from zoo.compiled import backend_function

ADAM_BETA1, ADAM_BETA2, ADAM_EPSILON = 0.9, 0.999, 1e-8


def gaussian_potentials(x, means, log_var):
    """f(x_n, z_s) = log N(x_n | means_s, exp(log_var) I) for x [n, D], means [S, D]: shape [n, S]."""
    dim = x.shape[-1]
    return -0.5 * (dim * (LOG_2PI + log_var) + pairwise_squared_distances(x, means) * ops.exp(-log_var))


def centre_over_samples(f):
    """Subtract each row's mean over the S samples (paper Eq. 36-37)."""
    return f - ops.mean(f, axis=-1, keepdims=True)


def coreset_gradients(points, weights, data, decoder_means, log_var, num_train, centering="pixels"):
    """Stochastic gradients of KL(p(z | U, w) || p(z | X)) w.r.t. w and U (paper Eq. 34-37).

    Args:
        points: U flattened, [M, D].
        weights: w, [M] (raw, as in the residual of Eq. 34).
        data: a minibatch of B training points, [B, D].
        decoder_means: m(z_s) for S samples z_s from the current pseudocoreset prior, [S, D].
        log_var: log v of the Gaussian potential (0 for the official unit-variance potential).
        num_train: N.
        centering: "pixels" (official code) or "samples" (paper Eq. 35) for the gradient of f in u.

    Returns:
        (grad_w [M], grad_u [M, D]).
    """
    num_samples = decoder_means.shape[0]
    batch = data.shape[0]
    f_x = centre_over_samples(gaussian_potentials(data, decoder_means, log_var))  # [B, S]
    f_u = centre_over_samples(gaussian_potentials(points, decoder_means, log_var))  # [M, S]
    residual = (num_train / batch) * ops.sum(f_x, axis=0) - ops.matmul(weights[None, :], f_u)[0]  # [S]
    grad_w = -ops.matmul(f_u, residual[:, None])[:, 0] / num_samples
    inv_var = ops.exp(-log_var)
    means_dot_r = ops.matmul(residual[None, :], decoder_means)  # [1, D]
    residual_sum = ops.sum(residual)
    if centering == "samples":
        h_dot_r = (means_dot_r - ops.mean(decoder_means, axis=0, keepdims=True) * residual_sum) * inv_var
        h_dot_r = ops.broadcast_to(h_dot_r, ops.shape(points))
    elif centering == "pixels":
        h_dot_r = (means_dot_r - points * residual_sum) * inv_var  # [M, D]
        h_dot_r = h_dot_r - ops.mean(h_dot_r, axis=-1, keepdims=True)
    else:
        raise ValueError(f"centering must be 'pixels' or 'samples', got {centering!r}")
    grad_u = -weights[:, None] * h_dot_r / num_samples
    return grad_w, grad_u


def adam_direction(grad, moment1, moment2, step):
    """The bias-corrected Adam direction at 0-based step j and the new moments."""
    moment1 = ADAM_BETA1 * moment1 + (1.0 - ADAM_BETA1) * grad
    moment2 = ADAM_BETA2 * moment2 + (1.0 - ADAM_BETA2) * ops.square(grad)
    m_hat = moment1 / (1.0 - ops.power(ADAM_BETA1, step + 1.0))
    v_hat = moment2 / (1.0 - ops.power(ADAM_BETA2, step + 1.0))
    return m_hat / (ADAM_EPSILON + ops.sqrt(v_hat)), moment1, moment2


def potential_log_variance(model, potential):
    """log v of the coreset potential: 0 (official unit variance) or the model's own Gaussian likelihood."""
    if potential == "unit_gaussian":
        return ops.convert_to_tensor(0.0)
    log_var = model.likelihood.gaussian_log_variance()
    if log_var is None:
        raise ValueError(
            f"model.prior.coreset.potential=likelihood needs a Gaussian-form likelihood (gaussian or squared_error), "
            f"not {type(model.likelihood).__name__}; use model.prior.coreset.potential=unit_gaussian"
        )
    return log_var


def coreset_step(model, images, options):
    """One stochastic coreset step on a minibatch of training images (Algorithm 2, lines 5-17)."""
    prior = model.prior
    flat = lambda t: ops.reshape(t, (ops.shape(t)[0], -1))
    sample_seed, decode_seed = split_seed(prior.seed_generator, 2)
    z = prior.sample(options["num_samples"], seed=sample_seed)
    decoder_means = flat(model.decode(z, seed=decode_seed))
    points = flat(prior.points)
    grad_w, grad_u = coreset_gradients(
        points, prior.point_weights, flat(ops.convert_to_tensor(images)), decoder_means,
        potential_log_variance(model, options["potential"]), prior.num_train, options["gradient_centering"],
    )
    grad = ops.concatenate([grad_w, ops.reshape(grad_u, (-1,))])
    step = prior.update_count
    direction, moment1, moment2 = adam_direction(grad, prior.moment1, prior.moment2, step)
    gamma = options["step_size"] / (step + 1.0)
    current = ops.concatenate([prior.point_weights, ops.reshape(points, (-1,))])
    updated = current - gamma * direction
    m = prior.components
    new_points = ops.reshape(updated[m:], ops.shape(prior.points))
    if options["clip_points"]:
        new_points = ops.clip(new_points, 0.0, 1.0)
    prior.point_weights.assign(ops.maximum(updated[:m], 0.0))  # projection onto w >= 0
    prior.points.assign(new_points)
    prior.moment1.assign(moment1)
    prior.moment2.assign(moment2)
    prior.update_count.assign(step + 1.0)
    return ops.sqrt(ops.mean(ops.square(grad_w)))


class CoresetPhase(keras.callbacks.Callback):
    """Step (ii) of the two-step alternation, run by `fit` every `interval` epochs.

    The phase for epochs k, 2k, ... runs at the start of the following epoch, i.e. after epoch k's
    training and validation passes, as in the official code, but before that epoch's checkpoint would
    mix a pre-update validation loss with a post-update coreset: the best weights always hold the
    coreset they were validated with. Minibatch order is a function of (seed, epoch), and the sampling
    noise comes from the prior's seed generator, which checkpoints save, so `--resume` is exact.
    """

    def __init__(self, model, train_images, batch_size, options, seed):
        super().__init__()
        self.vae = model
        self.images = train_images
        self.batch_size = batch_size
        self.options = options
        self.seed = seed
        self.step_fn = backend_function(model, lambda x: coreset_step(model, x, options))
        self.seconds = 0.0

    def phase_due(self, epoch):
        """The phase after (1-based) epoch e runs at the start of 0-based epoch e when e % k == 0."""
        return epoch > 0 and epoch % self.options["interval"] == 0

    def run_phase(self, epoch):
        prior = self.vae.prior
        if self.options["schedule"] == "restart":
            prior.update_count.assign(0.0)  # gamma_j restarts at gamma_0, Adam moments persist
        n, b = len(self.images), self.batch_size
        steps = self.options["steps"] or n // b
        order = np.random.default_rng([self.seed, epoch, 7]).permutation(n)
        for t in range(steps):  # consecutive minibatches of one shuffled pass, wrapping around if steps > N/B
            grad_rms = self.step_fn(self.images[order[(t * b + np.arange(b)) % n]])
        grad_rms = float(ops.convert_to_numpy(grad_rms))
        if not math.isfinite(grad_rms):
            raise FloatingPointError(f"coreset phase before epoch {epoch + 1}: non-finite weight gradient")
        return steps

    def on_epoch_begin(self, epoch, logs=None):
        self.seconds = 0.0
        if self.phase_due(epoch):
            start = time.perf_counter()
            self.run_phase(epoch)
            self.seconds = time.perf_counter() - start

    def on_epoch_end(self, epoch, logs=None):
        if logs is None:
            return
        w = ops.convert_to_numpy(self.vae.prior.centred_weights()).astype("float64")
        logs["coreset_seconds"] = self.seconds
        logs["coreset_ess"] = float(w.sum() ** 2 / max(np.square(w).sum(), 1e-300))


@prior_callbacks(PseudocoresetPrior)
def coreset_callbacks(model, splits, train_config):
    """ByPE's alternation: a coreset phase every `coreset.interval` epochs."""
    return [CoresetPhase(model, splits.train, train_config.batch_size, model.prior.coreset, model.prior.seed)]
