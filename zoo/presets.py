"""Pretrained presets: the registry of recipes, and loading a preset from the repository, a folder or a URL.

    model = zoo.load("vamp_vae_mnist10k")                     # shipped in zoo/pretrained/
    model = LatentVariableModel.from_preset("vamp_vae_mnist10k")  # the same, as a class method
    model = zoo.load("path/to/preset_folder")                  # any preset folder
    model = zoo.load("https://host/p.tar.gz", sha256="...")   # an archive, checked and cached
    zoo.list()                                                 # what is shipped, with measured metrics

A preset is a folder in the keras-hub layout (format 2):
  config.json       the Keras model config (`keras.saving.serialize_keras_object(model)`): architecture,
                    image shape, training-set size, likelihood and prior, nested; the model is rebuilt from it
  model.weights.h5  Keras weights; the prior's state (pseudo-inputs, pseudocoreset points and weights,
                    exemplar caches) lives in the prior layer's variables, so it is in this file
  metadata.json     the model card's data: data set, the command that trained it, the test metrics
                    `training.evaluate` measured
  README.md         the model card
  config.yaml       the YAML recipe: the validated run config it was trained with
  reference.npz     fixed inputs and the outputs of deterministic functions (cross-backend check)
  samples.png, reconstructions.png   from the run
  SHA256SUMS        sha256 of every other file (`sha256sum -c SHA256SUMS` checks a copy by hand)

Adding a preset is one `Recipe` in `RECIPES` plus `python -m zoo.build NAME` (see zoo/build.py).
"""

import hashlib
import json
import re
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

FORMAT_VERSION = 2
PRETRAINED_DIR = Path(__file__).resolve().parent / "pretrained"
REPO_ROOT = Path(__file__).resolve().parents[1]
CACHE_SUBDIR = "vae_zoo_presets"
PRESET_FILES = ("config.json", "model.weights.h5", "metadata.json", "README.md", "config.yaml")
CHECKSUMS_FILE = "SHA256SUMS"


class PresetError(ValueError):
    """A preset is unknown, incomplete, corrupted, or of an unsupported format."""


@dataclass(frozen=True)
class Recipe:
    """How a shipped preset is made: a YAML config plus `--set` overrides, trained on one backend.

    Args:
        name: preset name (folder zoo/pretrained/<name>, and `name` in its config).
        config: YAML config, relative to the repository root.
        overrides: `--set KEY=VALUE` strings applied to it.
        summary: one line for `zoo.list()` and the README table.
        notes: what a reader of the model card must know (shortened schedules and why).
        backend: the Keras backend `python -m zoo.build NAME` trains on.
        url, sha256: where a hosted copy (tar.gz from `zoo.build --archive`) lives, if the folder is not shipped.
    """

    name: str
    config: str
    overrides: tuple = ()
    summary: str = ""
    notes: str = ""
    backend: str = "tensorflow"
    url: str | None = None
    sha256: str | None = None

    def all_overrides(self):
        return [f"name={self.name}", *self.overrides]

    def training_command(self):
        sets = " ".join(f"--set {o}" for o in self.all_overrides())
        return f"KERAS_BACKEND={self.backend} python -m training.fit {self.config} {sets}"


RECIPES = {r.name: r for r in [
    Recipe(
        name="quickstart_digits",
        config="zoo/quickstart.yaml",
        summary="Quickstart: MLP VAE (10-d latent, width 128) with a 50-component VampPrior on the 8x8 digits",
        notes="Exactly zoo/quickstart.yaml (200 epochs, warm-up 10, early stopping patience 30; IWAE S = 1000 "
              "on all 250 test images).",
    ),
    Recipe(
        name="vamp_vae_mnist10k",
        config="zoo/vamp_vae.yaml",
        overrides=("data.name=mnist10k", "train.epochs=200", "train.warmup_epochs=20"),
        summary="VAE (gated MLP, 40-d latent) with a 500-pseudo-input VampPrior on mnist10k",
        notes="The paper's VAE + VampPrior configuration on mnist10k (the MNIST test file only: 7,000 train / "
              "1,000 validation / 2,000 test images, dynamically binarised) with a CPU-sized schedule: at most 200 "
              "epochs and KL warm-up over 20 epochs instead of 2000 and 100. IWAE with S = 5000 on all 2,000 test "
              "images, as in the paper. Not comparable with the paper's 50,000-image MNIST numbers.",
    ),
    Recipe(
        name="bype_vae_mnist10k",
        config="zoo/bype_vae.yaml",
        overrides=("data.name=mnist10k", "train.epochs=100", "train.warmup_epochs=10"),
        summary="ByPE-VAE (gated MLP, 40-d latent) with a 500-point weighted pseudocoreset prior on mnist10k",
        notes="The ByPE paper's VAE configuration (continuous data, squared-error reconstruction, M = 500 "
              "pseudo-points, a coreset phase every 10 epochs with the official code's update) on mnist10k "
              "(7,000 train / 1,000 validation / 2,000 test images) with a CPU-sized schedule: 100 epochs and "
              "KL warm-up over 10 instead of up to 4000 and 100. The NLL is the squared-error number of the ByPE "
              "code; nll_gaussian_normalized is the proper Gaussian (variance 1/2) value. IWAE with S = 5000 on "
              "all 2,000 test images.",
    ),
    Recipe(
        name="vamp_convhvae_mnist10k",
        config="zoo/vamp_convhvae.yaml",
        overrides=("data.name=mnist10k", "train.epochs=10", "train.warmup_epochs=5", "train.verbose=2",
                   "evaluate.num_samples=1000", "evaluate.max_examples=500"),
        summary="ConvHVAE (two stochastic layers, gated convs) with a 500-pseudo-input VampPrior on mnist10k",
        notes="Architecture and prior of the paper's ConvHVAE + VampPrior on mnist10k, trained for only 10 epochs "
              "(KL warm-up 5) because one epoch took 3-10 minutes on the shared 2-core CPU (about 90 s when it is "
              "idle): far from converged. The IWAE estimate uses S = 1000 samples on the first 500 test images "
              "(the paper: 5000 on all), because the conv decoder scores only about 1000 (image, sample) pairs per "
              "second here (the evaluation took 10 minutes).",
    ),
]}


@dataclass
class Preset:
    """A loaded preset: the ready Keras model, its metadata (model card data) and folder (the YAML
    recipe is `path / "config.yaml"`)."""

    name: str
    path: Path
    model: object = field(repr=False)
    metadata: dict


# --------------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------------


def load(name_or_path, sha256=None, cache_dir=None):
    """The ready Keras model of a preset (name, folder, or URL with `sha256`); see `load_preset`."""
    return load_preset(name_or_path, sha256=sha256, cache_dir=cache_dir).model


def load_preset(name_or_path, sha256=None, cache_dir=None):
    """Resolve, verify and build a preset.

    Args:
        name_or_path: a registered name, a preset folder, or an http(s):// or file:// URL of a preset
            archive (.tar.gz).
        sha256: the archive's sha256, required for URLs: a mismatch (corrupted or partial download) raises.
        cache_dir: download cache (default $KERAS_HOME or ~/.keras; archives go to <cache_dir>/vae_zoo_presets).
    """
    folder = resolve(name_or_path, sha256=sha256, cache_dir=cache_dir)
    verify(folder)
    metadata = read_metadata(folder)
    import keras

    from zoo.base import ARCHITECTURES

    ARCHITECTURES.names()  # every registered class is importable by its Keras name
    try:
        model = keras.saving.deserialize_keras_object(json.loads((folder / "config.json").read_text()))
    except (TypeError, ValueError) as error:
        raise PresetError(f"{folder / 'config.json'} does not describe a model this code can build: {error}") from error
    model.load_weights(folder / "model.weights.h5")
    return Preset(name=metadata["name"], path=folder, model=model, metadata=metadata)


def list_presets():
    """One dict per shipped preset: name, architecture, prior, dataset, parameters, size, test metrics."""
    entries = []
    for name, recipe in RECIPES.items():
        folder = PRETRAINED_DIR / name
        if not (folder / "metadata.json").exists():
            continue
        m = read_metadata(folder)
        metrics = m["metrics"]
        entries.append({
            "name": name,
            "summary": recipe.summary,
            "architecture": m["architecture"],
            "prior": m["prior"],
            "likelihood": m["likelihood"],
            "dataset": m["dataset"],
            "image_shape": m["image_shape"],
            "num_train": m["num_train"],
            "parameters": m["parameters"],
            "size_bytes": m["weights_bytes"],
            "test_nll": metrics["nll"],
            "test_nll_standard_error": metrics.get("nll_standard_error"),
            "test_negative_elbo": metrics["negative_elbo"],
            "iwae_samples": metrics["num_samples"],
            "test_images": metrics["num_examples"],
            "epochs": m["training"]["epochs_run"],
            "path": str(folder),
        })
    return entries


def resolve(name_or_path, sha256=None, cache_dir=None):
    """The local folder of a preset, downloading and unpacking an archive if needed."""
    text = str(name_or_path)
    if re.match(r"^(https?|file)://", text):
        return fetch(text, sha256, cache_dir)
    if text in RECIPES:
        folder = PRETRAINED_DIR / text
        if (folder / "metadata.json").exists():
            return folder
        recipe = RECIPES[text]
        if recipe.url:
            return fetch(recipe.url, recipe.sha256, cache_dir)
        raise PresetError(f"preset '{text}' is registered but not built; build it with: python -m zoo.build {text}")
    path = Path(text).expanduser()
    if path.is_dir():
        return path
    known = ", ".join(RECIPES)
    raise PresetError(
        f"unknown preset '{text}': not a registered name ({known}), not a folder, not a URL; "
        "pass a preset folder, or an https:// URL together with sha256=..."
    )


def fetch(url, sha256, cache_dir=None):
    """Download a preset archive with `keras.utils.get_file` (checked against `sha256`, cached) and unpack it."""
    if not sha256 or not re.fullmatch(r"[0-9a-fA-F]{64}", sha256):
        raise PresetError(f"loading a preset from {url} needs its sha256 (64 hex digits), got {sha256!r}; "
                          "a download is never loaded unchecked")
    import keras

    from zoo import atomic

    sha256 = sha256.lower()
    if cache_dir is not None:
        Path(cache_dir).mkdir(parents=True, exist_ok=True)  # get_file silently uses /tmp/.keras otherwise
    basename = Path(url.split("?")[0]).name or "preset.tar.gz"
    try:
        archive = Path(keras.utils.get_file(
            fname=f"{sha256[:16]}-{basename}", origin=url, file_hash=sha256, hash_algorithm="sha256",
            cache_subdir=CACHE_SUBDIR, cache_dir=None if cache_dir is None else str(cache_dir),
        ))
    except ValueError as error:  # get_file's hash check
        raise PresetError(f"preset archive from {url} does not match sha256 {sha256} (corrupted or partial "
                          f"download; nothing was loaded): {error}") from error
    except Exception as error:  # network errors, truncated transfers (get_file removes the partial file)
        raise PresetError(f"download of the preset archive {url} failed; nothing was loaded: "
                          f"{type(error).__name__}: {error}") from error
    if file_sha256(archive) != sha256:  # never trust a cached file without checking it
        archive.unlink(missing_ok=True)
        raise PresetError(f"cached preset archive {archive} does not match sha256 {sha256}; it was removed, retry")
    unpacked = archive.with_name(archive.name + ".d")
    if not (unpacked / ".complete").exists():
        with atomic.write_dir(unpacked) as tmp:
            try:
                with tarfile.open(archive, "r:gz") as tar:
                    tar.extractall(tmp, filter="data")  # refuses absolute paths, '..' and links out of tmp
            except (tarfile.TarError, EOFError, OSError) as error:
                raise PresetError(f"preset archive {archive} from {url} cannot be unpacked: {error}") from error
            (tmp / ".complete").write_text(sha256 + "\n")
    candidates = sorted(p.parent for p in unpacked.rglob("metadata.json"))
    if len(candidates) != 1:
        raise PresetError(f"preset archive from {url} holds {len(candidates)} presets (metadata.json files); expected one")
    return candidates[0]


def read_metadata(folder):
    folder = Path(folder)
    missing = [f for f in PRESET_FILES if not (folder / f).exists()]
    if missing:
        raise PresetError(f"{folder} is not a complete preset: missing {', '.join(missing)}")
    try:
        metadata = json.loads((folder / "metadata.json").read_text())
    except json.JSONDecodeError as error:
        raise PresetError(f"{folder / 'metadata.json'} is not valid JSON: {error}") from error
    if metadata.get("format_version") != FORMAT_VERSION:
        raise PresetError(f"{folder}: preset format {metadata.get('format_version')!r}, this code reads format "
                          f"{FORMAT_VERSION}; rebuild it with python -m zoo.build")
    return metadata


def write_checksums(folder):
    """SHA256SUMS over every other file of the folder, in `sha256sum` format."""
    folder = Path(folder)
    lines = [f"{file_sha256(p)}  {p.name}" for p in sorted(folder.iterdir()) if p.is_file() and p.name != CHECKSUMS_FILE]
    (folder / CHECKSUMS_FILE).write_text("\n".join(lines) + "\n")


def verify(folder):
    """Every file of the preset must be exactly the one SHA256SUMS records (no truncated or swapped files)."""
    folder = Path(folder)
    sums = folder / CHECKSUMS_FILE
    if not sums.exists():
        raise PresetError(f"{folder} has no {CHECKSUMS_FILE}: not a preset of format {FORMAT_VERSION}; "
                          "rebuild it with python -m zoo.build")
    recorded = {}
    for line in sums.read_text().splitlines():
        digest, _, name = line.partition("  ")
        recorded[name] = digest
    missing = [f for f in PRESET_FILES if f not in recorded]
    if missing:
        raise PresetError(f"{sums} lists no checksum for {', '.join(missing)}; rebuild the preset with python -m zoo.build")
    for name, digest in recorded.items():
        path = folder / name
        if not path.exists():
            raise PresetError(f"{folder} is not a complete preset: missing {name} (listed in {CHECKSUMS_FILE})")
        found = file_sha256(path)
        if found != digest:
            raise PresetError(
                f"{path} has sha256 {found}, but {CHECKSUMS_FILE} records {digest}: the file is corrupted, partial, "
                "or a Git LFS pointer; re-download the preset or rebuild it with python -m zoo.build")


def file_sha256(path, chunk=1 << 20):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def archive(folder, out_path):
    """Pack a preset folder as a .tar.gz (for hosting) atomically; return its sha256."""
    from zoo import atomic

    folder = Path(folder)
    read_metadata(folder)
    with atomic.write_file(out_path) as tmp:
        with tarfile.open(tmp, "w:gz") as tar:
            for path in sorted(folder.iterdir()):
                tar.add(path, arcname=f"{folder.name}/{path.name}")
    return file_sha256(out_path)


def model_card(metadata):
    """README.md of a preset, from its metadata."""
    m, t, metrics = metadata, metadata["training"], metadata["metrics"]
    nll = f"{metrics['nll']:.2f} nats (standard error {metrics['nll_standard_error']:.2f})"
    rows = "\n".join(f"| {k} | {v:.4f} |" if isinstance(v, float) else f"| {k} | {v} |" for k, v in metrics.items())
    still = "; still improving when training stopped" if t["best_epoch"] > t["epochs_run"] - 5 else ""
    prior_state = "\n".join(f"- `{v['path']}` {v['shape']}" for v in m["prior_state"]) or "- none (no learned prior state)"
    return f"""# {m['name']}

{m['summary']}

- Architecture: {m['architecture']}, latent size {m['latent_dim']}, {m['likelihood']} likelihood, {m['parameters']:,} parameters
- Prior: {m['prior']}
- Data: {m['dataset']} ({m['preprocessing']}), image shape {tuple(m['image_shape'])}, {m['num_train']:,} training images
- Test NLL (IWAE, S = {metrics['num_samples']}, {metrics['num_examples']} test images): {nll}
- Trained for {t['epochs_run']} epochs (best validation loss {t['best_val_loss']:.4f} at epoch {t['best_epoch']}{still}) on the {t['backend']} backend, Keras {t['keras_version']}

{m['notes']}

## Reproduce

```bash
{t['command']}
```

which runs

```bash
{t['equivalent_command']}
```

and packages the run (`zoo/build.py`). The test metrics below are the `metrics.json` that `training.evaluate`
wrote at the end of that run.

## Test metrics

| metric | value |
|---|---|
{rows}

## Prior state (stored in model.weights.h5)

{prior_state}

## Files

- `config.json` (the Keras model config), `model.weights.h5` ({m['weights_bytes']:,} bytes, sha256 `{m['weights_sha256']}`)
- `config.yaml` (the YAML recipe: the validated run config), `metadata.json`, `reference.npz` (cross-backend check), `samples.png`, `reconstructions.png`
- `SHA256SUMS`: the sha256 of every file (`sha256sum -c SHA256SUMS`); loading checks them

Load it with `zoo.load("{m['name']}")` or `LatentVariableModel.from_preset("{m['name']}")`.
"""

