"""PixelCNN decoders (issue 13): sampling cost, and PixelHVAE vs ConvHVAE on mnist10k.

    KERAS_BACKEND=tensorflow python benchmarks/pixelcnn.py sampling --out benchmarks/results/pixelcnn-sampling-tensorflow.json
    KERAS_BACKEND=tensorflow python benchmarks/pixelcnn.py density --epochs 10 \
        --out benchmarks/results/pixelcnn-density-tensorflow.json

`sampling`: the two reference decoders at 28x28x1 with their paper sizes (weights as initialised: the cost of
a pass does not depend on their values): pixel_hvae (8 masked 3x3 convolutions of width 64) and pixel_vae
(12 gated blocks of width 32). For n images: seconds of one teacher-forced pass log p(x | z) (compiled), of
`model.decode` (784 sequential steps, compiled) with the `full` and `window` samplers, and of the SavedModel's
`decode` signature (the same loop in the TensorFlow graph TF Serving runs), each the median of --reps calls
after one warm-up call (`--full-max`: the largest n the full sampler is timed at), and each as a ratio to the pass. pixel_vae's receptive field covers all 28 rows, so
its window sampler is the full one and only n = 16 is timed.

`density`: vamp_convhvae, vamp_pixelhvae and standard_pixelhvae trained on binarised mnist10k for the same
--epochs (KL warm-up --warmup epochs); per model: seconds per epoch (median of epochs 2..E) and its ratios
(PixelHVAE / ConvHVAE with the VampPrior; VampPrior / standard on PixelHVAE, which the VampPrior paper gives
as x1.4), test NLL (IWAE, S = --iwae-samples on --iwae-images test images), the negative ELBO, KL, and the
active units of the top latent z2 (variance of the posterior mean > 0.01): with a PixelCNN decoder, KL and
active units show how much of z the decoder uses.
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
import numpy as np  # noqa: E402

from machine import cpu_name  # noqa: E402  (benchmarks/ is sys.path[0] when run as a script)
from speed import EpochTimer  # noqa: E402
from evaluation import density  # noqa: E402
from evaluation.active_units import active_units  # noqa: E402
from evaluation.common import ModelFunctions  # noqa: E402
from training import config as config_lib, data as data_lib, fit  # noqa: E402
from zoo import atomic  # noqa: E402
from zoo.base import build_model  # noqa: E402
from zoo.compiled import backend_function  # noqa: E402

SAMPLING_MODELS = {"pixel_hvae": "vamp_pixelhvae.yaml", "pixel_vae": "pixelvae.yaml"}
DENSITY_MODELS = ["vamp_convhvae", "vamp_pixelhvae", "standard_pixelhvae"]
PAPER_TIME_RATIO_VAMP_OVER_STANDARD_PIXELHVAE = 1.4  # VampPrior paper, section 5.3 (K = 500, MNIST)


def timed(fn, reps):
    fn()  # compile / trace
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), times


def export_decode(model):
    """The SavedModel's decode signature (exported to a temporary folder, loaded back)."""
    import tensorflow as tf

    from exports.saved_model import export

    base = Path(tempfile.mkdtemp(prefix="pixelcnn-export-"))
    export(model, base, "pixel", version=1)
    loaded = tf.saved_model.load(str(base / "pixel" / "1"))
    return loaded, loaded.signatures["decode"]


def bench_sampling(args, write):
    results = {}
    for architecture in args.decoders:
        config_file = SAMPLING_MODELS[architecture]
        config = config_lib.load(ROOT / "zoo" / config_file, ["data.name=mnist10k"])
        model = build_model(config.model, (28, 28, 1), seed=0, num_train=100)
        _, signature = export_decode(model) if args.saved_model else (None, None)
        counts = args.counts if architecture == "pixel_hvae" else [c for c in args.counts if c <= 16]
        rows = {}
        for n in counts:
            rng = np.random.default_rng(n)
            x = (rng.random((n, 28, 28, 1)) < 0.3).astype("float32")
            z = rng.normal(size=(n, model.latent_dim)).astype("float32")
            row = {}
            if model.stochastic_layers == 2:
                pass_fn = backend_function(model, lambda x: model.log_px(x, *latents(model, z)))
            else:
                pass_fn = backend_function(model, lambda x: model.conditional_log_prob(x, keras.ops.convert_to_tensor(z)))
            row["pass_seconds"], row["pass_runs"] = timed(lambda: keras.ops.convert_to_numpy(pass_fn(x)), args.reps)
            samplers = ["window", "full"] if model.pixel_trunk.rows_above + 1 < 28 else ["full"]
            if n > args.full_max and len(samplers) == 2:
                samplers = ["window"]
            for sampler in samplers:
                model.sampler = sampler
                decode = backend_function(model, lambda z: model.decode(keras.ops.convert_to_tensor(z), seed=0))
                seconds, runs = timed(lambda: keras.ops.convert_to_numpy(decode(z)), args.reps)
                row[f"keras_{sampler}_seconds"], row[f"keras_{sampler}_runs"] = seconds, runs
                row[f"keras_{sampler}_vs_pass"] = seconds / row["pass_seconds"]
            model.sampler = config.model.sampler
            if signature is not None:
                import tensorflow as tf

                seconds, runs = timed(lambda: signature(z=tf.constant(z), seed=tf.constant(0))["images"].numpy(), args.reps)
                row[f"saved_model_{model.sampler}_seconds"], row[f"saved_model_{model.sampler}_runs"] = seconds, runs
                row[f"saved_model_{model.sampler}_vs_pass"] = seconds / row["pass_seconds"]
            if "keras_window_seconds" in row:
                row["window_speedup"] = row["keras_full_seconds"] / row["keras_window_seconds"]
            rows[str(n)] = row
            print(architecture, n, {k: v for k, v in row.items() if not k.endswith("_runs")}, flush=True)
        results[architecture] = {"rows_above": model.pixel_trunk.rows_above, "samples": rows}
        write(results)  # what is measured so far survives an interrupted run
    return results


def latents(model, z):
    """(z1, z2) for a hierarchical model: z2 = z, z1 its conditional prior mean (a pass needs both)."""
    mean1, _ = model.p_z1(keras.ops.convert_to_tensor(z))
    return mean1, keras.ops.convert_to_tensor(z)


def bench_density(args):
    results = {}
    for key in DENSITY_MODELS:
        config = config_lib.load(ROOT / "zoo" / f"{key}.yaml", [
            "data.name=mnist10k", f"train.epochs={args.epochs}", f"train.warmup_epochs={args.warmup}",
            "train.verbose=0", "train.early_stopping_patience=0", *args.set])
        timer = EpochTimer()
        with tempfile.TemporaryDirectory() as run_dir:
            model, _ = fit.train(config, run_dir, run_evaluation=False, extra_callbacks=[timer])
        splits = data_lib.load_splits(config.data)
        result = {"epoch_times": timer.times, "epoch_seconds": statistics.median(timer.times[1:] or timer.times)}
        config.evaluate.num_samples = args.iwae_samples
        config.evaluate.max_examples = args.iwae_images
        config.evaluate.max_batch = 500
        start = time.perf_counter()
        metrics = density.evaluate(model, splits.test, config.evaluate, verbose=False)
        result["iwae_seconds"] = time.perf_counter() - start
        result.update({k: metrics[k] for k in metrics if k.startswith(("nll", "negative_elbo", "kl", "reconstruction"))})
        result["num_test_images"] = metrics["num_examples"]
        result["active_units"] = active_units(ModelFunctions(model).means(splits.test))["count"]
        result["latent_dim"] = config.model.latent_dim
        results[key] = result
        print(key, {k: v for k, v in result.items() if k != "epoch_times"}, flush=True)
    conv, pixel, standard = (results[k]["epoch_seconds"] for k in DENSITY_MODELS)
    ratios = {"pixelhvae_vs_convhvae_epoch": pixel / conv, "vamp_vs_standard_pixelhvae_epoch": pixel / standard,
              "paper_vamp_vs_standard_pixelhvae_epoch": PAPER_TIME_RATIO_VAMP_OVER_STANDARD_PIXELHVAE}
    return {"models": results, "ratios": ratios}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("part", choices=["sampling", "density"])
    parser.add_argument("--out", required=True)
    parser.add_argument("--reps", type=int, default=3, help="timed calls per measurement (sampling)")
    parser.add_argument("--counts", type=lambda s: [int(v) for v in s.split(",")], default=[16, 256])
    parser.add_argument("--decoders", type=lambda s: s.split(","), default=list(SAMPLING_MODELS))
    parser.add_argument("--full-max", type=int, default=256, help="time the full sampler up to this many images")
    parser.add_argument("--no-saved-model", dest="saved_model", action="store_false")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=5, help="KL warm-up epochs (the paper's 100 shortened)")
    parser.add_argument("--iwae-samples", type=int, default=500)
    parser.add_argument("--iwae-images", type=int, default=500)
    parser.add_argument("--set", action="append", default=[], help="config override for every model")
    args = parser.parse_args()

    def write(results):
        out = {"backend": keras.backend.backend(), "machine": cpu_name(),
               "part": args.part, "args": {k: v for k, v in vars(args).items() if k not in ("out", "part")},
               "results": results}
        atomic.write_text(Path(args.out), json.dumps(out, indent=2))
        print(f"wrote {args.out}")

    write(bench_sampling(args, write) if args.part == "sampling" else bench_density(args))


if __name__ == "__main__":
    main()
