"""Speed benchmark on mnist10k (issue #2): seconds per epoch and IWAE evaluation time, per backend.

    KERAS_BACKEND=tensorflow python benchmarks/speed.py --out benchmarks/results/speed-tensorflow.json

Absolute seconds drift with machine load, so every figure is also reported as a ratio measured in the same
run: achieved FLOP/s over the FLOP/s of a large dense matmul on this backend (model multiply-adds are
counted by hooking every Dense / GatedDense / Conv2D call of a real forward pass; a training step counts as
3x its forward pass), and each epoch time over the MLP VAE standard-prior epoch time.
An epoch is timed as the reference code times it: training pass plus validation pass (checkpoint writes
excluded). The epoch time is the median of epochs 2..N.
"""

import argparse
import contextlib
import json
import math
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import keras  # noqa: E402
import numpy as np  # noqa: E402
from keras import ops  # noqa: E402

from layers.gated import GatedDense  # noqa: E402
from training import config as config_lib, data as data_lib, fit  # noqa: E402
from zoo import atomic  # noqa: E402

CONFIGS = {
    "vae/standard": "standard_vae.yaml",
    "vae/vampprior": "vamp_vae.yaml",
    "hvae/standard": "standard_hvae.yaml",
    "hvae/vampprior": "vamp_hvae.yaml",
    "conv_hvae/standard": "standard_convhvae.yaml",
    "conv_hvae/vampprior": "vamp_convhvae.yaml",
}


def matmul_flops(n=2048, repeats=7):
    """FLOP/s of an n x n x n float32 matmul on the active backend (median of `repeats`)."""
    a = ops.convert_to_tensor(np.random.default_rng(0).standard_normal((n, n)).astype("float32"))
    times = []
    for i in range(repeats + 1):
        start = time.perf_counter()
        float(ops.convert_to_numpy(ops.sum(ops.matmul(a, a))))
        if i:  # the first call warms up
            times.append(time.perf_counter() - start)
    return 2 * n**3 / statistics.median(times)


@contextlib.contextmanager
def count_macs():
    """Count multiply-adds of Dense, GatedDense and Conv2D calls made inside the block (eager)."""
    counter = {"macs": 0}
    originals = {cls: cls.call for cls in (keras.layers.Dense, GatedDense, keras.layers.Conv2D)}

    def dense_call(self, x, *a, **k):
        counter["macs"] += math.prod(x.shape[:-1]) * x.shape[-1] * self.units
        return originals[keras.layers.Dense](self, x, *a, **k)

    def gated_call(self, x, *a, **k):
        counter["macs"] += math.prod(x.shape[:-1]) * x.shape[-1] * 2 * self.units
        return originals[GatedDense](self, x, *a, **k)

    def conv_call(self, x, *a, **k):
        out = originals[keras.layers.Conv2D](self, x, *a, **k)
        counter["macs"] += math.prod(out.shape) * x.shape[-1] * math.prod(self.kernel_size)
        return out

    keras.layers.Dense.call, GatedDense.call, keras.layers.Conv2D.call = dense_call, gated_call, conv_call
    try:
        yield counter
    finally:
        for cls, call in originals.items():
            cls.call = call


class EpochTimer(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.times = []

    def on_epoch_begin(self, epoch, logs=None):
        self.start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.times.append(time.perf_counter() - self.start)


def forward_macs(fn, *args):
    with count_macs() as counter:
        fn(*args)
    return counter["macs"]


def bench_config(key, epochs, iwae_images, iwae_samples, overrides):
    config = config_lib.load(ROOT / "zoo" / CONFIGS[key], ["data.name=mnist10k", f"train.epochs={epochs}",
                                                           "train.verbose=0", *overrides])
    timer = EpochTimer()
    with tempfile.TemporaryDirectory() as run_dir:
        model, _ = fit.train(config, run_dir, run_evaluation=False, extra_callbacks=[timer])
    splits = data_lib.load_splits(config.data)
    b, vb = config.train.batch_size, config.train.eval_batch_size
    steps = data_lib.steps_per_epoch(splits, b)
    train_macs = 3 * steps * forward_macs(model.elbo_terms, splits.train[:b])
    val_macs = sum(forward_macs(model.elbo_terms, splits.validation[i: i + vb]) for i in range(0, len(splits.validation), vb))
    epoch_seconds = statistics.median(timer.times[1:])
    result = {
        "config": CONFIGS[key], "epoch_times": timer.times, "epoch_seconds": epoch_seconds,
        "epoch_gflop": 2 * (train_macs + val_macs) / 1e9,
        "epoch_gflops_per_s": 2 * (train_macs + val_macs) / epoch_seconds / 1e9,
    }
    if iwae_images:
        images = splits.test[:iwae_images]
        max_batch = config.evaluate.max_batch
        per_call_images = max(1, max_batch // iwae_samples)
        chunk = min(iwae_samples, max_batch)
        chunk_sizes = [min(chunk, iwae_samples - done) for done in range(0, iwae_samples, chunk)]
        macs_per_image_block = sum(chunk_sizes.count(c) * forward_macs(model.log_importance_weights,
                                                                        images[:per_call_images], c)
                                   for c in set(chunk_sizes))
        macs = macs_per_image_block * len(images) / per_call_images
        model.log_likelihood(images[:per_call_images], chunk, max_batch)  # compile
        start = time.perf_counter()
        ll = model.log_likelihood(images, iwae_samples, max_batch)
        seconds = time.perf_counter() - start
        result["iwae"] = {"images": len(images), "samples": iwae_samples, "seconds": seconds,
                          "gflops_per_s": 2 * macs / seconds / 1e9, "nll_after_training": float(-ll.mean())}
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", default=",".join(CONFIGS), help="comma-separated keys of " + ", ".join(CONFIGS))
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--iwae-images", type=int, default=2000,
                        help="test images for the IWAE timing of vae/standard (0: skip)")
    parser.add_argument("--iwae-images-other", type=int, default=200, help="the same for the other MLP configs")
    parser.add_argument("--iwae-images-conv", type=int, default=10, help="the same for ConvHVAE (hours at 2000)")
    parser.add_argument("--epochs-conv", type=int, default=3, help="epochs for ConvHVAE (about a minute each here)")
    parser.add_argument("--iwae-samples", type=int, default=5000)
    parser.add_argument("--set", action="append", default=[], help="config override for every run")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()

    backend = keras.backend.backend()
    report = {"backend": backend, "keras": keras.__version__, "machine": platform.processor() or platform.machine(),
              "cpu_count": os.cpu_count(), "epochs": args.epochs, "overrides": args.set,
              "matmul_gflops_per_s": [], "results": {}}
    report["matmul_gflops_per_s"].append(matmul_flops() / 1e9)
    for key in args.configs.split(","):
        conv = key.startswith("conv")
        images = args.iwae_images_conv if conv else args.iwae_images if key == "vae/standard" else args.iwae_images_other
        print(f"[{backend}] {key} ...", flush=True)
        epochs = args.epochs_conv if conv else args.epochs
        report["results"][key] = bench_config(key, epochs, images, args.iwae_samples, args.set)
        report["matmul_gflops_per_s"].append(matmul_flops() / 1e9)  # re-measured between runs: load drifts
        print(json.dumps(report["results"][key]), flush=True)
    peak = statistics.median(report["matmul_gflops_per_s"]) * 1e9
    base = report["results"].get("vae/standard", {}).get("epoch_seconds")
    for r in report["results"].values():
        r["fraction_of_matmul_rate"] = r["epoch_gflops_per_s"] * 1e9 / peak
        if base:
            r["epoch_over_vae_standard"] = r["epoch_seconds"] / base
        if "iwae" in r:
            r["iwae"]["fraction_of_matmul_rate"] = r["iwae"]["gflops_per_s"] * 1e9 / peak
    atomic.write_text(args.out, json.dumps(report, indent=2) + "\n")
    print(json.dumps({k: {"s/epoch": round(v["epoch_seconds"], 3), "matmul frac": round(v["fraction_of_matmul_rate"], 2),
                          "x vae": round(v.get("epoch_over_vae_standard", float("nan")), 2)}
                      for k, v in report["results"].items()}, indent=1))


if __name__ == "__main__":
    main()
