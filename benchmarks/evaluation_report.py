"""Evaluation report (issue #4): train each listed model the same way, evaluate every metric, tabulate.

    python benchmarks/evaluation_report.py \
        --run standard=zoo/standard_vae.yaml --run vampprior=zoo/vamp_vae.yaml \
        --set data.name=mnist10k --set train.epochs=100 --set train.warmup_epochs=10 \
        --set evaluate.num_samples=1000 --augmentation-epochs 30 \
        --runs-dir runs/evaluation-report --out benchmarks/results/evaluation-mnist10k.json

Each `--run NAME=CONFIG` is trained with the shared `--set` overrides (plus its own `--run-set
NAME:KEY=VALUE`), then evaluated with `python -m training.evaluate RUN_DIR` and the evaluation flags given
here. Rows are merged into `--out` by NAME, so priors added later get rows with the same settings (e.g.
`--run bype=zoo/bype_vae.yaml`, keeping the other flags). A run directory that already holds a finished
run of the same config is evaluated without retraining; an interrupted one is resumed. `--table` prints
the Markdown table of an existing results file without running anything.
"""

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import keras  # noqa: E402

from training import config as config_lib, evaluate, fit  # noqa: E402

from zoo import atomic  # noqa: E402

KS = ("3", "5", "7", "9", "11", "13", "15")
MODES = ("none", "posterior", "prior_kernel")


def parse_runs(items, run_sets):
    runs = {}
    for item in items:
        if "=" not in item:
            raise SystemExit(f"--run {item!r}: expected NAME=CONFIG, e.g. vampprior=zoo/vamp_vae.yaml")
        name, path = item.split("=", 1)
        runs[name] = {"config": path, "overrides": []}
    for item in run_sets:
        name, _, override = item.partition(":")
        if name not in runs or "=" not in override:
            raise SystemExit(f"--run-set {item!r}: expected NAME:KEY=VALUE with NAME one of {list(runs)}")
        runs[name]["overrides"].append(override)
    return runs


def train_or_reuse(config, run_dir):
    """Train `config` into `run_dir`, resume it, or reuse a finished run of the same config; returns seconds."""
    saved = run_dir / "config.yaml"
    same = saved.exists() and config_lib.to_dict(config_lib.load(saved)) == config_lib.to_dict(config)
    if same and (run_dir / "model.weights.h5").exists():
        print(f"{run_dir}: finished run of the same config, evaluating it as it is")
        return None
    if saved.exists() and not same:
        raise SystemExit(f"{run_dir} holds a run of a different config; choose another --runs-dir or remove it")
    start = time.perf_counter()
    fit.train(config, run_dir, resume=(run_dir / "checkpoint").exists(), run_evaluation=False)
    return time.perf_counter() - start


def row_of(name, spec, config, metrics, train_seconds, commands):
    model = config.model
    row = {
        "model": f"{model.architecture} / {model.prior.name}", "config": spec["config"],
        "overrides": spec["overrides"], "data": config.data.name, "backend": metrics["evaluation"]["backend"],
        "epochs": metrics.get("curves", {}).get("epochs"), "best_epoch": metrics.get("curves", {}).get("best_epoch"),
        "train_seconds": train_seconds, "evaluation_seconds": metrics["evaluation"]["seconds"],
        "nll": metrics.get("nll"), "nll_standard_error": metrics.get("nll_standard_error"),
        "num_importance_samples": metrics.get("num_samples"), "negative_elbo": metrics.get("negative_elbo"),
        "kl": metrics.get("kl"), "commands": commands,
    }
    if "active_units" in metrics:
        row["active_units"] = metrics["active_units"]["count"]
        row["latent_dim"] = metrics["active_units"]["latent_dim"]
    if "knn" in metrics:
        row["knn_accuracy"] = metrics["knn"]["accuracy"]
    if "augmentation" in metrics:
        a = metrics["augmentation"]
        row["augmentation_test_error"] = {m: a[m]["test_error"] for m in MODES if m in a}
        row["augmentation_skipped"] = a["skipped"]
        row["augmentation_protocol"] = a["protocol"]
    if "fid" in metrics:
        f = metrics["fid"]
        row["frechet"] = {k: f[k] for k in ("value", "train_vs_test", "feature_extractor", "num_generated")}
    row["skipped"] = metrics.get("skipped", {})
    return row


def _cell(value, fmt):
    return "-" if value is None else format(value, fmt)


def table(rows):
    """The README table: NLL, active units, kNN accuracy per K, augmentation test error per mode, Frechet distance."""
    head = ("| run | model | epochs | test NLL | active units | " + " | ".join(f"kNN K={k} (%)" for k in KS)
            + " | aug. error none (%) | aug. error posterior (%) | aug. error prior kernel (%) | Frechet distance |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for name, r in rows.items():
        knn = r.get("knn_accuracy", {})
        aug = r.get("augmentation_test_error", {})
        au = f"{r['active_units']} / {r['latent_dim']}" if "active_units" in r else "-"
        nll = f"{r['nll']:.2f} +- {r['nll_standard_error']:.2f}" if r.get("nll") is not None else "-"
        frechet = _cell(r.get("frechet", {}).get("value"), ".2f")
        lines.append(
            f"| {name} | {r['model']} | {r['epochs']} | {nll} | {au} | "
            + " | ".join(_cell(100 * knn[k] if k in knn else None, ".2f") for k in KS)
            + " | " + " | ".join(_cell(aug.get(m), ".2f") if m in aug else "n/a" for m in MODES)
            + f" | {frechet} |")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", action="append", default=[], metavar="NAME=CONFIG")
    parser.add_argument("--run-set", action="append", default=[], metavar="NAME:KEY=VALUE")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="overrides of every run")
    parser.add_argument("--runs-dir", type=Path, default=Path("runs/evaluation-report"))
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/evaluation-mnist10k.json"))
    parser.add_argument("--metrics", default="all")
    parser.add_argument("--augmentation-epochs", type=int)
    parser.add_argument("--fid-samples", type=int)
    parser.add_argument("--tsne-points", type=int)
    parser.add_argument("--table", action="store_true", help="print the table of --out and stop")
    args = parser.parse_args(argv)

    results = json.loads(args.out.read_text()) if args.out.exists() else {"rows": {}}
    if args.table:
        print(table(results["rows"]))
        return
    runs = parse_runs(args.run, args.run_set)
    if not runs:
        parser.error("give at least one --run NAME=CONFIG")
    backend = keras.backend.backend()
    flags = ["--metrics", args.metrics]
    for flag, value in (("--augmentation-epochs", args.augmentation_epochs), ("--fid-samples", args.fid_samples),
                        ("--tsne-points", args.tsne_points)):
        if value is not None:
            flags += [flag, str(value)]
    for name, spec in runs.items():
        overrides = args.set + spec["overrides"]
        config = config_lib.load(spec["config"], overrides)
        run_dir = args.runs_dir / f"{name}-{backend}"
        set_flags = " ".join(f"--set {shlex.quote(o)}" for o in overrides)
        commands = [f"KERAS_BACKEND={backend} python -m training.fit {spec['config']} {set_flags} --run-dir {run_dir} --no-evaluate",
                    f"KERAS_BACKEND={backend} python -m training.evaluate {run_dir} {' '.join(flags)}"]
        print(f"== {name}: " + " && ".join(commands))
        train_seconds = train_or_reuse(config, run_dir)
        evaluate.main([str(run_dir), *flags])
        metrics = json.loads((run_dir / "metrics.json").read_text())
        results["rows"][name] = row_of(name, spec, config, metrics, train_seconds, commands)
        results["rows"][name]["report_command"] = "python benchmarks/evaluation_report.py " + " ".join(
            shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))
        atomic.write_text(args.out, json.dumps(results, indent=2) + "\n")
    print(table(results["rows"]))


if __name__ == "__main__":
    sys.exit(main())
