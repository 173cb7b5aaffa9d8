"""Build a registered preset: train it with the project's own `training.fit`, evaluate it, package it.

    KERAS_BACKEND=tensorflow python -m zoo.build vamp_vae_mnist10k            # fresh run, then zoo/pretrained/NAME
    python -m zoo.build NAME --run-dir runs/presets/NAME                      # reuse / resume that run
    python -m zoo.build NAME --out /tmp/NAME --archive /tmp/NAME.tar.gz        # elsewhere, plus a hostable archive

The run is `training.fit` on the recipe's config and overrides (`zoo.presets.RECIPES`) with its fixed seed, so
a rebuild repeats the same training; the preset folder is written atomically (see zoo/presets.py for its
contents). With --run-dir, a finished run whose config equals the recipe's is packaged as is, an
interrupted one is resumed exactly, and a run with a different config is refused.
"""

import argparse
import csv
import datetime
import json
import os
import shutil
import sys
from pathlib import Path

if __name__ == "__main__":  # a quiet start: TensorFlow's start-up lines silenced before the first import
    from training import cli

    cli.import_backend("--verbose" in sys.argv or "--debug" in sys.argv)

import keras  # noqa: E402
import numpy as np
from keras import ops

from training import checkpoints, config as config_lib, data as data_lib

from zoo import atomic
from zoo.presets import FORMAT_VERSION, PRETRAINED_DIR, RECIPES, REPO_ROOT, file_sha256, model_card, write_checksums

REFERENCE_IMAGES = 8


def recipe_config(recipe):
    return config_lib.load(REPO_ROOT / recipe.config, recipe.all_overrides())


def build(recipe, out_dir=None, run_dir=None, verbose=True):
    """Train (or reuse / resume `run_dir`) and package `recipe`; return the preset folder."""
    backend = keras.backend.backend()
    if backend != recipe.backend:
        raise RuntimeError(f"preset '{recipe.name}' is built on the {recipe.backend} backend, this process runs "
                           f"{backend}; run: KERAS_BACKEND={recipe.backend} python -m zoo.build {recipe.name}")
    from training import fit

    config = recipe_config(recipe)
    if run_dir is None:
        stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
        run_dir = Path(config.runs_dir) / "presets" / f"{recipe.name}-{stamp}"
    run_dir = Path(run_dir)
    if (run_dir / "config.yaml").exists():
        existing = config_lib.to_dict(config_lib.load(run_dir / "config.yaml"))
        if existing != config_lib.to_dict(config):
            raise ValueError(f"{run_dir} was trained with another config than recipe '{recipe.name}'; "
                             "choose another --run-dir (or none for a fresh run)")
    if (run_dir / "model.weights.h5").exists() and (run_dir / "metrics.json").exists():
        print(f"packaging the finished run {run_dir}")
    else:
        resume = (run_dir / "checkpoint").exists()
        fit.train(config, run_dir, resume=resume)
    return package(recipe, config, run_dir, out_dir or PRETRAINED_DIR / recipe.name)


def history_summary(run_dir):
    """(epochs run, best epoch counted from 1, best validation loss) from the run's history.csv."""
    with open(Path(run_dir) / "history.csv") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        raise ValueError(f"{run_dir}/history.csv is empty: the run trained no epoch")
    best = min(rows, key=lambda r: float(r["val_loss"]))
    return len(rows), int(best["epoch"]), float(best["val_loss"])


def reference_outputs(model, images):
    """Deterministic functions of fixed inputs: every backend must reproduce them from the weights."""
    x = ops.convert_to_tensor(images)
    mean, log_var = model.encode(x)
    return {
        "images": np.asarray(images),
        "encode_mean": ops.convert_to_numpy(mean),
        "encode_log_var": ops.convert_to_numpy(log_var),
        "reconstruct": ops.convert_to_numpy(model.reconstruct(x, seed=0)),
        "prior_log_prob": ops.convert_to_numpy(model.prior.log_prob(mean)),
    }


def package(recipe, config, run_dir, out_dir):
    """Write the preset folder for the finished run `run_dir` atomically; return it."""
    from zoo.base import build_model

    run_dir, out_dir = Path(run_dir), Path(out_dir)
    splits = data_lib.load_splits(config.data)
    model = build_model(config.model, splits.image_shape, seed=config.seed, num_train=len(splits.train))
    checkpoints.load_weights(model, run_dir / "model.weights.h5")  # checks the weights' checksum
    return write_preset(recipe, config, model, run_dir, splits, out_dir)


def write_preset(recipe, config, model, run_dir, splits, out_dir):
    """The preset folder of a trained `model` (format in zoo/presets.py), written atomically."""
    metrics = json.loads((run_dir / "metrics.json").read_text())
    epochs_run, best_epoch, best_val_loss = history_summary(run_dir)
    import tensorflow as tf

    metadata = {
        "format_version": FORMAT_VERSION,
        "name": recipe.name,
        "summary": recipe.summary,
        "notes": recipe.notes,
        "architecture": config.model.architecture,
        "prior": config.model.prior.name,
        "prior_components": model.prior.num_components,
        "likelihood": config.model.likelihood.name,
        "latent_dim": config.model.latent_dim,
        "dataset": config.data.name,
        "preprocessing": config.data.preprocessing,
        "image_shape": list(splits.image_shape),
        "num_train": len(splits.train),
        "num_validation": len(splits.validation),
        "num_test": len(splits.test),
        "seed": config.seed,
        "parameters": int(model.count_params()),
        "prior_state": [{"path": v.path, "shape": list(v.shape)} for v in model.prior.weights],
        "training": {
            "command": f"KERAS_BACKEND={recipe.backend} python -m zoo.build {recipe.name}",
            "equivalent_command": recipe.training_command(),
            "backend": recipe.backend,
            "epochs_run": epochs_run,
            "best_epoch": best_epoch,
            "best_val_loss": best_val_loss,
            "keras_version": keras.__version__,
            "tensorflow_version": tf.__version__,
            "built": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        },
        "metrics": metrics,
        "metrics_source": "metrics.json written by training.evaluate at the end of training.fit (test split)",
    }
    reference = reference_outputs(model, splits.test[:REFERENCE_IMAGES])
    with atomic.write_dir(out_dir) as tmp:
        os.chmod(tmp, 0o755)  # a temporary folder is private; a preset folder is not
        config_lib.save(config, tmp / "config.yaml")
        (tmp / "config.json").write_text(json.dumps(keras.saving.serialize_keras_object(model), indent=2) + "\n")
        weights = tmp / "model.weights.h5"
        model.save_weights(weights)  # from an uncompiled model: no optimizer state, a third of the run's file
        metadata["weights_bytes"] = weights.stat().st_size
        metadata["weights_sha256"] = file_sha256(weights)
        np.savez(tmp / "reference.npz", **reference)
        for figure in ("samples.png", "reconstructions.png"):
            if (run_dir / figure).exists():
                shutil.copyfile(run_dir / figure, tmp / figure)
        (tmp / "metadata.json").write_text(json.dumps(metadata, indent=2) + "\n")
        (tmp / "README.md").write_text(model_card(metadata))
        write_checksums(tmp)
    print(f"preset {recipe.name} written to {out_dir} (test NLL {metrics['nll']:.2f}, "
          f"{metadata['weights_bytes'] / 1e6:.1f} MB of weights)")
    return out_dir


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("name", help=f"registered preset: {', '.join(RECIPES)}")
    parser.add_argument("--run-dir", type=Path, help="reuse, resume or create this run folder (default: a fresh one)")
    parser.add_argument("--out", type=Path, help="preset folder to write (default: zoo/pretrained/NAME)")
    parser.add_argument("--archive", type=Path, help="also pack the preset as this .tar.gz and print its sha256")
    args = parser.parse_args(argv)
    if args.name not in RECIPES:
        parser.error(f"unknown preset '{args.name}'; registered: {', '.join(RECIPES)} (add a Recipe to zoo/presets.py)")
    folder = build(RECIPES[args.name], out_dir=args.out, run_dir=args.run_dir)
    if args.archive:
        from zoo.presets import archive

        digest = archive(folder, args.archive)
        print(f"archive {args.archive}  sha256 {digest}")


if __name__ == "__main__":
    sys.exit(cli.run(main))
