"""Callbacks of the papers' training protocol: KL warm-up, early stopping, NaN guard, checkpoints."""

import math

import keras

from training import checkpoints


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


class NonFiniteLossError(FloatingPointError):
    """Training produced NaN or infinity; the last finite checkpoint is kept."""


class NonFiniteGuard(keras.callbacks.Callback):
    """Stop with an explanation as soon as an epoch's training or validation loss is not finite."""

    def on_epoch_end(self, epoch, logs=None):
        bad = {k: v for k, v in (logs or {}).items() if k.endswith("loss") and not math.isfinite(float(v))}
        if bad:
            raise NonFiniteLossError(
                f"epoch {epoch + 1}: non-finite {bad}. Training stopped before checkpointing these weights; "
                "the last checkpoint holds the previous epoch. Usual causes: a learning rate too high for this "
                "likelihood (try --set train.learning_rate=1e-4), gradient normalisation switched off, or data "
                "outside [0, 1] for the chosen likelihood."
            )


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
