"""Checkpoints that resume training exactly: weights, optimizer slots, RNG state and counters.

Layout of a checkpoint folder (written atomically with `training.atomic.write_dir`):
  model.weights.h5   Keras weights (loadable by any backend)
  state.npz          optimizer variables and the model state `save_weights` omits (seed generators)
  state.json         epoch and callback state (early stopping counter, best value)
"""

import json
from pathlib import Path

import numpy as np
from keras import ops

from training import atomic


def _unsaved_model_state(model):
    """Model variables that are not weights (seed generator states), in a stable order."""
    weight_ids = {id(w) for w in model.weights}
    return [v for v in model.variables if id(v) not in weight_ids]


def save(model, folder, state):
    """Write model + optimizer + `state` (a JSON-able dict) atomically to `folder`."""
    with atomic.write_dir(folder) as tmp:
        model.save_weights(tmp / "model.weights.h5")
        arrays = {f"optimizer_{i}": ops.convert_to_numpy(v) for i, v in enumerate(model.optimizer.variables)}
        arrays.update({f"model_{i}": ops.convert_to_numpy(v) for i, v in enumerate(_unsaved_model_state(model))})
        np.savez(tmp / "state.npz", **arrays)
        (tmp / "state.json").write_text(json.dumps(state, indent=2))


def restore(model, folder):
    """Load a checkpoint written by `save` into a compiled model; return its state dict."""
    resolved = atomic.resolve_dir(folder)
    if resolved is None:
        raise FileNotFoundError(f"no checkpoint at {folder}: nothing to resume from")
    model.load_weights(resolved / "model.weights.h5")
    with np.load(resolved / "state.npz") as arrays:
        for i, v in enumerate(model.optimizer.variables):
            v.assign(arrays[f"optimizer_{i}"])
        for i, v in enumerate(_unsaved_model_state(model)):
            v.assign(arrays[f"model_{i}"])
    return json.loads((resolved / "state.json").read_text())


def save_weights(model, path):
    """Atomically write weights only (best and final models)."""
    with atomic.write_file(Path(path)) as tmp:
        model.save_weights(tmp)
