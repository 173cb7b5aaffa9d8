"""How fast can the MLP VAE training step be on this CPU? A floor for issue #2's "0.8 of the matmul rate".

    python benchmarks/mlp_floor.py --out benchmarks/results/mlp-floor-tensorflow.json

The MLP VAE step (batch 100, 784-300-300-40 gated encoder and decoder, Bernoulli likelihood) written
directly in TensorFlow, without Keras, as one `tf.function` graph loop over an epoch's 70 batches, with
three updates: plain SGD (the floor: forward + backward only), Keras's Adam, and the papers' AdamNormGrad.
Each is compared, in the same run, with a large dense matmul and with a single matmul of the step's
largest shape (100 x 784 x 600). Multiply-adds are counted by hand from the layer shapes (a training step
is 3x the forward pass, as in `speed.py`). Median of `--repeats` epochs after a warm-up epoch.
"""

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from speed import matmul_flops  # noqa: E402  (benchmarks/ is sys.path[0] when run as a script)
from zoo import atomic  # noqa: E402
from training.optimizers import AdamNormGrad  # noqa: E402

BATCH, STEPS, HIDDEN, LATENT, PIXELS = 100, 70, 300, 40, 784
# (fan_in, fan_out) of every matmul; gated layers compute value and gate in one matmul of 2x the width
LAYERS = [(PIXELS, 2 * HIDDEN), (HIDDEN, 2 * HIDDEN), (HIDDEN, 2 * LATENT),
          (LATENT, 2 * HIDDEN), (HIDDEN, 2 * HIDDEN), (HIDDEN, PIXELS)]
STEP_FLOP = 3 * 2 * BATCH * sum(a * b for a, b in LAYERS)


def timed(fn, repeats):
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def small_matmul_rate(m, k, n, repeats, calls=100):
    """GFLOP/s of an m x k x n matmul called `calls` times in one graph loop (the step's regime)."""
    a, b = tf.random.normal((m, k)), tf.random.normal((k, n))

    @tf.function
    def loop():
        total = tf.constant(0.0)
        for i in tf.range(calls):  # a data dependency on i keeps the calls from being merged
            total += tf.reduce_sum(tf.matmul(a + tf.cast(i, tf.float32), b))
        return total

    return 2 * m * k * n * calls / timed(lambda: loop().numpy(), repeats) / 1e9


def mlp_epoch_rate(update, repeats):
    rng = np.random.default_rng(0)
    kernels = [tf.Variable(rng.standard_normal((a, b)).astype("float32") * np.float32(np.sqrt(2 / a)))
               for a, b in LAYERS]
    biases = [tf.Variable(tf.zeros(b)) for _, b in LAYERS]
    variables = kernels + biases
    images = tf.constant((rng.random((BATCH * STEPS, PIXELS)) > 0.5).astype("float32"))
    optimizer = {"sgd": None, "adam": keras.optimizers.Adam(5e-4), "adam_norm_grad": AdamNormGrad(5e-4)}[update]
    if optimizer is not None:
        optimizer.build(variables)

    def dense(h, i):
        return tf.matmul(h, kernels[i]) + biases[i]

    def gated(h, i):
        value, gate = tf.split(dense(h, i), 2, axis=1)
        return value * tf.sigmoid(gate)

    def loss(x):
        mean, log_var = tf.split(dense(gated(gated(x, 0), 1), 2), 2, axis=1)
        z = mean + tf.exp(0.5 * log_var) * tf.random.normal(tf.shape(mean))
        logits = dense(gated(gated(z, 3), 4), 5)
        log_px = -tf.reduce_sum(tf.nn.sigmoid_cross_entropy_with_logits(labels=x, logits=logits), axis=1)
        kl = 0.5 * tf.reduce_sum(tf.exp(log_var) + tf.square(mean) - 1.0 - log_var, axis=1)
        return tf.reduce_mean(kl - log_px)

    @tf.function
    def epoch():
        value = tf.constant(0.0)
        for step in tf.range(STEPS):
            x = images[step * BATCH: (step + 1) * BATCH]
            with tf.GradientTape() as tape:
                value = loss(x)
            grads = tape.gradient(value, variables)
            if optimizer is None:
                for v, g in zip(variables, grads):
                    v.assign_sub(1e-4 * g)
            else:
                optimizer.apply(grads, variables)
        return value

    seconds = timed(lambda: epoch().numpy(), repeats)
    return {"seconds_per_70_steps": seconds, "gflops_per_s": STEP_FLOP * STEPS / seconds / 1e9}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    big = [matmul_flops(repeats=args.repeats) / 1e9]  # the reference rate speed.py's fractions use
    report = {"backend": "tensorflow (no Keras in the step)", "tensorflow": tf.__version__,
              "machine": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(),
              "step_gflop": STEP_FLOP / 1e9,
              "matmul_100x784x600_gflops_per_s": small_matmul_rate(BATCH, PIXELS, 2 * HIDDEN, args.repeats),
              "steps": {}}
    for update in ("sgd", "adam", "adam_norm_grad"):
        report["steps"][update] = mlp_epoch_rate(update, args.repeats)
        big.append(matmul_flops(repeats=args.repeats) / 1e9)  # re-measured: load drifts
    peak = statistics.median(big)
    report["matmul_2048_gflops_per_s"] = big
    report["matmul_100x784x600_fraction"] = report["matmul_100x784x600_gflops_per_s"] / peak
    for result in report["steps"].values():
        result["fraction_of_matmul_rate"] = result["gflops_per_s"] / peak
    atomic.write_text(args.out, json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
