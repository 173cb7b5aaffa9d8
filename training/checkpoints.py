"""Checkpoints that resume training exactly: weights, optimizer slots, RNG state and counters.

Layout of a checkpoint folder (written atomically with `zoo.atomic.write_dir`):
  model.weights.h5   Keras weights (loadable by any backend)
  state.npz          optimizer variables and the model state `save_weights` omits (seed generators)
  state.json         epoch and callback state (early stopping counter, best value)
  SHA256SUMS         the SHA-256 of the three, as `sha256sum` writes it (`sha256sum -c SHA256SUMS` checks them)
A run's best.weights.h5 and model.weights.h5 have a sidecar NAME.sha256 in the same format. Loading checks
them, so a truncated or overwritten file is reported by name, with its fallback, instead of failing inside
h5py or loading garbage; files written before checksums existed load unchecked. Writes check the free space
first: a full disk stops the run with a one-line error and leaves the previous files as they were.
"""

import csv
import json
import zipfile
import zlib
from pathlib import Path

import keras
import numpy as np
from keras import ops

from layers.errors import UserError
from zoo import atomic
from zoo.presets import CHECKSUMS_FILE as SUMS, file_sha256 as sha256  # the presets' format, too

FILES = ("model.weights.h5", "state.npz", "state.json")
_H5_UNREADABLE = (OSError, EOFError, KeyError)  # not ValueError: Keras raises it for a model that does not fit
_UNREADABLE = (*_H5_UNREADABLE, ValueError, zipfile.BadZipFile, zlib.error)


class DamagedFileError(UserError):
    """A checkpoint or weights file is truncated, unreadable or not what was written."""


def _sums_text(pairs):
    return "".join(f"{digest}  {name}\n" for name, digest in pairs)


def _read_sums(sums_path, fallback):
    """{file name: accepted digests} of a SHA256SUMS-format file; None if there is none (older runs)."""
    if not sums_path.exists():
        return None
    sums = {}
    for line in sums_path.read_text(errors="replace").splitlines():
        digest, _, name = line.partition("  ")
        if len(digest) != 64 or not name:
            raise DamagedFileError(f"{sums_path} is damaged (line {line[:40]!r}); {fallback}")
        sums.setdefault(name, set()).add(digest)
    return sums


def _sums_file(path):
    sidecar = path.with_name(path.name + ".sha256")
    return sidecar if sidecar.exists() else path.parent / SUMS


def _verify(path, fallback):
    """Raise `DamagedFileError` if `path` does not hash to what was recorded when it was written."""
    sums_path = _sums_file(path)
    sums = _read_sums(sums_path, fallback)
    if sums is None:
        return
    if path.name not in sums:
        raise DamagedFileError(f"{sums_path} is damaged (no checksum for {path.name}); {fallback}")
    if not path.exists():
        raise DamagedFileError(f"{path} is missing; {fallback}")
    if sha256(path) not in sums[path.name]:
        raise DamagedFileError(f"{path} is damaged (its SHA-256 is not the one recorded when it was written, "
                               f"{sums_path.name}); {fallback}")


class _reading:
    """Report a file that cannot be read (no checksum to compare, or damage h5py/NumPy see first) by name."""

    def __init__(self, path, fallback, errors=_UNREADABLE):
        self.path, self.fallback, self.errors = path, fallback, errors

    def __enter__(self):
        return self

    def __exit__(self, kind, error, traceback):
        if isinstance(error, self.errors) and not isinstance(error, UserError):
            reason = (str(error).strip().splitlines() or [""])[0][:160]
            raise DamagedFileError(f"{self.path} is damaged (cannot be read: {kind.__name__}: {reason}); "
                                   f"{self.fallback}") from error
        return False


def _checkpoint_fallback(folder, resolved):
    old = folder.with_name(folder.name + ".old")
    if resolved != old and old.exists():
        return (f"the previous checkpoint {old} is there: move {resolved} aside (mv {resolved} "
                f"{resolved}.damaged) and resume again")
    return (f"there is no fallback (no {old}): start the run again with python -m training.fit "
            f"{folder.parent / 'config.yaml'} --run-dir NEW_DIR")


def _weights_fallback(path):
    if path.parent.name == "checkpoint":
        return _checkpoint_fallback(path.parent, path.parent)
    candidates = _candidates(path.parent)
    later = [p for p in candidates[candidates.index(path) + 1:] if p.exists()] if path in candidates else []
    if later:
        return f"delete it to fall back to {later[0]}"
    return "there is no fallback (no other weights in that run directory)"


def _unsaved_model_state(model):
    """Model variables that are not weights (seed generator states), in a stable order."""
    weight_ids = {id(w) for w in model.weights}
    return [v for v in model.variables if id(v) not in weight_ids]


def _nbytes(variables):
    return sum(int(np.prod(v.shape)) * np.dtype(v.dtype).itemsize for v in variables)


def _size(path):
    """Bytes of a file, or of the files in a folder; 0 if missing."""
    if path is None or not path.exists():
        return 0
    return path.stat().st_size if path.is_file() else sum(p.stat().st_size for p in path.iterdir() if p.is_file())


def _needed(estimate, previous):
    """Space to ask for: the larger of the raw array bytes and the previous file, plus headers and margin."""
    return int(max(estimate, previous) * 1.1) + 2**20


def save(model, folder, state):
    """Write model + optimizer + `state` (a JSON-able dict) atomically to `folder`, with checksums."""
    folder = Path(folder)
    variables = [*model.weights, *model.optimizer.variables, *_unsaved_model_state(model)]
    atomic.ensure_space(folder, _needed(_nbytes(variables), _size(atomic.resolve_dir(folder))))
    with atomic.write_dir(folder) as tmp:
        model.save_weights(tmp / "model.weights.h5")
        arrays = {f"optimizer_{i}": ops.convert_to_numpy(v) for i, v in enumerate(model.optimizer.variables)}
        arrays.update({f"model_{i}": ops.convert_to_numpy(v) for i, v in enumerate(_unsaved_model_state(model))})
        np.savez(tmp / "state.npz", **arrays)
        (tmp / "state.json").write_text(json.dumps(state, indent=2))
        (tmp / SUMS).write_text(_sums_text((name, sha256(tmp / name)) for name in FILES))


def restore(model, folder):
    """Load a checkpoint written by `save` into a compiled model, after checking its files; return its state."""
    folder = Path(folder)
    resolved = atomic.resolve_dir(folder)
    if resolved is None:
        raise FileNotFoundError(f"no checkpoint at {folder}: nothing to resume from")
    fallback = _checkpoint_fallback(folder, resolved)
    for name in FILES:
        _verify(resolved / name, fallback)
    with _reading(resolved / "model.weights.h5", fallback, _H5_UNREADABLE):
        model.load_weights(resolved / "model.weights.h5")
    with _reading(resolved / "state.npz", fallback), np.load(resolved / "state.npz") as arrays:
        for i, v in enumerate(model.optimizer.variables):
            v.assign(arrays[f"optimizer_{i}"])
        for i, v in enumerate(_unsaved_model_state(model)):
            v.assign(arrays[f"model_{i}"])
    with _reading(resolved / "state.json", fallback):
        return json.loads((resolved / "state.json").read_text())


def save_weights(model, path):
    """Atomically write weights only (best and final models), with a `NAME.sha256` sidecar.

    Until the new file is renamed into place the sidecar accepts the old file's digest too, so a crash
    between the two writes never makes a good file look damaged."""
    path = Path(path)
    atomic.ensure_space(path, _needed(_nbytes(model.weights), _size(path)))
    sidecar = path.with_name(path.name + ".sha256")
    on_disk = [sha256(path)] if path.exists() else []
    with atomic.write_file(path) as tmp:
        model.save_weights(tmp)
        digest = sha256(tmp)
        atomic.write_text(sidecar, _sums_text((path.name, d) for d in [*on_disk, digest]))
    atomic.write_text(sidecar, _sums_text([(path.name, digest)]))


def load_weights(model, path):
    """`model.load_weights(path)` for a run's weights file, checked against its recorded SHA-256."""
    path = Path(path)
    fallback = _weights_fallback(path)
    _verify(path, fallback)
    with _reading(path, fallback, _H5_UNREADABLE):
        model.load_weights(path)


def rewind_history(path, epochs):
    """Keep the header and the rows of the first `epochs` epochs of history.csv (its `epoch` column counts
    from 1: `callbacks.HistoryLogger`), one per epoch (the last written, if older versions left duplicates); return how
    many rows were dropped. A resumed run trains the epochs after its checkpoint again, so without this their
    rows would appear twice."""
    path = Path(path)
    lines = path.read_text().splitlines(keepends=True) if path.exists() else []
    if not lines:
        return 0
    column = next(csv.reader(lines[:1])).index("epoch")

    def epoch(line):
        try:
            return int(next(csv.reader([line]))[column]) if line.endswith("\n") else None  # cut by a kill
        except (ValueError, IndexError, StopIteration):
            return None

    rows = {e: line for line in lines[1:] if (e := epoch(line)) is not None and e <= epochs}
    kept = [lines[0]] + [rows[e] for e in sorted(rows)]
    if len(kept) < len(lines):
        atomic.write_text(path, "".join(kept))
    return len(lines) - len(kept)


def _candidates(run_dir):
    return [run_dir / "model.weights.h5", run_dir / "best.weights.h5", run_dir / "checkpoint" / "model.weights.h5"]


def weights_of(run_dir):
    """The weights a finished or interrupted run offers: final, else best, else last checkpoint."""
    for candidate in _candidates(Path(run_dir)):
        if candidate.exists():
            return candidate
    raise FileNotFoundError(f"{run_dir} holds no weights (model.weights.h5, best.weights.h5 or checkpoint/)")


def load_run_model(run_dir):
    """The trained model of a run directory, built from its config.json (no data needed), with its weights
    (checked against their checksums).

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
    load_weights(model, weights_of(run_dir))
    return model
