"""The density part of evaluation: test ELBO, RE, KL and the importance-sampled log-likelihood.

log p(x) ~= logsumexp_s [log p(x, z_s) - log q(z_s | x)] - log S with S posterior samples per image
(Burda et al.'s IWAE bound; VampPrior paper Eq. 19), computed by `model.log_likelihood` in chunks of at
most `evaluate.max_batch` (image, sample) pairs merged in log space. `run` (called by training.fit)
writes the density numbers with sample and reconstruction grids.
"""

import json
import math
import time

import keras
import numpy as np
from keras import ops

from evaluation.progress import progress_bar
from training.figures import interleave_rows, save_grid
from zoo import atomic
from zoo.compiled import backend_function, model_function


def elbo_metrics(model, images, batch_size):
    """Single-sample ELBO terms averaged over `images` (beta = 1)."""
    terms_fn = model_function(model, "elbo_terms", model.elbo_terms)
    log_px, kl = [], []
    for start in range(0, len(images), batch_size):
        terms = terms_fn(images[start: start + batch_size])
        log_px.append(ops.convert_to_numpy(terms["log_px"]))
        kl.append(ops.convert_to_numpy(terms["kl"]))
    log_px, kl = np.concatenate(log_px), np.concatenate(kl)
    return {"negative_elbo": float(np.mean(kl - log_px)), "reconstruction": float(-np.mean(log_px)),
            "kl": float(np.mean(kl))}


def standard_prior_twin(model):
    """The model's encoder, decoder and likelihood (its weights) under the N(0, I) prior: the NLL beside the
    learned prior's shows what the prior adds (VAEPP's `test_nll` beside its `adv_test_nll`)."""
    from layers.priors import PRIORS

    prior = PRIORS.build(PRIORS.options("standard_normal"), latent_dim=model.prior.latent_dim, name="prior")
    config = {**model.get_config(), "prior": keras.saving.serialize_keras_object(prior)}
    twin = type(model).from_config(config)

    def networks(m):  # in creation order (auto-named sublayers get other names in the twin)
        return [v for v in m.weights if not v.path.startswith("prior/")]

    for mine, theirs in zip(networks(twin), networks(model), strict=True):
        if tuple(mine.shape) != tuple(theirs.shape):
            raise RuntimeError(f"standard-prior twin: weight {mine.path} {mine.shape} != {theirs.path} {theirs.shape}")
        mine.assign(theirs)
    return twin


def evaluate(model, images, evaluate_config, batch_size=500, verbose=True, encoder_images=None):
    """All density metrics of one split as a JSON-able dict. `encoder_images`: the grey images e behind
    binarised `images`, which the IWAE proposal q(z | e) reads (VAEPP's q(z | e) trick, as its code
    evaluates); the ELBO metrics encode `images`."""
    if evaluate_config.max_examples is not None:
        images = images[: evaluate_config.max_examples]
        if encoder_images is not None:
            encoder_images = encoder_images[: evaluate_config.max_examples]
    start = time.perf_counter()
    metrics = elbo_metrics(model, images, batch_size)
    progress = progress_bar(len(images), unit_name="image").add if verbose else None
    ll = model.log_likelihood(images, evaluate_config.num_samples, evaluate_config.max_batch, progress=progress,
                              encoder_images=encoder_images)
    metrics.update({
        "nll": float(-np.mean(ll)),
        "nll_standard_error": float(np.std(ll) / math.sqrt(len(ll))),
        "num_examples": int(len(images)),
        "num_samples": int(evaluate_config.num_samples),
        "proposal": "q(z | e), e the grey image" if encoder_images is not None else "q(z | x)",
    })
    if model.prior.normalizer_is_estimated:  # the NLL is as good as the frozen log Z it used
        metrics["log_normalizer"] = float(ops.convert_to_numpy(model.prior.log_z))
        metrics["log_normalizer_standard_error"] = float(ops.convert_to_numpy(model.prior.log_z_stderr))
    if model.prior.reports_standard_normal_nll:
        twin_ll = standard_prior_twin(model).log_likelihood(images, evaluate_config.num_samples,
                                                            evaluate_config.max_batch, encoder_images=encoder_images)
        metrics["nll_standard_normal_prior"] = float(-np.mean(twin_ll))
    likelihood = model.likelihood
    offset = likelihood.log_normalizer_offset()
    dims = likelihood.event_size
    if offset:
        # squared error: also report the normalised Gaussian (variance 1/2) numbers
        metrics["nll_gaussian_normalized"] = metrics["nll"] - offset
        metrics["negative_elbo_gaussian_normalized"] = metrics["negative_elbo"] - offset
    if not likelihood.needs_binary_data:
        # continuous data in [0, 1]: a density needs + D log 256 to become a probability of 8-bit pixels
        nll = metrics.get("nll_gaussian_normalized", metrics["nll"])
        discrete_nll = nll if likelihood.is_discrete else nll + dims * math.log(256)
        metrics["bits_per_dim"] = discrete_nll / (dims * math.log(2))
    metrics["seconds"] = time.perf_counter() - start
    return metrics


def save_figures(model, images, run_dir, seed, count=64):
    """samples.png (from the prior) and reconstructions.png (test images above their reconstructions)."""
    samples = ops.convert_to_numpy(model.sample(count, seed=seed))
    save_grid(samples, run_dir / "samples.png")
    originals = images[:32]
    recon = ops.convert_to_numpy(backend_function(model, model.reconstruct)(originals))
    save_grid(interleave_rows(originals, recon, 8), run_dir / "reconstructions.png")


def run(run_dir, model, splits, config, verbose=True):
    """Evaluate `model` on the configured split and write metrics.json and figures into `run_dir`."""
    images = splits.test if config.evaluate.split == "test" else splits.validation
    metrics = {"split": config.evaluate.split, "backend": keras.backend.backend()}
    metrics.update(evaluate(model, images, config.evaluate, config.train.eval_batch_size, verbose))
    atomic.write_text(run_dir / "metrics.json", json.dumps(metrics, indent=2) + "\n")
    save_figures(model, images, run_dir, seed=config.seed)
    return metrics
