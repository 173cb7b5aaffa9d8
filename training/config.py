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
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from layers.registry import choice, option, options_to_dict
from training import config_check
from training.config_check import ConfigError, apply_overrides  # noqa: F401  (part of this module's API)
from training.procedures import PROCEDURES
from zoo.base import ARCHITECTURES


DATASETS = ("mnist", "fashion_mnist", "cifar10", "omniglot", "celeb_a", "svhn", "static_mnist", "mnist10k", "digits",
            "idx", "npz")


@dataclass
class DataConfig:
    name: str = option("mnist", choices=DATASETS)
    """mnist | fashion_mnist | cifar10 | omniglot | celeb_a | svhn (greyscale) | static_mnist (TFDS binarized_mnist)
    | mnist10k | digits | idx | npz"""
    path: str | None = None
    """Folder of IDX files (idx, mnist10k), an .npz file (npz), or a folder of TFDS manual files."""
    tfds_data_dir: str | None = None
    """Where TFDS looks for prepared datasets (default: $TFDS_DATA_DIR or ~/tensorflow_datasets)."""
    preprocessing: str = option("dynamic_binarization", choices=("dynamic_binarization", "continuous"))
    """dynamic_binarization (fresh Bernoulli draw per training batch) | continuous ((x + 0.5) / 256)."""
    image_size: list[int] | None = option(None, minimum=1)
    """Resize images to [height, width] (omniglot 28x28, celeb_a 64x64); None keeps the native size."""
    validation_size: int | None = option(None, minimum=1)
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
    learning_rate_halving_epochs: list[int] = option([], minimum=1)
    """Halve the step size after each of these epochs (VAEPP code, MNIST: 200, 400, ..., 2000); [] keeps it."""
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
    seed: int = option(0, minimum=0)
    """Seed of the model's initialisation, the training data stream and the evaluation's draws."""
    runs_dir: str = "runs"
    """Parent folder of run directories (relative paths are relative to the working directory)."""
    data: DataConfig = field(default_factory=DataConfig)
    model: object = choice(ARCHITECTURES, "vae")
    """The architecture's section: {architecture: vae | hvae | conv_hvae | ..., latent_dim, likelihood, prior, ...}."""
    train: TrainConfig = field(default_factory=TrainConfig)
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)


def _type_spec(annotation):
    """A field's annotation as the schema's plain type description."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        return {"kind": "optional", "inner": _type_spec(next(a for a in args if a is not type(None)))}
    if origin is list:
        return {"kind": "list", "item": _type_spec(args[0])}
    for scalar in (bool, int, float, str):
        if annotation is scalar:
            return {"kind": scalar.__name__}
    raise TypeError(f"unsupported config annotation {annotation!r}")


def _section_schema(cls, registries, skip=None):
    hints = typing.get_type_hints(cls)
    fields = {}
    for f in dataclasses.fields(cls):
        if f.name == skip:
            continue
        registry = f.metadata.get("registry")
        if registry is not None:
            _registry_schema(registry, registries)
            fields[f.name] = {"registry": registry.kind}
        elif dataclasses.is_dataclass(hints[f.name]):
            fields[f.name] = {"section": _section_schema(hints[f.name], registries)}
        else:
            spec = {"type": _type_spec(hints[f.name])}
            for check_name in ("choices", "minimum", "exclusive_minimum"):
                if f.metadata.get(check_name) is not None:
                    value = f.metadata[check_name]
                    spec[check_name] = list(value) if isinstance(value, (tuple, list)) else value
            fields[f.name] = spec
    return {"fields": fields}


def _registry_schema(registry, registries):
    if registry.kind in registries:
        return
    entry = registries[registry.kind] = {"kind": registry.kind, "key": registry.key, "names": {}}
    for name in registry.names():
        entry["names"][name] = _section_schema(registry.config_class(name), registries, skip=registry.key)


def schema() -> dict:
    """What a run config may say, as plain data: the sections, their fields' types and checks, and every
    registered choice with its options (what `config_check.check` validates against)."""
    registries = {}
    return {"root": _section_schema(RunConfig, registries), "registries": registries}


def _construct(cls, checked, path):
    """The dataclass of a section from its checked dict (a sub-choice's key picks its class)."""
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name not in checked:
            continue
        value, registry = checked[f.name], f.metadata.get("registry")
        full = f"{path}.{f.name}" if path else f.name
        if registry is not None:
            options = dict(value)
            kwargs[f.name] = _construct(registry.config_class(options.pop(registry.key)), options, full)
        elif dataclasses.is_dataclass(hints[f.name]):
            kwargs[f.name] = _construct(hints[f.name], value, full)
        else:
            kwargs[f.name] = value
    try:
        return cls(**kwargs)
    except ValueError as error:  # a check across the section's options (its __post_init__)
        raise ConfigError(f"{path or 'config'}: {error}") from None


def incompatibility(prior, architecture):
    """Why `prior` cannot be used with `architecture` (a sentence), or None when they fit together."""
    from layers.priors import PRIORS

    if PRIORS[prior].needs_decoder_mean and ARCHITECTURES[architecture].autoregressive:
        usable = [a for a in ARCHITECTURES.names() if not ARCHITECTURES[a].autoregressive]
        return (f"'{prior}' reads the decoder mean E[x | z], which the PixelCNN decoder of '{architecture}' does "
                f"not have; use one of {usable}")
    return None


def from_dict(raw: dict) -> RunConfig:
    """Validate a plain nested dict and return the typed configuration."""
    config = _construct(RunConfig, config_check.check(raw, schema()), "")
    likelihood = config.model.likelihood.name
    from layers.likelihoods import LIKELIHOODS

    procedure = config.train.procedure.name
    architecture = ARCHITECTURES[config.model.architecture]
    if PROCEDURES[procedure].single_latent and architecture.stochastic_layers != 1:
        raise ConfigError(
            f"train.procedure: '{procedure}' refines a single Gaussian q(z | x), but model.architecture "
            f"'{config.model.architecture}' has {architecture.stochastic_layers} stochastic layers; "
            "use a single-latent architecture (vae, pixel_vae) or train.procedure=elbo")
    needed = PROCEDURES[procedure].requires_prior
    if needed and config.model.prior.name != needed:
        raise ConfigError(f"train.procedure: '{procedure}' trains the '{needed}' prior, but model.prior is "
                          f"'{config.model.prior.name}'; set model.prior.name: {needed} or train.procedure: elbo")
    reason = incompatibility(config.model.prior.name, config.model.architecture)
    if reason:
        raise ConfigError(f"model.prior: {reason}")
    if architecture.autoregressive and not LIKELIHOODS[likelihood].can_draw_pixels():
        drawable = [n for n in LIKELIHOODS.names() if LIKELIHOODS[n].can_draw_pixels()]
        raise ConfigError(
            f"model.likelihood: '{likelihood}' cannot draw pixels, which the PixelCNN decoder of "
            f"'{config.model.architecture}' samples with; use one of {drawable}")
    if config.train.warmup_start > 1:
        raise ConfigError(f"train.warmup_start: beta starts at most at 1, got {config.train.warmup_start}")
    greys = [k for k in ("encoder_input", "training_target") if getattr(config.model, k, "image") == "grey"]
    if greys and config.data.preprocessing != "dynamic_binarization":
        raise ConfigError(f"model.{greys[0]}: 'grey' reads the greyscale image each training batch is binarised "
                          "from; set data.preprocessing=dynamic_binarization or model."
                          f"{greys[0]}=image")
    if LIKELIHOODS[likelihood].needs_binary_data and config.data.preprocessing == "continuous":
        raise ConfigError(
            f"model.likelihood: '{likelihood}' needs binary data; set data.preprocessing=dynamic_binarization "
            "or choose a continuous likelihood (discretized_logistic, gaussian, squared_error)"
        )
    return config


def to_dict(config: RunConfig) -> dict:
    """The plain nested dict of a validated config (each chosen section with its key first)."""
    return options_to_dict(config)


def load(path: str | Path, overrides: list[str] | None = None) -> RunConfig:
    """Read a YAML config file, apply `--set` overrides, and validate the result."""
    return from_dict(config_check.load_raw(path, overrides))


def save(config: RunConfig, path: str | Path) -> None:
    from zoo import atomic

    atomic.write_text(path, yaml.safe_dump(to_dict(config), sort_keys=False))
