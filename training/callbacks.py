"""Callbacks of the papers' training protocol: KL warm-up, early stopping, NaN and divergence guards,
checkpoints."""

import json
import math
from pathlib import Path

import keras
import numpy as np

from layers.errors import UserError
from training import checkpoints
from zoo import atomic


class KLWarmup(keras.callbacks.Callback):
    """beta = min(1, epoch / warmup_epochs), epochs counted from 1 and constant within an epoch."""

    def __init__(self, warmup_epochs):
        super().__init__()
        self.warmup_epochs = warmup_epochs

    def beta(self, epoch):
        return 1.0 if self.warmup_epochs <= 0 else min(1.0, (epoch + 1) / self.warmup_epochs)

    def on_epoch_begin(self, epoch, logs=None):
        if not self.model.kl_warmup_iterations:  # else the train step sets beta per step
            self.model.kl_weight.assign(self.beta(epoch))

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["kl_weight"] = float(keras.ops.convert_to_numpy(self.model.kl_weight))


class LearningRateHalving(keras.callbacks.Callback):
    """The step size halves after each epoch listed (epochs counted from 1): base / 2^#{h in epochs: h < e}
    in epoch e, a function of the epoch alone, so a resumed run continues the schedule exactly (the VAEPP
    code's lr_anneal_epoch_freq). It sets the run's base optimizer (in the VAEPP naive procedure, the VAE's
    Adam; the critic's keeps its rate, as the code's)."""

    def __init__(self, optimizer, base_rate, epochs):
        super().__init__()
        self.optimizer, self.base_rate, self.epochs = optimizer, float(base_rate), sorted(epochs)

    def rate(self, epoch):
        return self.base_rate * 0.5 ** sum(h <= epoch for h in self.epochs)  # `epoch` is 0-based: e - 1

    def on_epoch_begin(self, epoch, logs=None):
        if self.epochs:
            self.optimizer.learning_rate.assign(self.rate(epoch))

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None and self.epochs:
            logs["learning_rate"] = self.rate(epoch)


class TrainingStoppedError(UserError):
    """A guard stopped a run whose weights went bad; the message names the checkpoint that is still healthy."""

    exit_code = 1


class NonFiniteLossError(TrainingStoppedError, FloatingPointError):
    """Training produced NaN or infinity; the last finite checkpoint is kept."""


class DivergenceError(TrainingStoppedError):
    """The loss or the weights grew by orders of magnitude while staying finite (a learning rate far too high)."""


class TrainingGuard(keras.callbacks.Callback):
    """Base of the guards: says which checkpoint of `run_dir` still holds healthy weights.

    A guard runs before `RunCheckpoint` in the callback list, so the bad epoch is never checkpointed and
    checkpoint/state.json (or the .old copy of an interrupted write) names the last healthy epoch."""

    def __init__(self, run_dir=None):
        super().__init__()
        self.run_dir = None if run_dir is None else Path(run_dir)

    def checkpoint_note(self):
        folder = None if self.run_dir is None else atomic.resolve_dir(self.run_dir / "checkpoint")
        if folder is None or not (folder / "state.json").is_file():
            return "no checkpoint yet, so no healthy weights were saved"
        epoch = json.loads((folder / "state.json").read_text())["epoch"]
        best = self.run_dir / "best.weights.h5"
        extra = f", the best validation weights up to then are in {best}" if best.exists() else ""
        return f"the last healthy weights are the checkpoint {folder} of epoch {epoch}{extra}"


class NonFiniteGuard(TrainingGuard):
    """Stop with an explanation as soon as an epoch's training or validation loss is not finite."""

    def on_epoch_end(self, epoch, logs=None):
        bad = {k: v for k, v in (logs or {}).items() if k.endswith("loss") and not math.isfinite(float(v))}
        if bad:
            raise NonFiniteLossError(
                f"epoch {epoch + 1}: non-finite {bad}. Training stopped before checkpointing these weights; "
                f"{self.checkpoint_note()}. Usual causes: a learning rate too high for this "
                "likelihood (try --set train.learning_rate=1e-4), gradient normalisation switched off, or data "
                "outside [0, 1] for the chosen likelihood."
            )


class DivergenceGuard(TrainingGuard):
    """Stop a run that diverges without NaN (e.g. train.learning_rate=1e3 ran to a test NLL of 1e33).

    Rule, checked at every epoch end:
    * loss or val_loss > best + max(1e3, 100 |best|), best being that loss's lowest value so far in this
      fit (nats per image). KL warm-up raises the loss by the KL term, a few times at most, never 100x;
      the floor of 1e3 nats covers losses near zero (continuous data).
    * the global L2 norm of the trainable weights > 1e3 x max(1, its norm when training began). Normal
      training changes it by a small factor; this also catches a run that diverges within its first
      epoch, when the loss has no healthy best to compare with.
    Non-finite values are left to `NonFiniteGuard`."""

    LOSS_FACTOR, LOSS_FLOOR, WEIGHT_FACTOR = 100.0, 1e3, 1e3
    MONITORED = ("loss", "val_loss")

    def __init__(self, run_dir=None):
        super().__init__(run_dir)
        self.best = {}
        self.initial_norm = None

    def weight_norm(self):
        return math.sqrt(sum(float(np.sum(np.square(keras.ops.convert_to_numpy(w).astype(np.float64))))
                             for w in self.model.trainable_weights))

    def on_train_begin(self, logs=None):
        self.initial_norm = self.weight_norm()

    def on_epoch_end(self, epoch, logs=None):
        for key in self.MONITORED:
            value = float((logs or {}).get(key, math.nan))
            if not math.isfinite(value):
                continue
            best = self.best.get(key)
            if best is not None and value > best + max(self.LOSS_FLOOR, self.LOSS_FACTOR * abs(best)):
                self.stop(epoch, f"{key} {value:.4g} against its best {best:.4g}")
            self.best[key] = value if best is None else min(best, value)
        if self.initial_norm is not None:
            norm = self.weight_norm()
            if math.isfinite(norm) and norm > self.WEIGHT_FACTOR * max(1.0, self.initial_norm):
                self.stop(epoch, f"weight norm {norm:.4g} against {self.initial_norm:.4g} when training began")

    def stop(self, epoch, what):
        raise DivergenceError(
            f"epoch {epoch + 1}: training diverged ({what}); stopped before checkpointing these weights, "
            f"{self.checkpoint_note()}. Lower train.learning_rate (e.g. --set train.learning_rate=1e-4) and "
            "start the run again."
        )


class HistoryLogger(keras.callbacks.CSVLogger):
    """history.csv with epochs counted from 1, as the console, the checkpoint and every message count them
    (Keras's CSVLogger writes the 0-based loop index)."""

    def on_epoch_end(self, epoch, logs=None):
        super().on_epoch_end(epoch + 1, logs)


class PaperEarlyStopping(keras.callbacks.Callback):
    """Early stopping as in the reference code: track the best validation loss from epoch 1, but do not
    count non-improving epochs during KL warm-up; stop after more than `patience` of them."""

    def __init__(self, patience, warmup_epochs, monitor="val_loss"):
        super().__init__()
        self.patience = patience
        self.warmup_epochs = warmup_epochs
        self.monitor = monitor
        self.best = math.inf
        self.best_epoch = 0
        self.counter = 0
        self.improved = False

    def on_epoch_end(self, epoch, logs=None):
        current = float(logs[self.monitor])
        self.improved = current < self.best
        if self.improved:
            self.best, self.best_epoch, self.counter = current, epoch + 1, 0
        else:
            self.counter = 0 if epoch + 1 < self.warmup_epochs else self.counter + 1
        if self.patience > 0 and self.counter > self.patience:
            self.model.stop_training = True

    def get_state(self):
        return {"best": self.best, "best_epoch": self.best_epoch, "counter": self.counter}

    def set_state(self, state):
        self.best, self.best_epoch, self.counter = state["best"], state["best_epoch"], state["counter"]


class RunCheckpoint(keras.callbacks.Callback):
    """Every `every` epochs (and at the end): the best weights so far, then a resumable checkpoint.

    Improvements between two writes are kept in memory, so a checkpoint and the best weights on disk
    always belong together and resuming from the checkpoint is exact.
    """

    def __init__(self, run_dir, early_stopping, every=1):
        super().__init__()
        self.run_dir = run_dir
        self.early_stopping = early_stopping
        self.every = every
        self.best_weights = None
        self.last_epoch = None

    def on_epoch_end(self, epoch, logs=None):
        if self.early_stopping.improved:
            self.best_weights = self.model.get_weights()
        self.last_epoch = epoch
        if (epoch + 1) % self.every == 0:
            self.write(epoch)

    def on_train_end(self, logs=None):
        if self.last_epoch is not None and (self.last_epoch + 1) % self.every != 0:
            self.write(self.last_epoch)

    def write(self, epoch):
        if self.best_weights is not None:
            current = self.model.get_weights()
            self.model.set_weights(self.best_weights)
            checkpoints.save_weights(self.model, self.run_dir / "best.weights.h5")
            self.model.set_weights(current)
            self.best_weights = None
        state = {"epoch": epoch + 1, "early_stopping": self.early_stopping.get_state()}
        checkpoints.save(self.model, self.run_dir / "checkpoint", state)
