"""VAEPP benchmark on mnist10k (issue 14): VAEPP (1-step) and Naive VAEPP against a standard-prior VAE with the
same networks and schedule.

    KERAS_BACKEND=tensorflow python benchmarks/vaepp.py --epochs 100 --out benchmarks/results/vaepp-tensorflow.json

Every model is zoo/vaepp_mnist.yaml on mnist10k (7000 training, 1000 validation, 2000 test images of the
MNIST test file, dynamically binarised) with `--epochs`, early stopping off and `--set` overrides. With
`--networks mlp` (the default: a 2-core CPU trains it in minutes) the config's ResNet networks are replaced by
the gated MLP VAE (300 units, latent 40) and an MLP critic (300 units); `--networks resnet` keeps the code's.
- `vaepp`: the config as it is (Algorithm 2, the code's options);
- `vaepp_naive`: train.procedure.name=vaepp_naive (Algorithm 1);
- `standard`: model.prior=standard_normal, train.procedure=elbo (the same networks, optimiser, epochs and
  posterior options; no critic, no L2, no latent GAN).

Reported per model, all measured in this one process:
- `nll`: the IWAE test NLL (S = --iwae-samples; the proposal reads the grey test image e with the q(z | e)
  trick, `proposal` says which) with log Z frozen by `fit` from the q-proposal over the whole
  training set, `log_normalizer` +- its standard error, and `nll_standard_normal_prior` (the same networks
  under N(0, I): the code's test_nll beside adv_test_nll);
- `beta`: beta = w sigmoid(xi) at the end;
- `epoch_seconds` (median of epochs 2..E, training + validation passes) and `epoch_vs_standard`;
- `frechet`: Frechet distance of --fid-samples decodes against the test split, in the features of the
  project's grey MNIST classifier (evaluation.classifier, trained on this training split; not an FID), for
  the three sampling modes of `PullBackPrior.sampling_modes` (VAEPP: latent GAN + MALA; GAN-VAEPP: the GAN's
  draws decoded; N(0, I) decoding), each with its MALA acceptance rate; the standard prior has one mode;
- `mala_step_seconds_100_chains`: (time of a 100-chain draw with K MALA steps - time with 0 steps) / K,
  median of --repeats timings, compiled functions warmed up first.
"""

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import keras  # noqa: E402
import yaml  # noqa: E402

from machine import cpu_name  # noqa: E402  (benchmarks/ is sys.path[0] when run as a script)
from speed import EpochTimer  # noqa: E402
from evaluation import classifier, density, frechet  # noqa: E402
from evaluation.common import ModelFunctions  # noqa: E402
from evaluation.data import evaluation_data  # noqa: E402
from training import config as config_lib, data as data_lib, fit  # noqa: E402
from zoo import atomic  # noqa: E402

MODELS = {
    "vaepp": [],
    "vaepp_naive": ["train.procedure.name=vaepp_naive"],
    "standard": ["model.prior=standard_normal", "train.procedure=elbo"],
}


def frechet_by_mode(model, data, extractor, count, seed):
    """{mode: {"value", "mala_acceptance_rate"}} over the prior's sampling modes (one mode, `prior`, without),
    against the test split's intensities."""
    fns = ModelFunctions(model)
    modes = model.prior.sampling_modes() or {"prior": lambda n, s: (model.prior.sample(n, seed=s), None)}
    real = extractor(data.test)
    out = {}
    for name, draw in modes.items():
        z, rate = draw(count, seed)
        images = fns.decode(keras.ops.convert_to_numpy(z))
        out[name] = {"value": frechet.frechet_distance_of(extractor(images), real)}
        if rate is not None:
            out[name]["mala_acceptance_rate"] = float(keras.ops.convert_to_numpy(rate))
    return out


def mala_step_seconds(prior, chains, steps, repeats):
    """Seconds of one MALA transition for `chains` chains: (t(K steps) - t(0 steps)) / K, median of repeats."""
    def timed(k):
        start = time.perf_counter()
        z, _ = prior.sample_chain(chains, seed=1, mala_steps=k)
        keras.ops.convert_to_numpy(z)
        return time.perf_counter() - start

    timed(steps), timed(0)  # warm-up (tracing)
    return statistics.median((timed(steps) - timed(0)) / steps for _ in range(repeats))


def base_config(networks, folder):
    """zoo/vaepp_mnist.yaml, with the MLP networks for `networks: mlp` (a YAML file in `folder`)."""
    raw = yaml.safe_load((ROOT / "zoo" / "vaepp_mnist.yaml").read_text())
    if networks == "mlp":
        model = raw["model"]
        for key in ("network", "width", "log_std_min"):
            model.pop(key, None)
        model.update(architecture="vae", latent_dim=40, hidden_units=300)
        model["prior"].update(critic="mlp", critic_units=300)
    path = Path(folder) / "vaepp_mnist.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def bench_model(key, args, extractor, data):
    with tempfile.TemporaryDirectory() as folder:
        config = config_lib.load(base_config(args.networks, folder), [
            "data.name=mnist10k", f"train.epochs={args.epochs}", "train.verbose=0", "train.early_stopping_patience=0",
            *MODELS[key], *args.set])
    timer = EpochTimer()
    with tempfile.TemporaryDirectory() as run_dir:
        start = time.perf_counter()
        model, _ = fit.train(config, run_dir, run_evaluation=False, extra_callbacks=[timer])
        train_seconds = time.perf_counter() - start
    splits = data_lib.load_splits(config.data)
    config.evaluate.num_samples = args.iwae_samples
    config.evaluate.max_examples = args.iwae_images
    grey = data.test if getattr(model, "encoder_input", "image") == "grey" else None  # the test proposal q(z | e)
    metrics = density.evaluate(model, splits.test, config.evaluate, verbose=False, encoder_images=grey)
    result = {"epoch_times": timer.times, "epoch_seconds": statistics.median(timer.times[1:] or timer.times),
              "train_seconds_with_phases": train_seconds,
              **{k: metrics[k] for k in metrics if k.startswith(("nll", "log_normalizer", "negative_elbo", "kl",
                                                                   "reconstruction", "proposal"))},
              "num_test_images": metrics["num_examples"]}
    if hasattr(model.prior, "beta"):
        result["beta"] = float(keras.ops.convert_to_numpy(model.prior.beta()))
        result["mala_step_seconds_100_chains"] = mala_step_seconds(model.prior, 100, args.mala_steps, args.repeats)
    result["frechet"] = frechet_by_mode(model, data, extractor, args.fid_samples, seed=args.seed)
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default=",".join(MODELS), help="comma-separated keys of " + ", ".join(MODELS))
    parser.add_argument("--networks", choices=("mlp", "resnet"), default="mlp")
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--iwae-samples", type=int, default=1000)
    parser.add_argument("--iwae-images", type=int, default=None, help="test images for the NLL (default all 2000)")
    parser.add_argument("--fid-samples", type=int, default=2000)
    parser.add_argument("--mala-steps", type=int, default=20, help="K of the MALA step timing")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0, help="seed of the sampling-mode draws")
    parser.add_argument("--set", action="append", default=[], help="extra config override for every model")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    keys = args.models.split(",")
    unknown = [k for k in keys if k not in MODELS]
    if unknown:
        parser.error(f"unknown model keys {unknown}; choose from {', '.join(MODELS)}")
    data_config = config_lib.load(ROOT / "zoo" / "vaepp_mnist.yaml", ["data.name=mnist10k"]).data
    data = evaluation_data(data_config, data_lib.load_splits(data_config))
    network, info = classifier.load_or_train(data, verbose=False)
    extractor = frechet.ClassifierFeatures(network, info)
    out = {"backend": keras.backend.backend(), "machine": cpu_name(), "networks": args.networks, "epochs": args.epochs,
           "iwae_samples": args.iwae_samples, "fid_samples": args.fid_samples, "overrides": args.set,
           "feature_extractor": extractor.name, "complete": False, "results": {}}
    for key in keys:
        print(f"== {key}", flush=True)
        out["results"][key] = bench_model(key, args, extractor, data)
        print(json.dumps({k: v for k, v in out["results"][key].items() if k != "epoch_times"}), flush=True)
        atomic.write_text(Path(args.out), json.dumps(out, indent=2))
    results = out["results"]
    if "standard" in results:
        for r in results.values():
            r["epoch_vs_standard"] = r["epoch_seconds"] / results["standard"]["epoch_seconds"]
            r["nll_minus_standard"] = r["nll"] - results["standard"]["nll"]
    out["complete"] = True
    atomic.write_text(Path(args.out), json.dumps(out, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
