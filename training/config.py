"""Run configuration: a YAML file validated against typed dataclasses at load time.

Every section is a dataclass, so the schema, its defaults and its documentation live in one place.
Unknown keys fail with the closest valid key; wrong types and out-of-range values fail with the dotted
path of the offending value. `--set a.b=value` overrides are parsed as YAML scalars and validated the
same way.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path

import yaml


class ConfigError(ValueError):
    """A configuration value is missing, unknown, or of the wrong type or range."""


@dataclass
class DataConfig:
    name: str = "mnist"
    """mnist | fashion_mnist | cifar10 | omniglot | celeb_a | mnist10k | digits | idx | npz"""
    path: str | None = None
    """Folder of IDX files (idx, mnist10k), an .npz file (npz), or a folder of TFDS manual files."""
    tfds_data_dir: str | None = None
    """Where TFDS looks for prepared datasets (default: $TFDS_DATA_DIR or ~/tensorflow_datasets)."""
    preprocessing: str = "dynamic_binarization"
    """dynamic_binarization (fresh Bernoulli draw per training batch) | continuous ((x + 0.5) / 256)."""
    image_size: list[int] | None = None
    """Resize images to [height, width] (omniglot 28x28, celeb_a 64x64); None keeps the native size."""
    validation_size: int | None = None
    """Number of training images held out for validation (None: the dataset's paper split)."""
    binarization_seed: int = 777
    """Seed of the one-time binarisation of validation and test images (the reference code uses 777)."""
    download: bool = False
    """Let TFDS download and prepare a dataset that is not prepared yet (needs internet)."""


@dataclass
class ExemplarConfig:
    """Exemplar prior (Exemplar VAE): how its mixture over training exemplars is formed while training."""

    mode: str = "exact"
    """exact (M = model.prior.components random exemplars re-encoded every step) | retrieval (kNN
    among M candidates against a per-epoch cache of all exemplar means, supplement Algorithm 1)."""
    k: int = 10
    """retrieval mode: nearest neighbours per example among the candidates."""
    leave_one_out: bool = True
    """Mask each training example's own exemplar (and correct the normaliser) during training."""
    chunk_size: int = 10000
    """Exemplars encoded at once when the cache of all N exemplar means is refreshed."""


@dataclass
class CoresetConfig:
    """ByPE pseudocoreset update (paper Algorithm 2, reference notes section 3.4).

    Defaults reproduce the official code; each option names a choice the paper leaves open."""

    interval: int = 10
    """Run a coreset phase every k epochs (after epochs k, 2k, ...); 1 updates after every epoch."""
    steps: int = 0
    """Coreset steps per phase; 0 = one pass over the training split in train.batch_size minibatches."""
    num_samples: int = 500
    """S latent samples from the current pseudocoreset prior per step."""
    step_size: float = 0.5
    """gamma_0 of the step-size schedule gamma_j = gamma_0 / (j + 1)."""
    schedule: str = "restart"
    """restart: j counts from 0 in every phase while Adam moments persist (official code) | continue:
    j and the bias correction keep counting across phases."""
    potential: str = "unit_gaussian"
    """Log-likelihood potential f(x, z): unit_gaussian (official: -1/2 ||x - mean(z)||^2, variance 1)
    | likelihood (the model's own Gaussian / squared-error reconstruction term)."""
    gradient_centering: str = "pixels"
    """Centre the pseudo-point gradients over the pixel axis (official code) or over the S samples
    (textbook estimator, paper Eq. 19)."""
    clip_points: bool = False
    """Clip pseudo-point pixels to [0, 1] after each step (the official code does not)."""


@dataclass
class PriorConfig:
    name: str = "standard_normal"
    """standard_normal | mog | vampprior | exemplar | bype"""
    components: int = 500
    """Mixture components (mog), pseudo-inputs (vampprior), exemplars per step or retrieval candidates
    (exemplar), pseudo-points M (bype)."""
    init: str = "random"
    """vampprior pseudo-input init: random (N(mean, std)) | training_data (K training images + N(0, 0.01))."""
    pseudo_inputs_mean: float = 0.05
    pseudo_inputs_std: float = 0.01
    trainable: bool = True
    """False with init=training_data gives the 'VampPrior data' variant (fixed training images)."""
    learn_weights: bool = False
    """mog: learn the mixture weights (True) or keep them uniform (False, as in the VampPrior paper)."""
    exemplar: ExemplarConfig = field(default_factory=ExemplarConfig)
    coreset: CoresetConfig = field(default_factory=CoresetConfig)


@dataclass
class ModelConfig:
    architecture: str = "vae"
    """vae | hvae | conv_hvae"""
    latent_dim: int = 40
    """Size of z (vae) and of both z1 and z2 (hvae, conv_hvae)."""
    hidden_units: int = 300
    likelihood: str = "bernoulli"
    """bernoulli | discretized_logistic | gaussian | squared_error"""
    gaussian_variance: float | None = None
    """gaussian likelihood: fixed variance, or None to learn one shared log-variance."""
    prior: PriorConfig = field(default_factory=PriorConfig)


@dataclass
class TrainConfig:
    epochs: int = 2000
    """Maximum number of epochs."""
    batch_size: int = 100
    learning_rate: float = 5e-4
    gradient_normalization: bool = True
    """Scale each gradient tensor to unit L2 norm before Adam (the papers' AdamNormGrad)."""
    warmup_epochs: int = 100
    """KL warm-up: beta = min(1, epoch / warmup_epochs), epochs counted from 1; 0 disables it."""
    early_stopping_patience: int = 50
    """Stop after more than this many non-improving epochs past warm-up; 0 disables early stopping."""
    eval_batch_size: int = 500
    checkpoint_every: int = 1
    """Write the resumable checkpoint (and best weights) every N epochs and at the end of training."""
    jit_compile: str = "auto"
    """auto (Keras: XLA for TF only on accelerators; JAX always jits) | true | false."""
    steps_per_execution: int = 100
    """TensorFlow: train/validation steps run in one graph loop per call (capped at an epoch), which removes
    the per-step dispatch that dominates small models (MLP VAE epoch 0.49 -> 0.36 s). JAX's Keras trainer
    only loops in Python and PyTorch's accepts 1, so both always run 1."""
    verbose: str = "auto"
    """Keras progress output: auto | 0 | 1 | 2."""


@dataclass
class EvaluateConfig:
    num_samples: int = 5000
    """Importance samples S per test image for the log-likelihood estimate."""
    max_batch: int = 5000
    """Largest number of (image, sample) pairs evaluated at once; bounds memory. 5000 (one image's samples
    for S = 5000) keeps the MLP decoder's activations cache-sized: 1.5x faster than 50000 on JAX."""
    split: str = "test"
    """test | validation"""
    max_examples: int | None = None
    """Evaluate only the first N examples of the split (None: all)."""


@dataclass
class RunConfig:
    name: str = "run"
    seed: int = 0
    runs_dir: str = "runs"
    """Parent folder of run directories (relative paths are relative to the working directory)."""
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)


CHOICES = {
    "data.name": ["mnist", "fashion_mnist", "cifar10", "omniglot", "celeb_a", "mnist10k", "digits", "idx", "npz"],
    "data.preprocessing": ["dynamic_binarization", "continuous"],
    "model.architecture": ["vae", "hvae", "conv_hvae"],
    "model.likelihood": ["bernoulli", "discretized_logistic", "gaussian", "squared_error"],
    "model.prior.name": ["standard_normal", "mog", "vampprior", "exemplar", "bype"],
    "model.prior.exemplar.mode": ["exact", "retrieval"],
    "model.prior.coreset.schedule": ["restart", "continue"],
    "model.prior.coreset.potential": ["unit_gaussian", "likelihood"],
    "model.prior.coreset.gradient_centering": ["pixels", "samples"],
    "model.prior.init": ["random", "training_data"],
    "train.verbose": ["auto", "0", "1", "2"],
    "train.jit_compile": ["auto", "true", "false"],
    "evaluate.split": ["test", "validation"],
}

POSITIVE = {
    "model.latent_dim", "model.hidden_units", "model.prior.components", "model.prior.pseudo_inputs_std",
    "train.epochs", "train.batch_size", "train.checkpoint_every", "train.steps_per_execution", "train.learning_rate", "train.eval_batch_size",
    "evaluate.num_samples", "evaluate.max_batch", "model.gaussian_variance", "evaluate.max_examples",
    "model.prior.exemplar.k", "model.prior.exemplar.chunk_size", "model.prior.coreset.interval",
    "model.prior.coreset.num_samples", "model.prior.coreset.step_size",
}
NON_NEGATIVE = {"train.warmup_epochs", "train.early_stopping_patience", "data.validation_size",
                "model.prior.coreset.steps"}


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


def _build(cls, raw: dict, path: str):
    if not isinstance(raw, dict):
        raise ConfigError(f"{path or 'config'}: expected a mapping of keys to values, got {raw!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in raw.items():
        full = f"{path}.{key}" if path else key
        if key not in names:
            close = difflib.get_close_matches(str(key), names, n=1, cutoff=0.5)
            hint = f"; did you mean '{(path + '.') if path else ''}{close[0]}'?" if close else ""
            raise ConfigError(f"unknown config key '{full}'{hint} (valid keys here: {', '.join(names)})")
        annotation = hints[key]
        if dataclasses.is_dataclass(annotation):
            kwargs[key] = _build(annotation, value, full)
            continue
        value = _check_scalar(value, annotation, full)
        if full in CHOICES and value not in CHOICES[full]:
            close = difflib.get_close_matches(str(value), CHOICES[full], n=1, cutoff=0.5)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            raise ConfigError(f"{full}: '{value}' is not one of {CHOICES[full]}{hint}")
        if value is not None and full in POSITIVE and value <= 0:
            raise ConfigError(f"{full}: must be > 0, got {value}")
        if value is not None and full in NON_NEGATIVE and value < 0:
            raise ConfigError(f"{full}: must be >= 0, got {value}")
        kwargs[key] = value
    return cls(**kwargs)


def from_dict(raw: dict) -> RunConfig:
    """Validate a plain nested dict and return the typed configuration."""
    config = _build(RunConfig, raw or {}, "")
    if config.data.image_size is not None and len(config.data.image_size) != 2:
        raise ConfigError(f"data.image_size: expected [height, width], got {config.data.image_size}")
    if config.model.likelihood == "bernoulli" and config.data.preprocessing == "continuous":
        raise ConfigError(
            "model.likelihood: 'bernoulli' needs binary data; set data.preprocessing=dynamic_binarization "
            "or choose a continuous likelihood (discretized_logistic, gaussian, squared_error)"
        )
    return config


def to_dict(config: RunConfig) -> dict:
    return dataclasses.asdict(config)


def apply_overrides(raw: dict, overrides: list[str]) -> dict:
    """Apply `a.b.c=value` strings (values parsed as YAML) to a nested dict, in place."""
    for item in overrides or []:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE, e.g. train.epochs=3")
        key, text = item.split("=", 1)
        parts = key.strip().split(".")
        node = raw
        for part in parts[:-1]:
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
    from training import atomic

    atomic.write_text(path, yaml.safe_dump(to_dict(config), sort_keys=False))
