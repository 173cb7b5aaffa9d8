"""The BSVI paper's evaluation (Appendix B, Eq. 58-59) for any single-latent model.

Log-likelihood: the BSVI-500 bound, E[log (1/501) sum_{i=0..500} w_i] over the weights of a 500-step SVI
trajectory from the encoder's output (Theorem 1: a lower bound on log p(x); Appendix C: as tight as
IWAE-500..2500). ELBO*: the SVI-500 bound, the ELBO of q_500 = q(z; lambda_500), estimated with
`elbo_samples` draws and split into Reconstruction* = -E[log p(x | z)] and KL* = E[log q_500 - log p(z)].

The SVI step is the run's own (its `train.procedure` options when it trained with SVI or BSVI, else the
defaults of `zoo.svi.SVIOptions`), applied to `batch_size` images at a time (the training batch size), so
the evaluation's steps are the training's steps. The 500-step loop is one compiled loop per chunk.
"""

import math
import time

import numpy as np
from keras import ops

from layers.distributions import log_normal_diag
from zoo.compiled import model_function
from zoo.svi import (SVIOptions, bsvi_bound, check_single_latent, draw_noise, log_buffer_weights,
                     log_weight_terms, refine)

DEFAULT_STEPS = 500
DEFAULT_ELBO_SAMPLES = 100


def svi_options_of(procedure_options):
    """The SVI step of a run: its procedure's options where it has them, the defaults otherwise."""
    names = [name for name in SVIOptions.__dataclass_fields__ if name in (procedure_options or {})]
    return SVIOptions(**{name: procedure_options[name] for name in names})


def refined_bounds(model, x, steps, options, elbo_samples):
    """Per image: (BSVI-steps bound, log p(x | z) and log p(z) - log q(z) averaged over z ~ q_steps)."""
    x = ops.convert_to_tensor(x)
    mean, log_var = model.encode(x)
    noise = draw_noise(model, steps + 1, ops.shape(mean))
    density = model.prior.density()
    trajectory = refine(model, x, mean, log_var, noise[:steps], density, options)
    last_mean, last_log_var = trajectory.means[-1], trajectory.log_vars[-1]
    z_last = last_mean + ops.exp(0.5 * last_log_var) * noise[-1]
    last_px, last_ratio = log_weight_terms(model, x, z_last, last_mean, last_log_var, density)
    log_w = ops.concatenate([trajectory.log_px + trajectory.log_ratio, (last_px + last_ratio)[None]], axis=0)
    bound = bsvi_bound(log_w, log_buffer_weights(steps + 1))
    # ELBO* of q_steps with S fresh draws per image (one decoder call on S * B points)
    b, d = ops.shape(mean)[0], ops.shape(mean)[1]
    eps = draw_noise(model, elbo_samples, (b, d))
    z = last_mean[None] + ops.exp(0.5 * last_log_var)[None] * eps
    flat_z = ops.reshape(z, (-1, d))
    x_rep = ops.reshape(ops.repeat(x[None], elbo_samples, axis=0), (-1, *ops.shape(x)[1:]))
    log_px = ops.reshape(model.conditional_log_prob(x_rep, flat_z), (elbo_samples, b))
    log_ratio = ops.reshape(density(flat_z), (elbo_samples, b)) - log_normal_diag(z, last_mean[None], last_log_var[None])
    return bound, ops.mean(log_px, axis=0), ops.mean(log_ratio, axis=0)


def evaluate(model, images, steps=DEFAULT_STEPS, options=None, batch_size=50, elbo_samples=DEFAULT_ELBO_SAMPLES,
             progress=None):
    """The BSVI-`steps` log-likelihood bound and ELBO* with KL* and Reconstruction* (JSON-able dict)."""
    check_single_latent(model, "the bsvi evaluation")
    options = options or SVIOptions()
    start = time.perf_counter()
    fn = model_function(model, f"bsvi_{steps}_{elbo_samples}_{options}",
                        lambda x: refined_bounds(model, x, steps, options, elbo_samples))
    bounds, log_px, log_ratio = [], [], []
    for first in range(0, len(images), batch_size):
        out = [ops.convert_to_numpy(t).astype("float64") for t in fn(images[first: first + batch_size])]
        bounds.append(out[0])
        log_px.append(out[1])
        log_ratio.append(out[2])
        if progress is not None:
            progress(len(out[0]))
    bounds, log_px, log_ratio = np.concatenate(bounds), np.concatenate(log_px), np.concatenate(log_ratio)
    if not np.all(np.isfinite(bounds)):
        raise FloatingPointError(f"the BSVI bound is not finite for {int(np.sum(~np.isfinite(bounds)))} images")
    return {
        "bsvi_nll": float(-np.mean(bounds)),
        "bsvi_nll_standard_error": float(np.std(bounds) / math.sqrt(len(bounds))),
        "negative_elbo_star": float(-np.mean(log_px + log_ratio)),
        "kl_star": float(-np.mean(log_ratio)),
        "reconstruction_star": float(-np.mean(log_px)),
        "steps": int(steps),
        "elbo_samples": int(elbo_samples),
        "batch_size": int(batch_size),
        "svi": dict(vars(options)),
        "num_examples": int(len(images)),
        "seconds": time.perf_counter() - start,
    }
