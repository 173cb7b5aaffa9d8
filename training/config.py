"""Run configuration: a YAML file validated against typed dataclasses at load time.

Every section is a dataclass, so the schema, its defaults and its documentation live in one place. The
run-level sections (data, train, evaluate) are here; the sections of a registered choice belong to the
class they configure: `model` to the architecture named by `model.architecture`, `model.likelihood`,
`model.prior` and `train.procedure` to the registered likelihood, prior and procedure named by their
`name` (a bare string is short for `{name: ...}`). Unknown keys fail with the closest valid key, or with
the choice they belong to; wrong types and out-of-range values fail with the dotted path of the
offending value. `--set a.b=value` overrides are parsed as YAML scalars and validated the same way.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from layers.registry import choice, option, options_to_dict
from training.procedures import PROCEDURES
from zoo.base import ARCHITECTURES


class ConfigError(ValueError):
    """A configuration value is missing, unknown, or of the wrong type or range."""


# Keys that moved when each registered class came to own its section: old path -> where it is now.
MOVED = {
    "model.gaussian_variance": "model.likelihood.variance (an option of the gaussian likelihood: "
                               "model.likelihood: {name: gaussian, variance: ...})",
    "model.prior.exemplar": "model.prior itself (the exemplar prior's mode, k, leave_one_out and chunk_size "
                            "are keys of model.prior)",
}

DATASETS = ("mnist", "fashion_mnist", "cifar10", "omniglot", "celeb_a", "svhn", "mnist10k", "digits", "idx", "npz")


@dataclass
class DataConfig:
    name: str = option("mnist", choices=DATASETS)
    """mnist | fashion_mnist | cifar10 | omniglot | celeb_a | svhn (greyscale) | mnist10k | digits | idx | npz"""
    path: str | None = None
    """Folder of IDX files (idx, mnist10k), an .npz file (npz), or a folder of TFDS manual files."""
    tfds_data_dir: str | None = None
    """Where TFDS looks for prepared datasets (default: $TFDS_DATA_DIR or ~/tensorflow_datasets)."""
    preprocessing: str = option("dynamic_binarization", choices=("dynamic_binarization", "continuous"))
    """dynamic_binarization (fresh Bernoulli draw per training batch) | continuous ((x + 0.5) / 256)."""
    image_size: list[int] | None = None
    """Resize images to [height, width] (omniglot 28x28, celeb_a 64x64); None keeps the native size."""
    validation_size: int | None = option(None, minimum=0)
    """Number of training images held out for validation (None: the dataset's paper split)."""
    binarization_seed: int = 777
    """Seed of the one-time binarisation of validation and test images (the reference code uses 777)."""
    download: bool = False
    """Let TFDS download and prepare a dataset that is not prepared yet (needs internet)."""


@dataclass
class TrainConfig:
    procedure: object = choice(PROCEDURES, "elbo")
    """What one training step does (a registered procedure: {name: ..., options} or just the name)."""
    epochs: int = option(2000, minimum=1)
    """Maximum number of epochs."""
    batch_size: int = option(100, minimum=1)
    """Training minibatch size (the last partial batch of an epoch is dropped)."""
    learning_rate: float = option(5e-4, exclusive_minimum=0)
    """Adam step size."""
    gradient_normalization: bool = True
    """Scale each gradient tensor to unit L2 norm before Adam (the papers' AdamNormGrad)."""
    amsgrad: bool = False
    """Use AMSGrad's running maximum of the second moment (the BSVI paper's optimizer)."""
    clip_norm: float = option(0.0, minimum=0)
    """Clip the global L2 norm of all gradients of a step to this value (BSVI paper: 5.0); 0 disables it."""
    warmup_epochs: int = option(100, minimum=0)
    """KL warm-up: beta = min(1, epoch / warmup_epochs), epochs counted from 1; 0 disables it."""
    warmup_iterations: int = option(0, minimum=0)
    """KL warm-up per training step instead (BSVI paper: 5000): beta rises linearly from warmup_start to 1
    over the first N steps; overrides warmup_epochs when > 0."""
    warmup_start: float = option(0.0, minimum=0)
    """beta at step 0 of the per-step warm-up (BSVI paper: 0.1)."""
    early_stopping_patience: int = option(50, minimum=0)
    """Stop after more than this many non-improving epochs past warm-up; 0 disables early stopping."""
    eval_batch_size: int = option(500, minimum=1)
    """Batch size of the validation pass and the test-set ELBO."""
    checkpoint_every: int = option(1, minimum=1)
    """Write the resumable checkpoint (and best weights) every N epochs and at the end of training."""
    jit_compile: str = option("auto", choices=("auto", "true", "false"))
    """auto (Keras: XLA for TF only on accelerators; JAX always jits) | true | false."""
    steps_per_execution: int = option(100, minimum=1)
    """TensorFlow: train/validation steps run in one graph loop per call (capped at an epoch), which removes
    the per-step dispatch that dominates small models (MLP VAE epoch 0.49 -> 0.36 s). JAX's Keras trainer
    only loops in Python and PyTorch's accepts 1, so both always run 1."""
    verbose: str = option("auto", choices=("auto", "0", "1", "2"))
    """Keras progress output: auto | 0 | 1 | 2."""


@dataclass
class EvaluateConfig:
    num_samples: int = option(5000, minimum=1)
    """Importance samples S per test image for the log-likelihood estimate."""
    max_batch: int = option(5000, minimum=1)
    """Largest number of (image, sample) pairs evaluated at once; bounds memory. 5000 (one image's samples
    for S = 5000) keeps the MLP decoder's activations cache-sized: 1.5x faster than 50000 on JAX."""
    split: str = option("test", choices=("test", "validation"))
    """test | validation"""
    max_examples: int | None = option(None, minimum=1)
    """Evaluate only the first N examples of the split (None: all)."""


@dataclass
class RunConfig:
    name: str = "run"
    """Run name; the run directory is <runs_dir>/<name>-<backend>-<timestamp>/."""
    seed: int = 0
    """Seed of the model's initialisation, the training data stream and the evaluation's draws."""
    runs_dir: str = "runs"
    """Parent folder of run directories (relative paths are relative to the working directory)."""
    data: DataConfig = field(default_factory=DataConfig)
    model: object = choice(ARCHITECTURES, "vae")
    """The architecture's section: {architecture: vae | hvae | conv_hvae | ..., latent_dim, likelihood, prior, ...}."""
    train: TrainConfig = field(default_factory=TrainConfig)
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)


def _check_scalar(value, annotation, path):
    """Validate one scalar against its annotation (with int -> float widening)."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        non_none = [a for a in args if a is not type(None)]
        return _check_scalar(value, non_none[0], path)
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{path}: expected a list, got {value!r}")
        return [_check_scalar(v, args[0], f"{path}[{i}]") for i, v in enumerate(value)]
    if annotation is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{path}: expected true or false, got {value!r}")
        return value
    if annotation is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{path}: expected an integer, got {value!r}")
        return value
    if annotation is float:
        if isinstance(value, str):  # YAML 1.1 reads 1e-3 (no dot) as a string
            try:
                return float(value)
            except ValueError:
                raise ConfigError(f"{path}: expected a number, got {value!r}") from None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{path}: expected a number, got {value!r}")
        return float(value)
    if annotation is str:
        if isinstance(value, bool):  # YAML reads an unquoted true/false as a boolean
            value = str(value).lower()
        elif isinstance(value, (int, float)):
            value = str(value)
        if not isinstance(value, str):
            raise ConfigError(f"{path}: expected a string, got {value!r}")
        return value
    raise ConfigError(f"{path}: unsupported schema type {annotation!r}")


def _check_bounds(value, f, path):
    """The field's `option(...)` checks: allowed values, lower bounds."""
    checks = f.metadata
    allowed = checks.get("choices")
    if allowed is not None and value not in allowed:
        close = difflib.get_close_matches(str(value), [str(a) for a in allowed], n=1, cutoff=0.5)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        raise ConfigError(f"{path}: '{value}' is not one of {list(allowed)}{hint}")
    if value is None:
        return
    if checks.get("minimum") is not None and value < checks["minimum"]:
        raise ConfigError(f"{path}: must be >= {checks['minimum']}, got {value}")
    if checks.get("exclusive_minimum") is not None and value <= checks["exclusive_minimum"]:
        raise ConfigError(f"{path}: must be > {checks['exclusive_minimum']}, got {value}")


def _unknown_key(key, names, path, registry=None, chosen=None):
    full = f"{path}.{key}" if path else str(key)
    for old, new in MOVED.items():
        if full == old or full.startswith(old + "."):
            raise ConfigError(f"'{full}' has moved: it is now {new}")
    if registry is not None:
        owners = [n for n in registry.owners(key) if n != chosen]
        if owners:
            raise ConfigError(
                f"{full} is an option of {' / '.join(owners)}, not of {registry.kind} '{chosen}' "
                f"(options of '{chosen}': {', '.join(names) or 'none'}); remove it or set {path}.{registry.key}")
    close = difflib.get_close_matches(str(key), names, n=1, cutoff=0.5)
    hint = f"; did you mean '{(path + '.') if path else ''}{close[0]}'?" if close else ""
    raise ConfigError(f"unknown config key '{full}'{hint} (valid keys here: {', '.join(names) or 'none'})")


def _build_choice(registry, raw, path):
    """A section of a registered class: its key (e.g. `name`) picks the class, the rest is its options."""
    if isinstance(raw, str):
        raw = {registry.key: raw}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a {registry.kind} name or a mapping with '{registry.key}', got {raw!r}")
    raw = dict(raw)
    if registry.key not in raw:
        raise ConfigError(f"{path}: missing '{registry.key}' (one of: {', '.join(registry.names())})")
    name = _check_scalar(raw.pop(registry.key), str, f"{path}.{registry.key}")
    try:
        registry.check_name(name, f"{path}.{registry.key}")
    except KeyError as error:
        raise ConfigError(error.args[0]) from None
    return _build(registry.config_class(name), raw, path, registry, name)


def _build(cls, raw, path, registry=None, chosen=None):
    if not isinstance(raw, dict):
        raise ConfigError(f"{path or 'config'}: expected a mapping of keys to values, got {raw!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if registry is None or f.name != registry.key}
    kwargs = {}
    for key, value in raw.items():
        full = f"{path}.{key}" if path else key
        if key not in fields:
            _unknown_key(key, list(fields), path, registry, chosen)
        f = fields[key]
        sub_registry = f.metadata.get("registry")
        annotation = hints[key]
        if sub_registry is not None:
            kwargs[key] = _build_choice(sub_registry, value, full)
        elif dataclasses.is_dataclass(annotation):
            kwargs[key] = _build(annotation, value, full)
        else:
            value = _check_scalar(value, annotation, full)
            _check_bounds(value, f, full)
            kwargs[key] = value
    try:
        return cls(**kwargs)
    except ValueError as error:  # a check across the section's options (its __post_init__)
        raise ConfigError(f"{path or 'config'}: {error}") from None


def from_dict(raw: dict) -> RunConfig:
    """Validate a plain nested dict and return the typed configuration."""
    raw = dict(raw or {})
    if isinstance(raw.get("model"), dict):
        raw["model"] = {"architecture": "vae", **raw["model"]}  # the default architecture, as before
    config = _build(RunConfig, raw, "")
    if config.data.image_size is not None and len(config.data.image_size) != 2:
        raise ConfigError(f"data.image_size: expected [height, width], got {config.data.image_size}")
    likelihood = config.model.likelihood.name
    from layers.likelihoods import LIKELIHOODS

    procedure = config.train.procedure.name
    architecture = ARCHITECTURES[config.model.architecture]
    if PROCEDURES[procedure].single_latent and architecture.stochastic_layers != 1:
        raise ConfigError(
            f"train.procedure: '{procedure}' refines a single Gaussian q(z | x), but model.architecture "
            f"'{config.model.architecture}' has {architecture.stochastic_layers} stochastic layers; "
            "use a single-latent architecture (vae, pixel_vae) or train.procedure=elbo")
    if architecture.autoregressive and not LIKELIHOODS[likelihood].can_draw_pixels():
        drawable = [n for n in LIKELIHOODS.names() if LIKELIHOODS[n].can_draw_pixels()]
        raise ConfigError(
            f"model.likelihood: '{likelihood}' cannot draw pixels, which the PixelCNN decoder of "
            f"'{config.model.architecture}' samples with; use one of {drawable}")
    if config.train.warmup_start > 1:
        raise ConfigError(f"train.warmup_start: beta starts at most at 1, got {config.train.warmup_start}")
    if LIKELIHOODS[likelihood].needs_binary_data and config.data.preprocessing == "continuous":
        raise ConfigError(
            f"model.likelihood: '{likelihood}' needs binary data; set data.preprocessing=dynamic_binarization "
            "or choose a continuous likelihood (discretized_logistic, gaussian, squared_error)"
        )
    return config


def to_dict(config: RunConfig) -> dict:
    """The plain nested dict of a validated config (each chosen section with its key first)."""
    return options_to_dict(config)


def apply_overrides(raw: dict, overrides: list[str]) -> dict:
    """Apply `a.b.c=value` strings (values parsed as YAML) to a nested dict, in place.

    A registered choice given by name alone (`likelihood: gaussian`) becomes `{name: gaussian}` when an
    override sets one of its options."""
    for item in overrides or []:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE, e.g. train.epochs=3")
        key, text = item.split("=", 1)
        parts = key.strip().split(".")
        node = raw
        for part in parts[:-1]:
            if isinstance(node.get(part), str):
                node[part] = {"name": node[part]}
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"--set {item!r}: '{part}' is a value, not a section")
        node[parts[-1]] = yaml.safe_load(text)
    return raw


def load(path: str | Path, overrides: list[str] | None = None) -> RunConfig:
    """Read a YAML config file, apply `--set` overrides, and validate the result."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"config file not found: {path}")
    raw = yaml.safe_load(path.read_text()) or {}
    return from_dict(apply_overrides(raw, overrides or []))


def save(config: RunConfig, path: str | Path) -> None:
    from zoo import atomic

    atomic.write_text(path, yaml.safe_dump(to_dict(config), sort_keys=False))
