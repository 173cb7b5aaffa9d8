"""The BSVI paper's comparison (Table 1 form) on mnist10k: VAE | IWAE-k' | SVI-k' | BSVI-k-SIR.

    KERAS_BACKEND=jax python benchmarks/bsvi.py --epochs 40 --seeds 0,1 --out benchmarks/results/bsvi-jax.json

One architecture for all rows (the gated MLP VAE: zoo/bsvi_omniglot.yaml with model.architecture=vae; latent 32, Bernoulli, AMSGrad
1e-3 with clipping 5, batch 50) on binarised mnist10k, k = 9 and k' = 10, every row trained for the same
epochs from the same seeds, with the KL warm-up shortened to --warmup-iterations. Per model, on all 2,000
test images: the BSVI-500 log-likelihood bound, ELBO* = the SVI-500 bound with KL* and Reconstruction*
(Eq. 58-59), and IWAE with S = 500 and 2500 beside it (Appendix C: BSVI-500 is as tight as IWAE-500..2500).
Timing, in this one process: seconds per training epoch of each procedure (median of epochs 2..E) as a ratio
to the `elbo` epoch, and the BSVI-500 evaluation of the test images against IWAE with S = 5000 on one model.
`--timing-only` trains each row for --epochs on one seed and times only that (run it on a quiet machine:
the ratios of a long run on a shared CPU mix in whatever else ran at the time):

    KERAS_BACKEND=jax python benchmarks/bsvi.py --timing-only --epochs 5 --out benchmarks/results/bsvi-timing-jax.json
"""

import argparse
import json
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

from speed import EpochTimer  # noqa: E402  (benchmarks/ is sys.path[0] when run as a script)
from evaluation import refinement  # noqa: E402
from training import config as config_lib, data as data_lib, fit  # noqa: E402
from zoo import atomic  # noqa: E402

ROWS = {  # the paper's four rows (Table 1), k' = 10 weights for every refined or importance-weighted row
    "vae": "elbo",
    "iwae": "{name: iwae, samples: 10}",
    "svi": "{name: svi, steps: 10}",
    "bsvi_sir": "{name: bsvi_sir, steps: 9}",
}
PAPER_OMNIGLOT = {"vae": -89.83, "iwae": -89.02, "svi": -89.65, "bsvi_sir": -88.80}


def train_row(row, seed, epochs, warmup_iterations, extra):
    config = config_lib.load(ROOT / "zoo" / "bsvi_omniglot.yaml", [
        "data.name=mnist10k", "data.image_size=null", "model.architecture=vae", f"seed={seed}", f"train.epochs={epochs}",
        f"train.warmup_iterations={warmup_iterations}", "train.early_stopping_patience=0", "train.verbose=0",
        f"train.procedure={ROWS[row]}", *extra])
    timer = EpochTimer()
    run_dir = Path(tempfile.mkdtemp(prefix=f"bsvi-{row}-{seed}-"))
    model, _ = fit.train(config, run_dir, run_evaluation=False, extra_callbacks=[timer])
    return config, model, timer.times


def evaluate_model(model, config, test, iwae_samples, bsvi_steps):
    out = {}
    start = time.perf_counter()
    out["bsvi"] = refinement.evaluate(model, test, bsvi_steps, refinement.svi_options_of(vars(config.train.procedure)),
                                      config.train.batch_size)
    out["bsvi_seconds"] = time.perf_counter() - start
    for s in iwae_samples:
        start = time.perf_counter()
        ll = model.log_likelihood(test, s)
        out[f"iwae_{s}_nll"] = float(-np.mean(ll))
        out[f"iwae_{s}_seconds"] = time.perf_counter() - start
    return out


def timing_only(args, seed):
    epochs = {}
    for row in args.rows.split(","):
        print(f"== {row}", flush=True)
        _, _, times = train_row(row, seed, args.epochs, args.warmup_iterations, args.set)
        epochs[row] = {"epoch_times": times, "epoch_seconds": statistics.median(times[1:] or times)}
        print(json.dumps(epochs[row]), flush=True)
    for row in epochs.values():
        row["epoch_vs_elbo"] = row["epoch_seconds"] / epochs["vae"]["epoch_seconds"] if "vae" in epochs else None
    out = {"backend": keras.backend.backend(), "machine": platform.processor() or platform.machine(),
           "epochs": args.epochs, "seed": seed, "rows": epochs}
    if "svi" in epochs and "bsvi_sir" in epochs:
        out["bsvi_sir_epoch_vs_svi"] = epochs["bsvi_sir"]["epoch_seconds"] / epochs["svi"]["epoch_seconds"]
    atomic.write_text(Path(args.out), json.dumps(out, indent=2))
    print(f"wrote {args.out}")


def mean_sd(values):
    return {"mean": float(np.mean(values)), "sd": float(np.std(values, ddof=1)) if len(values) > 1 else 0.0,
            "values": [float(v) for v in values]}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", default=",".join(ROWS))
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--warmup-iterations", type=int, default=1000,
                        help="KL warm-up steps (the paper's 5000 is 36 mnist10k epochs at batch 50)")
    parser.add_argument("--bsvi-steps", type=int, default=500)
    parser.add_argument("--iwae-samples", default="500,2500")
    parser.add_argument("--timing-samples", type=int, default=5000, help="IWAE S timed against BSVI-500")
    parser.add_argument("--max-test", type=int, default=None, help="test images (default all 2000)")
    parser.add_argument("--set", action="append", default=[], help="extra config override for every row")
    parser.add_argument("--timing-only", action="store_true", help="epoch times per row, first seed, no evaluation")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    if args.timing_only:
        return timing_only(args, seeds[0])
    iwae_samples = [int(s) for s in args.iwae_samples.split(",")]
    runs, timing = {}, {}
    test = None
    for row in args.rows.split(","):
        runs[row] = []
        for seed in seeds:
            print(f"== {row} seed {seed}", flush=True)
            config, model, times = train_row(row, seed, args.epochs, args.warmup_iterations, args.set)
            if test is None:
                test = data_lib.load_splits(config.data).test[: args.max_test]
            result = {"seed": seed, "epoch_times": times, "epoch_seconds": statistics.median(times[1:] or times)}
            result.update(evaluate_model(model, config, test, iwae_samples, args.bsvi_steps))
            if row == "vae" and seed == seeds[0] and args.timing_samples:
                start = time.perf_counter()
                model.log_likelihood(test, args.timing_samples)
                timing[f"iwae_{args.timing_samples}_seconds"] = time.perf_counter() - start
                timing["bsvi_seconds"] = result["bsvi_seconds"]
            runs[row].append(result)
            print(json.dumps({k: v for k, v in result.items() if k != "epoch_times"}), flush=True)
    summary = {}
    for row, results in runs.items():
        b = [r["bsvi"] for r in results]
        summary[row] = {
            "log_likelihood": mean_sd([-x["bsvi_nll"] for x in b]),
            "elbo_star": mean_sd([-x["negative_elbo_star"] for x in b]),
            "kl_star": mean_sd([x["kl_star"] for x in b]),
            "reconstruction_star": mean_sd([x["reconstruction_star"] for x in b]),
            **{f"iwae_{s}_log_likelihood": mean_sd([-r[f"iwae_{s}_nll"] for r in results]) for s in iwae_samples},
            "epoch_seconds": statistics.median(r["epoch_seconds"] for r in results),
        }
    if "vae" in summary:
        base = summary["vae"]["epoch_seconds"]
        for row in summary.values():
            row["epoch_vs_elbo"] = row["epoch_seconds"] / base
    if "svi" in summary and "bsvi_sir" in summary:
        timing["bsvi_sir_epoch_vs_svi"] = summary["bsvi_sir"]["epoch_seconds"] / summary["svi"]["epoch_seconds"]
    order = sorted(summary, key=lambda r: -summary[r]["log_likelihood"]["mean"])
    out = {"backend": keras.backend.backend(), "machine": platform.processor() or platform.machine(),
           "epochs": args.epochs, "seeds": seeds, "warmup_iterations": args.warmup_iterations,
           "bsvi_steps": args.bsvi_steps, "num_test_images": int(len(test)), "overrides": args.set,
           "summary": summary, "timing": timing, "ordering": order,
           "paper_omniglot_ordering": sorted(PAPER_OMNIGLOT, key=lambda r: -PAPER_OMNIGLOT[r]), "runs": runs}
    atomic.write_text(Path(args.out), json.dumps(out, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
