"""Run the chosen metrics on a trained model and write the report into its run directory.

    metrics.json   density numbers at the top level (as `evaluation.density` writes them), one section
                   per other metric, `skipped` {metric: reason}, `evaluation` (seed, backend, seconds);
                   merged with what an earlier evaluation of the run wrote, so metrics can be added one at
                   a time
    figures/       PNG figures
    report.md      a short Markdown summary of metrics.json with the figures

Each metric reseeds the model's generators from (seed, metric name) first, so a metric's numbers do not
depend on which other metrics ran; every file is written atomically.
"""

import difflib
import functools
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import keras
import numpy as np

from evaluation import active_units as au, curves, knn, plots, samples, tsne
from evaluation.augmentation import AugmentationOptions, augmentation
from evaluation.common import ModelFunctions, Skipped, derive_seed, reseed, subset
from evaluation.data import evaluation_data
from evaluation.progress import progress_bar
from zoo import atomic

METRICS = ("nll", "active_units", "knn", "tsne", "samples", "augmentation", "fid", "curves")
ON_REQUEST = ("bsvi",)
"""Metrics `all` leaves out because of their cost: bsvi (500 SVI steps per test image) runs when named."""
TOP_LEVEL_SECTIONS = {"nll"}  # the density numbers sit at the top of metrics.json, as training.fit writes them


@dataclass
class EvaluationOptions:
    seed: int = 0
    knn_ks: tuple = knn.KS
    tsne_points: int = 2000
    """t-SNE of at most this many test images (a seeded subset)."""
    augmentation: AugmentationOptions = field(default_factory=AugmentationOptions)
    fid_samples: int = 10000
    """Generated images for the Frechet distance (real side: the whole test split)."""
    fid_features: str = "auto"
    """auto (InceptionV3 for RGB, the grey classifier for grey data) | inception | classifier."""
    inception_weights: str | None = None
    """InceptionV3 no-top ImageNet weights file (default: the Keras cache), or "random" (code-path check)."""
    classifier_cache: str | None = None
    classifier_epochs: int = 8
    batch_size: int = 500
    bsvi_steps: int = 500
    """SVI steps of the BSVI bound and of ELBO* (the paper's BSVI-500 / SVI-500)."""
    bsvi_elbo_samples: int = 100
    """Draws from q_500 that estimate ELBO*, KL* and Reconstruction*."""

    def validate(self):
        """Raise ValueError naming the option (as its command-line flag) and the accepted range."""
        a = self.augmentation
        checks = [
            (all(int(k) >= 1 for k in self.knn_ks), f"--knn-k: every K must be >= 1, got {list(self.knn_ks)}"),
            (self.tsne_points >= 5, f"--tsne-points: t-SNE needs at least 5 points, got {self.tsne_points}"),
            (self.fid_samples >= 2, f"--fid-samples: needs at least 2 images, got {self.fid_samples}"),
            (self.fid_features in ("auto", "inception", "classifier"),
             f"--fid-features: '{self.fid_features}' is not one of auto, inception, classifier"),
            (self.classifier_epochs >= 1, f"--classifier-epochs: must be >= 1, got {self.classifier_epochs}"),
            (self.bsvi_steps >= 1, f"--bsvi-steps: must be >= 1, got {self.bsvi_steps}"),
            (self.bsvi_elbo_samples >= 1, f"--bsvi-elbo-samples: must be >= 1, got {self.bsvi_elbo_samples}"),
            (a.epochs >= 1, f"--augmentation-epochs: must be >= 1, got {a.epochs}"),
            (0.0 <= a.real_weight <= 1.0, f"--augmentation-lambda: must lie in [0, 1], got {a.real_weight}"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)


def parse_metrics(text):
    """'all' or a comma-separated subset of METRICS, in the order given; unknown names fail with a hint."""
    if text in (None, "", "all"):
        return list(METRICS)
    names = [name.strip() for name in text.split(",") if name.strip()]
    known = METRICS + ON_REQUEST
    for name in names:
        if name not in known:
            close = difflib.get_close_matches(name, known, n=1)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            raise ValueError(f"--metrics: unknown metric '{name}'{hint} (choose from {', '.join(known)} or all)")
    return names


class Context:
    """What every metric reads: the model and its compiled functions, the data, the options, where to write."""

    def __init__(self, run_dir, model, splits, config, options, verbose):
        self.run_dir = Path(run_dir)
        self.figures = self.run_dir / "figures"
        self.model, self.splits, self.config, self.options, self.verbose = model, splits, config, options, verbose
        self.fns = ModelFunctions(model, options.batch_size)

    @functools.cached_property
    def data(self):
        return evaluation_data(self.config.data, self.splits)


# --- one function per metric: returns its metrics.json section or raises Skipped -------------------------
def run_nll(ctx):
    from evaluation import density

    test = ctx.config.evaluate.split == "test"
    images = ctx.splits.test if test else ctx.splits.validation
    grey = None  # VAEPP's q(z | e) trick: the proposal reads the grey image behind each binarised one
    if getattr(ctx.model, "encoder_input", "image") == "grey":
        grey = ctx.data.test if test else ctx.data.validation
    out = {"split": ctx.config.evaluate.split, "backend": keras.backend.backend()}
    out.update(density.evaluate(ctx.model, images, ctx.config.evaluate, ctx.config.train.eval_batch_size, ctx.verbose,
                                encoder_images=grey))
    return out


def run_bsvi(ctx):
    from evaluation import refinement

    if ctx.model.stochastic_layers != 1:
        raise Skipped(f"the BSVI bound refines a single Gaussian q(z | x); {type(ctx.model).__name__} has "
                      f"{ctx.model.stochastic_layers} stochastic layers")
    evaluate = ctx.config.evaluate
    images = ctx.splits.test if evaluate.split == "test" else ctx.splits.validation
    if evaluate.max_examples is not None:
        images = images[: evaluate.max_examples]
    procedure = ctx.config.train.procedure
    options = refinement.svi_options_of(vars(procedure))
    progress = progress_bar(len(images), unit_name="image").add if ctx.verbose else None
    out = refinement.evaluate(ctx.model, images, ctx.options.bsvi_steps, options, ctx.config.train.batch_size,
                              ctx.options.bsvi_elbo_samples, progress=progress)
    return {"split": evaluate.split, **out}


def run_active_units(ctx):
    result = au.active_units(ctx.fns.means(ctx.data.model_test))
    plots.variances(result["variances"], result["threshold"], ctx.figures / "active_units.png",
                    f"active units: {result['count']} of {result['latent_dim']}")
    return {**result, "split": "test", "figure": "figures/active_units.png"}


def run_knn(ctx):
    data = ctx.data
    data.require_labels("kNN classification")
    references = np.concatenate([data.train, data.validation])
    labels = np.concatenate([data.train_labels, data.validation_labels])
    accuracy = knn.knn_accuracy(ctx.fns.means(references), labels, ctx.fns.means(data.test), data.test_labels,
                                ctx.options.knn_ks)
    ks = sorted(accuracy)
    plots.lines({"kNN on latent means": (ks, [100 * accuracy[k] for k in ks])}, ctx.figures / "knn.png",
                "kNN classification of test images", "K", "accuracy (%)", marker="o")
    return {"accuracy": {str(k): accuracy[k] for k in ks}, "num_references": int(len(references)),
            "num_queries": int(len(data.test)), "references": "train + validation", "queries": "test",
            "embedding": "encoder mean of the top latent", "figure": "figures/knn.png"}


def run_tsne(ctx):
    data, seed = ctx.data, ctx.options.seed
    chosen = subset(len(data.test), ctx.options.tsne_points, derive_seed(seed, "tsne_subset"))
    if ctx.verbose:
        print(f"t-SNE of {len(chosen)} test latent means")
    points = tsne.tsne_embedding(ctx.fns.means(data.test[chosen]), seed)
    labels = data.test_labels[chosen] if data.test_labels is not None else np.zeros(len(chosen), "int64")
    title = "t-SNE of test latent means" + ("" if data.test_labels is not None else " (no labels)")
    plots.scatter_by_label(points, labels, ctx.figures / "tsne.png", title)
    return {"num_points": int(len(chosen)), "coloured_by_label": data.test_labels is not None,
            "figure": "figures/tsne.png"}


def run_samples(ctx):
    return samples.sample_figures(ctx.model, ctx.fns, ctx.data, ctx.figures, ctx.options.seed)


def run_augmentation(ctx):
    return augmentation(ctx.model, ctx.fns, ctx.data, ctx.options.augmentation, ctx.options.seed, verbose=ctx.verbose)


def feature_extractor(ctx):
    from evaluation import classifier, frechet

    options, data = ctx.options, ctx.data
    choice = options.fid_features
    if choice == "auto":
        choice = "inception" if data.train.shape[-1] == 3 else "classifier"
    if choice == "inception":
        try:
            return frechet.InceptionFeatures(options.inception_weights), None
        except FileNotFoundError as error:
            raise Skipped(str(error)) from None
    if choice != "classifier":
        raise ValueError(f"--fid-features: '{choice}' is not one of auto, inception, classifier")
    if data.train.shape[-1] != 1:
        raise Skipped(f"the feature classifier is for grey images and {data.name} is RGB; use --fid-features inception")
    recipe = classifier.Recipe(epochs=options.classifier_epochs)
    network, info = classifier.load_or_train(data, options.classifier_cache, recipe, ctx.verbose)
    return frechet.ClassifierFeatures(network, info), info


def run_fid(ctx):
    from evaluation import frechet

    extractor, info = feature_extractor(ctx)
    count, seed = ctx.options.fid_samples, ctx.options.seed

    def generate(draw):
        """Decoded images of `count` latents from `draw(n, seed) -> (z, acceptance or None)`, in chunks."""
        images, rates = [], []
        for i, start in enumerate(range(0, count, 1000)):
            z, rate = draw(min(1000, count - start), derive_seed(seed, "fid", i))
            images.append(ctx.fns.decode(keras.ops.convert_to_numpy(z)))
            rates.append(rate)
        return np.concatenate(images), rates

    generated, _ = generate(lambda n, s: (ctx.model.prior.sample(n, seed=s), None))
    if ctx.verbose:
        print(f"Frechet distance: features of {len(generated)} samples and {len(ctx.data.test)} test images")
    real = extractor(ctx.data.test)
    value = frechet.frechet_distance_of(extractor(generated), real)
    modes = {}
    for name, draw in ctx.model.prior.sampling_modes().items():  # the same seeds for every mode
        images, rates = generate(draw)
        modes[name] = {"value": frechet.frechet_distance_of(extractor(images), real)}
        if rates[0] is not None:
            modes[name]["mala_acceptance_rate"] = float(np.mean([float(keras.ops.convert_to_numpy(r)) for r in rates]))
    chosen = subset(len(ctx.data.train), count, derive_seed(seed, "fid_train"))
    floor = frechet.frechet_distance_of(extractor(ctx.data.train[chosen]), real)
    out = {"value": value, "feature_extractor": extractor.name, "features": extractor.kind,
           "num_generated": int(len(generated)), "real": f"test split ({len(ctx.data.test)} images)",
           "train_vs_test": floor, "train_vs_test_images": int(len(chosen))}
    if modes:
        out["sampling_modes"] = modes
    if info is not None:
        out["classifier"] = {k: info[k] for k in ("key", "source", "weights", "test_accuracy", "train_images", "recipe")}
    return out


def run_curves(ctx):
    history = curves.read_history(ctx.run_dir / "history.csv")
    plots.panels(curves.curve_groups(history), ctx.figures / "curves.png", "epoch")
    return {**curves.summary(history), "figure": "figures/curves.png"}


RUNNERS = {"nll": run_nll, "active_units": run_active_units, "knn": run_knn, "tsne": run_tsne,
           "samples": run_samples, "augmentation": run_augmentation, "fid": run_fid, "curves": run_curves,
           "bsvi": run_bsvi}
DENSITY_KEYS = ("split", "backend", "negative_elbo", "reconstruction", "kl", "nll", "nll_standard_error",
                "num_examples", "num_samples", "nll_gaussian_normalized", "negative_elbo_gaussian_normalized",
                "bits_per_dim", "seconds")


def evaluate_run(run_dir, model, splits, config, metrics=METRICS, options=None, verbose=True):
    """Run `metrics` (names from METRICS) and update metrics.json, figures/ and report.md in `run_dir`."""
    options = options or EvaluationOptions(seed=config.seed)
    options.validate()
    ctx = Context(run_dir, model, splits, config, options, verbose)
    path = ctx.run_dir / "metrics.json"
    results = json.loads(path.read_text()) if path.exists() else {}
    skipped = results.setdefault("skipped", {})
    evaluation = results.setdefault("evaluation", {})
    evaluation.update(seed=options.seed, backend=keras.backend.backend())
    seconds = evaluation.setdefault("seconds", {})
    for name in metrics:
        if verbose:
            print(f"[{name}]")
        reseed(model, derive_seed(options.seed, name))
        start = time.perf_counter()
        try:
            section = RUNNERS[name](ctx)
        except Skipped as reason:
            skipped[name] = str(reason)
            results.pop(name, None)
            if verbose:
                print(f"[{name}] skipped: {reason}")
            continue
        skipped.pop(name, None)
        if name in TOP_LEVEL_SECTIONS:
            results.update(section)
        else:
            results[name] = section
        seconds[name] = round(time.perf_counter() - start, 2)
        if verbose:
            print(f"[{name}] done in {seconds[name]:.1f} s")
    atomic.write_text(path, json.dumps(results, indent=2) + "\n")
    atomic.write_text(ctx.run_dir / "report.md", markdown(results, config, ctx.run_dir))
    return results


# --- report.md ------------------------------------------------------------------------------------------
def _pct(x):
    return f"{100 * x:.2f}"


def summary_rows(results):
    """(metric, value) rows of the headline numbers present in `results`."""
    rows = []
    if "nll" in results:
        rows.append((f"test NLL (IWAE, S = {results['num_samples']}, {results['num_examples']} images)",
                     f"{results['nll']:.2f} +- {results['nll_standard_error']:.2f} nats"))
        rows.append(("negative ELBO = reconstruction + KL",
                     f"{results['negative_elbo']:.2f} = {results['reconstruction']:.2f} + {results['kl']:.2f}"))
        if "nll_gaussian_normalized" in results:
            rows.append(("NLL, normalised Gaussian (variance 1/2)", f"{results['nll_gaussian_normalized']:.2f} nats"))
        if "bits_per_dim" in results:
            rows.append(("bits per dimension", f"{results['bits_per_dim']:.3f}"))
    if "bsvi" in results:
        b = results["bsvi"]
        rows.append((f"test NLL (BSVI-{b['steps']} bound, {b['num_examples']} images)",
                     f"{b['bsvi_nll']:.2f} +- {b['bsvi_nll_standard_error']:.2f} nats"))
        rows.append((f"negative ELBO* (SVI-{b['steps']}) = Reconstruction* + KL*",
                     f"{b['negative_elbo_star']:.2f} = {b['reconstruction_star']:.2f} + {b['kl_star']:.2f}"))
    if "active_units" in results:
        a = results["active_units"]
        rows.append((f"active units (Var E[z|x] > {a['threshold']})", f"{a['count']} of {a['latent_dim']}"))
    if "knn" in results:
        acc = results["knn"]["accuracy"]
        rows.append((f"kNN accuracy (%), K = {', '.join(acc)}", " / ".join(_pct(v) for v in acc.values())))
    if "augmentation" in results:
        a = results["augmentation"]
        for mode in ("none", "posterior", "prior_kernel"):
            if mode in a:
                rows.append((f"augmentation test error (%), {mode} ({a['protocol']['epochs']} epochs)",
                             f"{a[mode]['test_error']:.2f}"))
    if "fid" in results:
        f = results["fid"]
        rows.append((f"Frechet distance, {f['num_generated']} samples vs {f['real']}; features: {f['feature_extractor']}",
                     f"{f['value']:.3f} (training images vs test: {f['train_vs_test']:.3f})"))
        for name, mode in f.get("sampling_modes", {}).items():
            rate = mode.get("mala_acceptance_rate")
            rows.append((f"Frechet distance, sampling mode {name}",
                         f"{mode['value']:.3f}" + ("" if rate is None else f" (MALA acceptance {rate:.3f})")))
    if "curves" in results and "best_val_loss" in results["curves"]:
        c = results["curves"]
        rows.append(("best validation loss (epoch of epochs)", f"{c['best_val_loss']:.3f} ({c['best_epoch']} of {c['epochs']})"))
    return rows


def figure_paths(results):
    paths = []
    for name, section in results.items():
        if isinstance(section, dict):
            if "figure" in section:
                paths.append((name, section["figure"]))
            for key, value in section.get("figures", {}).items():
                paths.append((key, value))
    return paths


def markdown(results, config, run_dir):
    m = config.model
    lines = [
        f"# Evaluation of {Path(run_dir).name}",
        "",
        f"{m.architecture} / {m.prior.name} prior / {m.likelihood.name} likelihood, d_z = {m.latent_dim}, on "
        f"{config.data.name} ({config.data.preprocessing}); backend {results['evaluation']['backend']}, "
        f"evaluation seed {results['evaluation']['seed']}.",
        "",
        "| metric | value |",
        "|---|---|",
        *[f"| {name} | {value} |" for name, value in summary_rows(results)],
    ]
    notes = dict(results.get("skipped", {}))
    for name in ("samples", "augmentation"):
        for part, reason in results.get(name, {}).get("skipped", {}).items():
            notes[f"{name}: {part}"] = reason
    if notes:
        lines += ["", "## Not computed", "", *[f"- {name}: {reason}" for name, reason in notes.items()]]
    figures = figure_paths(results)
    if figures:
        lines += ["", "## Figures", ""]
        lines += [f"![{name}]({path})" for name, path in figures if (Path(run_dir) / path).exists()]
    return "\n".join(lines) + "\n"
