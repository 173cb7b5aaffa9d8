"""Evaluate a run the way the papers do: density, representations, samples, augmentation, sample quality.

    python -m training.evaluate RUN_DIR [--metrics nll,active_units,knn,tsne,samples,augmentation,fid,curves,bsvi]
                                        [--num-samples 5000] [--split test] [--max-examples N] [--seed S]

All metrics but bsvi (the BSVI-500 bound, ELBO*, KL* and Reconstruction*: run it by name) by default; `evaluation/` implements them (`evaluation.density` the test ELBO and the IWAE
log-likelihood) and `evaluation.report` writes RUN_DIR/metrics.json, RUN_DIR/figures/*.png and
RUN_DIR/report.md atomically.
"""

import argparse
import sys
from pathlib import Path

from training import cli, config_check


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--metrics", default="all",
                        help="comma-separated subset of nll,active_units,knn,tsne,samples,augmentation,fid,curves,bsvi "
                             "(default: all, which leaves out bsvi)")
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
    parser.add_argument("--bsvi-steps", type=int, help="SVI steps of the BSVI bound and ELBO* (default 500)")
    parser.add_argument("--bsvi-elbo-samples", type=int, help="draws from q_500 for ELBO* (default 100)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config value")
    parser.add_argument("--quiet", action="store_true", help="no progress output")
    cli.add_output_flags(parser)
    args = parser.parse_args(argv)

    overrides = list(args.set)
    for key, value in (("num_samples", args.num_samples), ("split", args.split), ("max_examples", args.max_examples)):
        if value is not None:
            overrides.append(f"evaluate.{key}={value}")
    if not (args.run_dir / "config.yaml").is_file():  # checked before the slow imports
        parser.error(f"{args.run_dir} is not a run directory (no config.yaml); give the folder training.fit wrote")
    raw = config_check.precheck(args.run_dir / "config.yaml", overrides)
    cli.import_backend(args.verbose or args.debug)
    from evaluation import report
    from training import config as config_lib, data as data_lib
    from training.checkpoints import load_run_model

    try:
        metrics = report.parse_metrics(args.metrics)
    except ValueError as error:
        parser.error(str(error))
    config = config_lib.from_dict(raw)
    options = report.EvaluationOptions(seed=config.seed if args.seed is None else args.seed)
    if args.knn_k:
        options.knn_ks = tuple(int(k) for k in args.knn_k.split(","))
    for name, value in (("tsne_points", args.tsne_points), ("fid_samples", args.fid_samples),
                        ("fid_features", args.fid_features), ("inception_weights", args.inception_weights),
                        ("classifier_cache", args.classifier_cache), ("classifier_epochs", args.classifier_epochs),
                        ("bsvi_steps", args.bsvi_steps), ("bsvi_elbo_samples", args.bsvi_elbo_samples)):
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
    splits = data_lib.load_splits(config.data)
    model = load_run_model(args.run_dir)
    report.evaluate_run(args.run_dir, model, splits, config, metrics, options, verbose=not args.quiet)
    print((args.run_dir / "report.md").read_text())


if __name__ == "__main__":
    sys.exit(cli.run(main))
