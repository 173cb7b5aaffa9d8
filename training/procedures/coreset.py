"""ByPE's coreset phase: update the pseudocoreset (U, w) with the VAE held fixed (Algorithm 2, lines 4-17).

The KL gradients are the stochastic estimator of paper Eq. 34-37. With a Gaussian potential
f(x, z) = log N(x | m(z), v I), where m(z) is the decoder mean, everything the estimator needs reduces
to matrix products, so no [M, S, D] gradient tensor is ever formed:

- potentials F[n, s] = f(x_n, z_s) come from squared distances ||x||^2 - 2 x.m + ||m||^2 (one matmul);
- grad_u f(u_m, z_s) = (m(z_s) - u_m) / v, so with the residual r [S] (Eq. 34),
  sum_s grad_u f(u_m, z_s) r_s = (m^T r - u_m sum_s r_s) / v, one [S, D] x [S] product for all m.
  Centring over pixels (official code) subtracts that row's mean over D; centring over samples
  (paper Eq. 35) gives (m^T r - mean_s(m) sum_s r_s) / v instead.

With a Bernoulli potential f(x, z) = x . L(z) + sum_d log(1 - p_d(z)), L the decoder's logits,
grad_u f(u_m, z_s) = L(z_s) for every m, so the same products serve.

The official code's choices the paper leaves open or states otherwise are options of `CoresetConfig`
(layers/priors/pseudocoreset.py): steps per phase, S, the potential, the restarting step-size schedule with
persistent Adam moments, the centring axis, whether U is clipped, which weights the residual uses
(`weight_centering`), the weights' step size, and (for ablations) which of U and w are updated.
"""

import math
import time

import keras
import numpy as np
from keras import ops

from layers.distributions import LOG_2PI, pairwise_squared_distances
from layers.likelihoods.bernoulli import Bernoulli
from layers.priors.mixture import split_seed
from layers.priors.pseudocoreset import PseudocoresetPrior
from training.procedures.base import prior_callbacks
from zoo.compiled import backend_function

ADAM_BETA1, ADAM_BETA2, ADAM_EPSILON = 0.9, 0.999, 1e-8


def gaussian_potentials(x, means, log_var):
    """f(x_n, z_s) = log N(x_n | means_s, exp(log_var) I) for x [n, D], means [S, D]: shape [n, S]."""
    dim = x.shape[-1]
    return -0.5 * (dim * (LOG_2PI + log_var) + pairwise_squared_distances(x, means) * ops.exp(-log_var))


BERNOULLI_EPSILON = 1e-6  # decoder probabilities are clipped to [eps, 1 - eps] before their logits are taken


def bernoulli_potentials(x, logits, log_one_minus_p):
    """f(x_n, z_s) = sum_d x_nd L_sd + log(1 - p_sd) (the Bernoulli log-likelihood of x, continuous or not): [n, S]."""
    return ops.matmul(x, ops.transpose(logits)) + ops.sum(log_one_minus_p, axis=-1)[None, :]


def centre_over_samples(f):
    """Subtract each row's mean over the S samples (paper Eq. 36-37)."""
    return f - ops.mean(f, axis=-1, keepdims=True)


def coreset_gradients(points, weights, data, decoder_means, log_var, num_train, centering="pixels",
                      potential="gaussian"):
    """Stochastic gradients of KL(p(z | U, w) || p(z | X)) w.r.t. w and U (paper Eq. 34-37).

    Args:
        points: U flattened, [M, D].
        weights: w, [M]: the vector of the residual of Eq. 34 (the raw w in the official code, the
            written-back centred w under `weight_centering: write_back`).
        data: a minibatch of B training points, [B, D].
        decoder_means: m(z_s) for S samples z_s from the current pseudocoreset prior, [S, D].
        log_var: log v of the Gaussian potential (0 for the official unit-variance potential); unused
            for the Bernoulli potential.
        num_train: N.
        centering: "pixels" (official code) or "samples" (paper Eq. 35) for the gradient of f in u.
        potential: "gaussian" (log N(x | m(z), v I)) or "bernoulli" (log Bernoulli(x | m(z))).

    Returns:
        (grad_w [M], grad_u [M, D]).
    """
    num_samples = decoder_means.shape[0]
    batch = data.shape[0]
    if potential == "gaussian":
        potentials = lambda x: gaussian_potentials(x, decoder_means, log_var)
        inv_var = ops.exp(-log_var)
    elif potential == "bernoulli":
        p = ops.clip(decoder_means, BERNOULLI_EPSILON, 1.0 - BERNOULLI_EPSILON)
        logits, log_one_minus_p = ops.log(p) - ops.log(1.0 - p), ops.log(1.0 - p)
        potentials = lambda x: bernoulli_potentials(x, logits, log_one_minus_p)
    else:
        raise ValueError(f"potential must be 'gaussian' or 'bernoulli', got {potential!r}")
    if centering not in ("pixels", "samples"):
        raise ValueError(f"centering must be 'pixels' or 'samples', got {centering!r}")
    f_x = centre_over_samples(potentials(data))  # [B, S]
    f_u = centre_over_samples(potentials(points))  # [M, S]
    residual = (num_train / batch) * ops.sum(f_x, axis=0) - ops.matmul(weights[None, :], f_u)[0]  # [S]
    grad_w = -ops.matmul(f_u, residual[:, None])[:, 0] / num_samples
    residual_sum = ops.sum(residual)
    if potential == "bernoulli":  # grad_u f(u_m, z_s) = L_s for every m
        h_dot_r = ops.matmul(residual[None, :], logits)  # [1, D]
        if centering == "samples":
            h_dot_r = h_dot_r - ops.mean(logits, axis=0, keepdims=True) * residual_sum
        else:
            h_dot_r = h_dot_r - ops.mean(h_dot_r, axis=-1, keepdims=True)
        h_dot_r = ops.broadcast_to(h_dot_r, ops.shape(points))
    else:
        means_dot_r = ops.matmul(residual[None, :], decoder_means)  # [1, D]
        if centering == "samples":
            h_dot_r = (means_dot_r - ops.mean(decoder_means, axis=0, keepdims=True) * residual_sum) * inv_var
            h_dot_r = ops.broadcast_to(h_dot_r, ops.shape(points))
        else:
            h_dot_r = (means_dot_r - points * residual_sum) * inv_var  # [M, D]
            h_dot_r = h_dot_r - ops.mean(h_dot_r, axis=-1, keepdims=True)
    grad_u = -weights[:, None] * h_dot_r / num_samples
    return grad_w, grad_u


def project_weights(weights, total):
    """Euclidean projection of w onto {w >= 0, sum w = total}: max(w - tau, 0) with
    tau = max_j (sum of the j largest - total) / j. Without clamping this is Algorithm 2 line 2's
    centring w + (total/M - mean(w)); with it, the vector stays non-negative and still sums to total."""
    ordered = ops.flip(ops.sort(weights), axis=0)
    count = ops.arange(1, ordered.shape[0] + 1, dtype=ordered.dtype)
    tau = ops.max((ops.cumsum(ordered) - total) / count)
    return ops.maximum(weights - tau, 0.0)


def adam_direction(grad, moment1, moment2, step):
    """The bias-corrected Adam direction at 0-based step j and the new moments."""
    moment1 = ADAM_BETA1 * moment1 + (1.0 - ADAM_BETA1) * grad
    moment2 = ADAM_BETA2 * moment2 + (1.0 - ADAM_BETA2) * ops.square(grad)
    m_hat = moment1 / (1.0 - ops.power(ADAM_BETA1, step + 1.0))
    v_hat = moment2 / (1.0 - ops.power(ADAM_BETA2, step + 1.0))
    return m_hat / (ADAM_EPSILON + ops.sqrt(v_hat)), moment1, moment2


def potential_form(model, potential):
    """(kind, log v) of the coreset potential: ("gaussian", 0) for the official unit variance, or the
    model's own likelihood: ("gaussian", its log-variance) or ("bernoulli", None)."""
    if potential == "unit_gaussian":
        return "gaussian", ops.convert_to_tensor(0.0)
    if isinstance(model.likelihood, Bernoulli):
        return "bernoulli", None
    log_var = model.likelihood.gaussian_log_variance()
    if log_var is None:
        raise ValueError(
            f"model.prior.coreset.potential=likelihood needs a Gaussian-form or Bernoulli likelihood (gaussian, "
            f"squared_error, bernoulli), not {type(model.likelihood).__name__}; use "
            f"model.prior.coreset.potential=unit_gaussian"
        )
    return "gaussian", log_var


def coreset_step(model, images, options):
    """One stochastic coreset step on a minibatch of training images (Algorithm 2, lines 5-17).

    Returns the root-mean-square weight gradient (a finiteness check for the phase)."""
    prior = model.prior
    m, n = prior.components, prior.num_train
    write_back = options["weight_centering"] == "write_back"
    flat = lambda t: ops.reshape(t, (ops.shape(t)[0], -1))
    if write_back:  # Algorithm 2 line 2: the centred vector is w itself, for sampling and the residual alike
        prior.point_weights.assign(project_weights(prior.point_weights, n))
    weights = ops.convert_to_tensor(prior.point_weights)
    sample_seed, decode_seed = split_seed(prior.seed_generator, 2)
    z = prior.sample(options["num_samples"], seed=sample_seed)
    decoder_means = flat(model.decode(z, seed=decode_seed))
    points = flat(prior.points)
    kind, log_var = potential_form(model, options["potential"])
    grad_w, grad_u = coreset_gradients(
        points, weights, flat(ops.convert_to_tensor(images)), decoder_means, log_var, n,
        options["gradient_centering"], kind,
    )
    grad = ops.concatenate([grad_w, ops.reshape(grad_u, (-1,))])
    step = prior.update_count
    direction, moment1, moment2 = adam_direction(grad, prior.moment1, prior.moment2, step)
    gamma = options["step_size"] / (step + 1.0)
    if options["update_weights"]:
        weight_gamma = gamma  # official: the shared step of [w; vec(U)]
        if options["weight_step_size"]:  # w's own schedule, in units of N/M
            weight_gamma = options["weight_step_size"] * (n / m) / (step + 1.0)
        new_weights = weights - weight_gamma * direction[:m]
        # line 15's projection onto w >= 0; under write_back onto {w >= 0, sum w = N}
        prior.point_weights.assign(project_weights(new_weights, n) if write_back else ops.maximum(new_weights, 0.0))
    if options["update_points"]:
        new_points = points - gamma * ops.reshape(direction[m:], ops.shape(points))
        new_points = ops.reshape(new_points, ops.shape(prior.points))
        if options["clip_points"]:
            new_points = ops.clip(new_points, 0.0, 1.0)
        prior.points.assign(new_points)
    prior.moment1.assign(moment1)
    prior.moment2.assign(moment2)
    prior.update_count.assign(step + 1.0)
    return ops.sqrt(ops.mean(ops.square(grad_w)))


def coreset_statistics(prior):
    """The history's view of the pseudocoreset: the effective number of pseudo-points of the mixture's
    weights w~ (centred, clamped), (sum w~)^2 / sum w~^2 (M while they are equal), its largest and smallest
    weight, and the fraction of pseudo-point pixels outside [0, 1]."""
    w = ops.convert_to_numpy(prior.centred_weights()).astype("float64")
    u = ops.convert_to_numpy(prior.points)
    return {
        "coreset_ess": float(w.sum() ** 2 / max(np.square(w).sum(), 1e-300)),
        "coreset_weight_max": float(w.max()),
        "coreset_weight_min": float(w.min()),
        "coreset_points_outside": float(np.mean((u < 0.0) | (u > 1.0))),
    }


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
        """The phase after (1-based) epoch e runs at the start of 0-based epoch e when e % k == 0 (never
        when neither U nor w is updated)."""
        if not (self.options["update_points"] or self.options["update_weights"]):
            return False
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
        logs["coreset_seconds"] = self.seconds
        logs.update(coreset_statistics(self.vae.prior))


@prior_callbacks(PseudocoresetPrior)
def coreset_callbacks(model, splits, train_config):
    """ByPE's alternation: a coreset phase every `coreset.interval` epochs."""
    return [CoresetPhase(model, splits.train, train_config.batch_size, model.prior.coreset, model.prior.seed)]
