"""Loss curves from a run's history.csv (ByPE supplement L: the validation loss over training).

Every logged quantity is plotted, each training column beside its `val_` column, so columns that new
training procedures add (coreset phases, penalties) appear without changes here.
"""

import csv
import math

import numpy as np


def read_history(path):
    """history.csv as {column: float array}; raises FileNotFoundError naming the file."""
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: the run has no training history (was it trained with training.fit?)")
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        raise ValueError(f"{path} holds no epochs")
    columns = {name: np.array([float(r[name]) if r[name] not in ("", None) else math.nan for r in rows])
               for name in rows[0]}
    return columns


def curve_groups(history):
    """{panel title: {line: (epochs 1.., values)}}: one panel per quantity, train and validation together."""
    epochs = history["epoch"] if "epoch" in history else np.arange(1, len(next(iter(history.values()))) + 1)
    groups = {}
    for column, values in history.items():
        if column == "epoch" or column.startswith("val_"):
            continue
        series = {"train": (epochs, values)}
        if f"val_{column}" in history:
            series["validation"] = (epochs, history[f"val_{column}"])
        groups[column] = series
    for name, values in history.items():  # validation-only columns
        if name.startswith("val_") and name[4:] not in history:
            groups[name] = {"validation": (epochs, values)}
    return groups


def summary(history):
    """Epochs trained, best validation loss and its epoch (1-based), final training and validation loss."""
    out = {"epochs": int(len(history["epoch"])) if "epoch" in history else None}
    if "val_loss" in history and np.any(np.isfinite(history["val_loss"])):
        best = int(np.nanargmin(history["val_loss"]))
        out.update(best_val_loss=float(history["val_loss"][best]), best_epoch=best + 1,
                   final_val_loss=float(history["val_loss"][-1]))
    if "loss" in history:
        out["final_loss"] = float(history["loss"][-1])
    return out
