"""Prior benchmark on mnist10k (issue #3): seconds per epoch and test NLL per prior, MLP VAE, same epochs.

    KERAS_BACKEND=tensorflow python benchmarks/priors.py --epochs 50 --out benchmarks/results/priors-tensorflow.json
    KERAS_BACKEND=tensorflow python benchmarks/priors.py --priors ablation --seeds 1,2,3 --epochs 200 \
        --out benchmarks/results/priors-ablation-tensorflow.json      # the ByPE ablation (issue 15)

Every prior trains the same VAE in the ByPE setting (continuous MNIST, squared-error reconstruction, as the
official ByPE code runs its own exemplar baseline), from zoo/bype_vae.yaml with only the prior switched.
An epoch is timed as the reference code times it: training pass + validation pass (+ the coreset phase
for ByPE, which runs at the start of the epoch after every k-th one). Reported per prior:
- `regular_epoch_seconds`: median of the epochs 2..E without a coreset phase;
- `coreset_phase_seconds`: median duration of the coreset phases alone;
- `mean_epoch_seconds_10`: mean over the 10 epochs 2..11, which include exactly one coreset phase at k = 10;
- ratios to the standard prior's regular epoch, all measured in this one process;
- `nll`: importance-sampled test NLL (S = --iwae-samples) of the final weights, with its normalised
  Gaussian counterpart (the squared error is a Gaussian of variance 1/2 without its constant);
- `active_units` (test posterior means with variance > 0.01), `seconds_per_epoch` (mean over all epochs,
  phases included) and, for ByPE, the final history row's `coreset_ess`, extreme weights and fraction of
  pseudo-point pixels outside [0, 1].

With `--seeds`, every prior runs once per seed (the config's `seed`) and each result holds `runs` (one per
seed) and `mean` / `std` of its numbers. `--priors ablation` is the ByPE ablation: standard | VampPrior |
Exemplar exact | ByPE official mode | ByPE paper mode | ByPE with U frozen at its initial training images
and uniform weights (no coreset phase) | ByPE with w frozen uniform.
"""

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import keras  # noqa: E402

from machine import cpu_name  # noqa: E402  (benchmarks/ is sys.path[0] when run as a script)
from speed import EpochTimer  # noqa: E402
from evaluation import density  # noqa: E402
from evaluation.active_units import active_units  # noqa: E402
from evaluation.common import ModelFunctions  # noqa: E402
from layers.priors import PRIORS as REGISTERED_PRIORS  # noqa: E402
from training import config as config_lib, data as data_lib, fit  # noqa: E402
from zoo import atomic  # noqa: E402

BYPE_PAPER = ["model.prior.coreset.weight_centering=write_back", "model.prior.coreset.weight_step_size=0.5",
              "model.prior.coreset.gradient_centering=samples"]
# The papers' settings of the priors benchmarked so far; each replaces the whole model.prior section of
# zoo/bype_vae.yaml. Every other registered prior runs with its default options under its own name.
PAPER_SETTINGS = {
    "standard": ["model.prior=standard_normal"],
    "vampprior": ["model.prior={name: vampprior, components: 500}"],
    "bype": ["model.prior.name=bype", "model.prior.components=500"],
    "exemplar_exact": ["model.prior={name: exemplar, components: 3500, mode: exact}"],
    "exemplar_retrieval": ["model.prior={name: exemplar, components: 3500, mode: retrieval, k: 10}"],
}
# ByPE variants (issue 15), run by name or with --priors ablation
BYPE_VARIANTS = {
    # the coreset update as the paper states it (docs/models/bype.md#options): one weight vector, the weights'
    # own step size, the centring of Eq. 35
    "bype_paper": ["model.prior.name=bype", "model.prior.components=500", *BYPE_PAPER],
    "bype_paper_clipped": ["model.prior.name=bype", "model.prior.components=500", *BYPE_PAPER,
                           "model.prior.coreset.clip_points=true"],
    # ablations: U frozen at its initial training images with uniform weights (no phase), w frozen uniform
    "bype_frozen": ["model.prior.name=bype", "model.prior.components=500", "model.prior.coreset.update_points=false",
                    "model.prior.coreset.update_weights=false"],
    "bype_frozen_weights": ["model.prior.name=bype", "model.prior.components=500",
                            "model.prior.coreset.update_weights=false"],
}
COVERED = {"standard_normal", "vampprior", "bype", "exemplar"}
OTHERS = {name: [f"model.prior={name}"] for name in REGISTERED_PRIORS.names() if name not in COVERED}
PRIORS = {**PAPER_SETTINGS, **BYPE_VARIANTS, **OTHERS}
GROUPS = {"ablation": ["standard", "vampprior", "exemplar_exact", "bype", "bype_paper", "bype_frozen",
                       "bype_frozen_weights"]}
CORESET_COLUMNS = ("coreset_ess", "coreset_weight_max", "coreset_weight_min", "coreset_points_outside")


def bench_prior(key, epochs, warmup, iwae_samples, iwae_images, extra, timing_only=False):
    config = config_lib.load(ROOT / "zoo" / "bype_vae.yaml", [
        "data.name=mnist10k", f"train.epochs={epochs}", f"train.warmup_epochs={warmup}", "train.verbose=0",
        "train.early_stopping_patience=0", *PRIORS[key], *extra])
    timer = EpochTimer()  # first callback, so its epoch includes a coreset phase run at on_epoch_begin
    with tempfile.TemporaryDirectory() as run_dir:
        model, _ = fit.train(config, run_dir, run_evaluation=False, extra_callbacks=[timer])
        history = (Path(run_dir) / "history.csv").read_text().splitlines()
    header = history[0].split(",")
    rows = [dict(zip(header, line.split(","))) for line in history[1:]]
    phase = [float(r.get("coreset_seconds", 0.0) or 0.0) for r in rows]
    # the callback order puts the coreset phase inside the timer's epoch (the timer begins first)
    regular = [t for t, p in zip(timer.times[1:], phase[1:]) if p == 0.0]
    result = {
        "epoch_times": timer.times,
        # None when every timed epoch had a phase (coreset interval 1): there is no regular epoch to time
        "regular_epoch_seconds": statistics.median(regular) if regular else None,
        "mean_epoch_seconds_10": statistics.mean(timer.times[1:11]) if len(timer.times) >= 11 else None,
        "seconds_per_epoch": statistics.mean(timer.times),
    }
    result.update({k: float(rows[-1][k]) for k in CORESET_COLUMNS if rows[-1].get(k)})
    phases = [p for p in phase if p > 0]
    if phases:
        result["coreset_phase_seconds"] = statistics.median(phases)
        result["coreset_phases"] = phases
    if timing_only:
        return result
    splits = data_lib.load_splits(config.data)
    start = time.perf_counter()
    config.evaluate.num_samples = iwae_samples
    config.evaluate.max_examples = iwae_images
    metrics = density.evaluate(model, splits.test, config.evaluate, verbose=False)
    result.update({k: metrics[k] for k in metrics if k.startswith(("nll", "negative_elbo", "kl", "reconstruction"))})
    result["iwae_seconds"] = time.perf_counter() - start
    result["num_test_images"] = metrics["num_examples"]
    result["active_units"] = active_units(ModelFunctions(model).means(splits.test))["count"]
    return result


def summarise(runs):
    """{"runs": [...], "mean": {...}, "std": {...}} over the numbers every run has (population std)."""
    keys = [k for k, v in runs[0].items() if isinstance(v, (int, float)) and all(r.get(k) is not None for r in runs)]
    return {"runs": runs, "mean": {k: statistics.mean(r[k] for r in runs) for k in keys},
            "std": {k: statistics.pstdev(r[k] for r in runs) for k in keys}}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--priors", default=",".join([*PAPER_SETTINGS, *OTHERS]),
                        help="comma-separated keys of " + ", ".join(PRIORS) + ", or a group: " + ", ".join(GROUPS))
    parser.add_argument("--seeds", default=None, help="comma-separated seeds: one run per seed and prior")
    parser.add_argument("--epochs", type=int, default=50)
    parser.add_argument("--warmup", type=int, default=10, help="KL warm-up epochs (shortened from 100)")
    parser.add_argument("--iwae-samples", type=int, default=1000)
    parser.add_argument("--iwae-images", type=int, default=None, help="test images for the NLL (default all 2000)")
    parser.add_argument("--timing-only", action="store_true", help="skip the test NLL")
    parser.add_argument("--set", action="append", default=[], help="extra config override for every prior")
    parser.add_argument("--out", required=True)
    parser.add_argument("--keep", action="store_true",
                        help="reuse the runs --out already holds for a (prior, seed) and run only the missing ones; "
                             "the file is rewritten after every run, so an interrupted benchmark resumes")
    args = parser.parse_args()
    keys = [k for name in args.priors.split(",") for k in GROUPS.get(name, [name])]
    unknown = [k for k in keys if k not in PRIORS]
    if unknown:
        parser.error(f"unknown prior keys {unknown}; choose from {', '.join(PRIORS)} or {', '.join(GROUPS)}")
    seeds = [int(s) for s in args.seeds.split(",")] if args.seeds else None
    done, kept = {}, {}
    if args.keep and Path(args.out).exists():
        kept = json.loads(Path(args.out).read_text())
        for key, result in kept["results"].items():
            for run in result.get("runs", []) if isinstance(result, dict) else []:
                done[(key, run.get("seed"))] = run
    results = {}

    def write(final):
        """With --keep, the priors this run does not touch stay in the file as they were."""
        out = {**kept, "backend": keras.backend.backend(), "epochs": args.epochs, "warmup": args.warmup,
               "iwae_samples": args.iwae_samples, "overrides": args.set, "seeds": seeds,
               "complete": final, "results": {**kept.get("results", {}), **results}}
        out.setdefault("machine", cpu_name())
        atomic.write_text(Path(args.out), json.dumps(out, indent=2))

    for key in keys:
        runs = []
        for seed in seeds or [None]:
            if (key, seed) in done:
                print(f"== {key} seed {seed}: kept from {args.out}", flush=True)
                runs.append(done[(key, seed)])
                continue
            print(f"== {key}" + (f" seed {seed}" if seed is not None else ""), flush=True)
            extra = [*args.set, *([f"seed={seed}"] if seed is not None else [])]
            runs.append(bench_prior(key, args.epochs, args.warmup, args.iwae_samples, args.iwae_images, extra,
                                    args.timing_only) | {"seed": seed, "machine": cpu_name(),
                                                       "intra_op_threads": os.environ.get("TF_NUM_INTRAOP_THREADS")})
            print(json.dumps({k: v for k, v in runs[-1].items() if not isinstance(v, list)}), flush=True)
            if seeds:
                results[key] = summarise(runs) | {"seeds": seeds[:len(runs)]}
                write(final=False)
        results[key] = summarise(runs) | {"seeds": seeds} if seeds else runs[0]
    if "standard" in results and not seeds:
        base = results["standard"]["regular_epoch_seconds"]
        for r in results.values():
            if base is None or r["regular_epoch_seconds"] is None:
                continue
            r["regular_epoch_vs_standard"] = r["regular_epoch_seconds"] / base
            if "coreset_phase_seconds" in r:
                r["coreset_phase_vs_regular_epoch"] = r["coreset_phase_seconds"] / r["regular_epoch_seconds"]
    if not seeds and "bype" in results and "exemplar_exact" in results and results["bype"]["mean_epoch_seconds_10"]:
        results["bype_speedup_over_exemplar_exact_10_epochs"] = (
            results["exemplar_exact"]["mean_epoch_seconds_10"] / results["bype"]["mean_epoch_seconds_10"])
    write(final=True)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
