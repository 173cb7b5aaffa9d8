"""Checkpoints that resume training exactly: weights, optimizer slots, RNG state and counters.

Layout of a checkpoint folder (written atomically with `zoo.atomic.write_dir`):
  model.weights.h5   Keras weights (loadable by any backend)
  state.npz          optimizer variables and the model state `save_weights` omits (seed generators)
  state.json         epoch and callback state (early stopping counter, best value)
"""

import json
from pathlib import Path

import keras
import numpy as np
from keras import ops

from zoo import atomic


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


def weights_of(run_dir):
    """The weights a finished or interrupted run offers: final, else best, else last checkpoint."""
    for candidate in (run_dir / "model.weights.h5", run_dir / "best.weights.h5",
                      run_dir / "checkpoint" / "model.weights.h5"):
        if candidate.exists():
            return candidate
    raise FileNotFoundError(f"{run_dir} holds no weights (model.weights.h5, best.weights.h5 or checkpoint/)")


def load_run_model(run_dir):
    """The trained model of a run directory, built from its config.json (no data needed), with its weights.

    Runs written before config.json existed are rebuilt from config.yaml and their dataset."""
    run_dir = Path(run_dir)
    model_config = run_dir / "config.json"
    if model_config.exists():
        model = keras.saving.deserialize_keras_object(json.loads(model_config.read_text()))
    else:
        from training import config as config_lib, data as data_lib
        from zoo.base import build_model

        config = config_lib.load(run_dir / "config.yaml")
        splits = data_lib.load_splits(config.data)
        model = build_model(config.model, splits.image_shape, seed=config.seed, num_train=len(splits.train))
    model.load_weights(weights_of(run_dir))
    return model
