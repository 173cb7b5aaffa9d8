"""Evaluate a run the way the papers do: density, representations, samples, augmentation, sample quality.

    python -m training.evaluate RUN_DIR [--metrics nll,active_units,knn,tsne,samples,augmentation,fid,curves]
                                        [--num-samples 5000] [--split test] [--max-examples N] [--seed S]

All metrics by default; `evaluation/` implements them and `evaluation.report` writes RUN_DIR/metrics.json,
RUN_DIR/figures/*.png and RUN_DIR/report.md atomically. This module keeps the density part: test ELBO,
RE, KL and the importance-sampled log-likelihood

log p(x) ~= logsumexp_s [log p(x, z_s) - log q(z_s | x)] - log S with S posterior samples per image
(Burda et al.'s IWAE bound; VampPrior paper Eq. 19). Samples are processed in chunks of at most
`evaluate.max_batch` (image, sample) pairs and merged with a running logsumexp, so memory stays bounded
for any S. `run` (called by training.fit) writes the density numbers with sample and reconstruction grids.
"""

import argparse
import json
import math
import sys
import time
from pathlib import Path

import keras
import numpy as np
from keras import ops

from layers.likelihoods import Bernoulli
from training import atomic, config as config_lib, data as data_lib
from training.compiled import backend_function, model_function
from training.figures import interleave_rows, save_grid


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


def log_likelihood(model, images, num_samples, max_batch, verbose=True):
    """Per-image importance-sampled log p(x) with `num_samples` samples, chunked by `max_batch`."""
    lse_fn = model_function(
        model, "log_sum_exp_importance_weights",
        lambda x, s: ops.logsumexp(model.log_importance_weights(x, s), axis=1), static_argnums=(1,)
    )
    sample_chunk = min(num_samples, max_batch)
    images_per_call = max(1, max_batch // num_samples)
    progress = keras.utils.Progbar(len(images), unit_name="image") if verbose else None
    result = np.empty(len(images), dtype="float64")
    for start in range(0, len(images), images_per_call):
        x = images[start: start + images_per_call]
        lse = np.full(len(x), -np.inf)
        for done in range(0, num_samples, sample_chunk):
            chunk = ops.convert_to_numpy(lse_fn(x, min(sample_chunk, num_samples - done))).astype("float64")
            lse = np.logaddexp(lse, chunk)
        result[start: start + len(x)] = lse - math.log(num_samples)
        if progress is not None:
            progress.add(len(x))
    if not np.all(np.isfinite(result)):
        bad = int(np.sum(~np.isfinite(result)))
        raise FloatingPointError(f"log-likelihood is not finite for {bad} of {len(result)} images")
    return result


def evaluate(model, images, evaluate_config, batch_size=500, verbose=True):
    """All density metrics of one split as a JSON-able dict."""
    if evaluate_config.max_examples is not None:
        images = images[: evaluate_config.max_examples]
    start = time.perf_counter()
    metrics = elbo_metrics(model, images, batch_size)
    ll = log_likelihood(model, images, evaluate_config.num_samples, evaluate_config.max_batch, verbose)
    metrics.update({
        "nll": float(-np.mean(ll)),
        "nll_standard_error": float(np.std(ll) / math.sqrt(len(ll))),
        "num_examples": int(len(images)),
        "num_samples": int(evaluate_config.num_samples),
    })
    likelihood = model.likelihood
    offset = likelihood.log_normalizer_offset()
    dims = likelihood.event_size
    if offset:
        # squared error: also report the normalised Gaussian (variance 1/2) numbers
        metrics["nll_gaussian_normalized"] = metrics["nll"] - offset
        metrics["negative_elbo_gaussian_normalized"] = metrics["negative_elbo"] - offset
    if not isinstance(likelihood, Bernoulli):
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


def weights_of(run_dir):
    """The weights a finished or interrupted run offers: final, else best, else last checkpoint."""
    for candidate in (run_dir / "model.weights.h5", run_dir / "best.weights.h5",
                      run_dir / "checkpoint" / "model.weights.h5"):
        if candidate.exists():
            return candidate
    raise FileNotFoundError(f"{run_dir} holds no weights (model.weights.h5, best.weights.h5 or checkpoint/)")


def main(argv=None):
    from evaluation import report

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--metrics", default="all",
                        help=f"comma-separated subset of {','.join(report.METRICS)} (default: all)")
    parser.add_argument("--num-samples", type=int, help="importance samples per image (evaluate.num_samples)")
    parser.add_argument("--split", choices=["test", "validation"], help="split of the density metrics")
    parser.add_argument("--max-examples", type=int, help="density metrics on the first N images only")
    parser.add_argument("--seed", type=int, help="seed of every random draw of the evaluation (default: the run's)")
    parser.add_argument("--knn-k", help="comma-separated K values (default 3,5,7,9,11,13,15)")
    parser.add_argument("--tsne-points", type=int, help="t-SNE of at most N test images (default 2000)")
    parser.add_argument("--augmentation-epochs", type=int, help="classifier epochs (default 100, the papers')")
    parser.add_argument("--augmentation-lambda", type=float, help="weight of the real minibatch (default 0.4)")
    parser.add_argument("--fid-samples", type=int, help="generated images for the Frechet distance (default 10000)")
    parser.add_argument("--fid-features", choices=["auto", "inception", "classifier"],
                        help="feature space: InceptionV3 (RGB default) or the grey-image classifier (grey default)")
    parser.add_argument("--inception-weights", help="InceptionV3 no-top ImageNet weights file (default: Keras cache)")
    parser.add_argument("--classifier-cache", help="folder of cached feature classifiers (default ~/.cache/vae_prior_zoo)")
    parser.add_argument("--classifier-epochs", type=int, help="epochs of a feature classifier trained now (default 8)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config value")
    parser.add_argument("--quiet", action="store_true", help="no progress output")
    args = parser.parse_args(argv)

    try:
        metrics = report.parse_metrics(args.metrics)
    except ValueError as error:
        parser.error(str(error))
    overrides = list(args.set)
    for key, value in (("num_samples", args.num_samples), ("split", args.split), ("max_examples", args.max_examples)):
        if value is not None:
            overrides.append(f"evaluate.{key}={value}")
    config = config_lib.load(args.run_dir / "config.yaml", overrides)
    options = report.EvaluationOptions(seed=config.seed if args.seed is None else args.seed)
    if args.knn_k:
        options.knn_ks = tuple(int(k) for k in args.knn_k.split(","))
    for name, value in (("tsne_points", args.tsne_points), ("fid_samples", args.fid_samples),
                        ("fid_features", args.fid_features), ("inception_weights", args.inception_weights),
                        ("classifier_cache", args.classifier_cache), ("classifier_epochs", args.classifier_epochs)):
        if value is not None:
            setattr(options, name, value)
    if args.augmentation_epochs is not None:
        options.augmentation.epochs = args.augmentation_epochs
    if args.augmentation_lambda is not None:
        options.augmentation.real_weight = args.augmentation_lambda
    try:
        options.validate()
    except ValueError as error:
        parser.error(str(error))
    from zoo.builder import build_model

    splits = data_lib.load_splits(config.data)
    model = build_model(config.model, splits.image_shape, seed=config.seed, num_train=len(splits.train))
    model.load_weights(weights_of(args.run_dir))
    report.evaluate_run(args.run_dir, model, splits, config, metrics, options, verbose=not args.quiet)
    print((args.run_dir / "report.md").read_text())


if __name__ == "__main__":
    sys.exit(main())
