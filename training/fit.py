"""Train a zoo model from a YAML config, then evaluate it.

    python -m training.fit zoo/quickstart.yaml [--set train.epochs=3 --set model.prior.components=50]
    python -m training.fit --resume runs/quickstart-20261120-101500 [--set train.epochs=400]

A run directory holds config.yaml (the run config), config.json (the Keras model config: architecture,
image shape, training-set size, likelihood and prior), history.csv, tensorboard/, checkpoint/ (resumable: weights, optimizer
state, RNG state, epoch and early-stopping counters), best.weights.h5, model.weights.h5 (the best
validation weights, restored at the end), metrics.json and PNG grids of samples and reconstructions.
The backend is chosen with KERAS_BACKEND=tensorflow|jax|torch.

The command checks its arguments, the config and the run directory before it imports Keras (seconds), and
prints what is wrong as one line (exit 2); `--debug` shows the traceback. Resume guarantees: see
docs/training.md#what-a-run-directory-guarantees.
"""

import argparse
import datetime
import json
import os
import sys
from pathlib import Path

from layers.errors import UserError
from training import cli, config_check


class RunDirError(UserError):
    """The run directory cannot be used as asked."""


def make_run_dir(config, requested=None):
    import keras

    if requested is not None:
        run_dir = Path(requested)
    else:
        stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
        run_dir = Path(config.runs_dir) / f"{config.name}-{keras.backend.backend()}-{stamp}"
    if (run_dir / "checkpoint").exists():
        raise RunDirError(f"{run_dir} already holds a run; resume it with --resume {run_dir} or choose another --run-dir")
    run_dir.mkdir(parents=True, exist_ok=True)
    return run_dir


def _verbosity(setting):
    import keras

    if setting == "auto":
        return 1 if sys.stdout.isatty() else 2
    return int(setting)


def _steps_per_execution(train_config, steps_per_epoch):
    """See `TrainConfig.steps_per_execution`: a graph loop on TensorFlow, 1 elsewhere."""
    import keras

    if keras.backend.backend() != "tensorflow":
        return 1
    return max(1, min(train_config.steps_per_execution, steps_per_epoch))


def train(config, run_dir, resume=False, run_evaluation=True, extra_callbacks=()):
    """Train (or resume) the run in `run_dir` and return (model, metrics or None).

    A resumed run's config.yaml is rewritten only once its checkpoint has loaded."""
    import keras  # here, not at the top: the CLI checks its input before this import

    from evaluation import density
    from training import callbacks as cb, checkpoints, config as config_lib, data as data_lib, latent_gan, run_lock
    from training.optimizers import build_optimizer
    from training.procedures import PROCEDURES, callbacks_for_prior
    from zoo import atomic
    from zoo.base import build_model

    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    with run_lock.hold(run_dir):  # one process at a time: a second one fails here, naming this PID
        removed = atomic.remove_leftovers(run_dir)
        if removed:
            print(f"removed what interrupted writes left in {run_dir}: {', '.join(removed)}")
        if not resume:
            config_lib.save(config, run_dir / "config.yaml")
        keras.utils.set_random_seed(config.seed)
        splits = data_lib.load_splits(config.data)
        model = build_model(config.model, splits.image_shape, seed=config.seed, num_train=len(splits.train))
        model.prior.initialize_from_data(splits.train, seed=config.seed)
        PROCEDURES.build(config.train.procedure).attach(model)
        model.kl_warmup_iterations = config.train.warmup_iterations
        model.kl_warmup_start = config.train.warmup_start
        atomic.write_text(run_dir / "config.json", json.dumps(keras.saving.serialize_keras_object(model), indent=2) + "\n")
        jit = {"auto": "auto", "true": True, "false": False}[config.train.jit_compile]
        steps = data_lib.steps_per_epoch(splits, config.train.batch_size)
        base_optimizer = build_optimizer(config.train)
        model.compile(optimizer=model.procedure.optimizer(model, base_optimizer), jit_compile=jit,
                      steps_per_execution=_steps_per_execution(config.train, steps))
        print(f"{config.name}: {config.model.architecture} / {config.model.prior.name} prior / "
              f"{config.model.likelihood.name} likelihood / {config.train.procedure.name} procedure "
              f"on {splits.name} {splits.image_shape}, {len(splits.train)} train images, "
              f"{model.count_params():,} parameters, backend {keras.backend.backend()}, run dir {run_dir}")

        warmup_epochs = config.train.warmup_epochs
        if config.train.warmup_iterations:  # early stopping counts from the epoch the per-step warm-up ends in
            warmup_epochs = -(-config.train.warmup_iterations // steps)
        early_stopping = cb.PaperEarlyStopping(config.train.early_stopping_patience, warmup_epochs)
        initial_epoch = 0
        if resume:
            state = checkpoints.restore(model, run_dir / "checkpoint")
            initial_epoch = state["epoch"]
            early_stopping.set_state(state["early_stopping"])
            print(f"resumed at epoch {initial_epoch} (best val_loss {early_stopping.best:.4f} at epoch "
                  f"{early_stopping.best_epoch}, {early_stopping.counter} epochs without improvement)")
            config_lib.save(config, run_dir / "config.yaml")
            dropped = checkpoints.rewind_history(run_dir / "history.csv", initial_epoch)
            if dropped:
                print(f"history.csv: removed {dropped} rows of epochs after the checkpoint (they are trained again)")

        callbacks = [
            *extra_callbacks,
            *callbacks_for_prior(model, splits, config.train),
            *model.procedure.callbacks(model, splits, config.train),
            cb.KLWarmup(0 if config.train.warmup_iterations else config.train.warmup_epochs),
            cb.LearningRateHalving(base_optimizer, config.train.learning_rate, config.train.learning_rate_halving_epochs),
            cb.NonFiniteGuard(run_dir),
            cb.DivergenceGuard(run_dir),
            early_stopping,
            # the row of an epoch is written before its checkpoint: a resumed run never lacks a row
            cb.HistoryLogger(str(run_dir / "history.csv"), append=resume),
            cb.RunCheckpoint(run_dir, early_stopping, config.train.checkpoint_every),
            keras.callbacks.TensorBoard(str(run_dir / "tensorboard"), write_graph=False, profile_batch=0),
        ]
        epochs = config.train.epochs
        if initial_epoch < epochs and not (resume and early_stopping.patience and early_stopping.counter > early_stopping.patience):
            model.fit(
                data_lib.train_dataset(splits, config.train.batch_size, config.seed, initial_epoch, epochs,
                                       index_draws=model.prior.batch_index_draws(), keep_grey=model.reads_grey),
                steps_per_epoch=steps,
                epochs=epochs,
                initial_epoch=initial_epoch,
                validation_data=data_lib.eval_dataset(splits.validation, config.train.eval_batch_size),
                callbacks=callbacks,
                shuffle=False,  # the training stream shuffles itself, deterministically per (seed, epoch)
                verbose=_verbosity(config.train.verbose),
            )
        if (run_dir / "best.weights.h5").exists():
            checkpoints.load_weights(model, run_dir / "best.weights.h5")
            print(f"restored the best weights (epoch {early_stopping.best_epoch}, val_loss {early_stopping.best:.4f})")
        finished = model.prior.finish_training(splits.train, seed=config.seed)
        if finished:
            print(f"{type(model.prior).__name__}: {finished}")
        if model.prior.latent_gan is not None:  # the VAE is final: its encoder means are the GAN's data
            print(latent_gan.run_phase(model, splits.train, seed=config.seed))
        checkpoints.save_weights(model, run_dir / "model.weights.h5")
        metrics = density.run(run_dir, model, splits, config) if run_evaluation else None
        return model, metrics


def check_run_dir(requested):
    """A --run-dir that is a file, or a folder this user cannot write, fails before anything starts."""
    if requested is None:
        return
    path = Path(requested)
    if path.exists() and not path.is_dir():
        raise RunDirError(f"--run-dir {path} is a file; give a folder (new or empty)")
    if (path / "checkpoint").exists():
        raise RunDirError(f"{path} already holds a run; resume it with --resume {path} or choose another --run-dir")
    existing = path if path.exists() else next((p for p in path.parents if p.exists()), Path("."))
    if not os.access(existing, os.W_OK | os.X_OK):
        raise RunDirError(f"--run-dir {path}: {existing} is not writable; choose a folder you can write to")


def check_resumable(run_dir):
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise RunDirError(f"--resume {run_dir}: no such run directory")
    if not (run_dir / "config.yaml").is_file():
        raise RunDirError(f"--resume {run_dir}: no config.yaml there, so it is not a run directory "
                          "(a run directory is what python -m training.fit CONFIG writes)")
    if not any((run_dir / name).exists() for name in ("checkpoint", "checkpoint.old")):
        raise RunDirError(f"--resume {run_dir}: no checkpoint/ to resume from (the run stopped before its first "
                          f"checkpoint); start it again with python -m training.fit {run_dir}/config.yaml")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config", nargs="?", help="YAML config file (e.g. zoo/quickstart.yaml)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config value, e.g. --set train.epochs=3 (repeatable)")
    parser.add_argument("--resume", metavar="RUN_DIR", help="continue an interrupted run exactly where it stopped")
    parser.add_argument("--run-dir", help="write the run here instead of RUNS_DIR/NAME-BACKEND-TIMESTAMP")
    parser.add_argument("--no-evaluate", action="store_true", help="skip the final test-set evaluation")
    cli.add_output_flags(parser)
    args = parser.parse_args(argv)

    # everything below up to import_backend() is checked without Keras
    if args.resume and args.config:
        parser.error(f"give a config file or --resume {args.resume}, not both: a resumed run keeps its own "
                     "config.yaml (change what may change on resume with --set)")
    if args.resume and args.run_dir:
        parser.error("--run-dir does not apply to --resume: the run continues in its own folder")
    if args.resume:
        run_dir = Path(args.resume)
        check_resumable(run_dir)
        raw = config_check.resume_overrides(run_dir / "config.yaml", args.set)
    elif args.config:
        raw = config_check.precheck(args.config, args.set)
        check_run_dir(args.run_dir)
    else:
        parser.error("give a config file, or --resume RUN_DIR")
    cli.import_backend(args.verbose or args.debug)
    from training import config as config_lib

    config = config_lib.from_dict(raw)
    if not args.resume:
        run_dir = make_run_dir(config, args.run_dir)
    _, metrics = train(config, run_dir, resume=bool(args.resume), run_evaluation=not args.no_evaluate)
    if metrics:
        print("test metrics: " + ", ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}"
                                            for k, v in metrics.items()))
    return 0


if __name__ == "__main__":
    sys.exit(cli.run(main))
