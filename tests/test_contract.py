"""The registry contract: every registered prior x architecture (x likelihood) honours the same API.

In the manner of keras-hub's `run_layer_test` / `run_model_saving_test`, every parametrisation is read
from the registries at collection time (`PRIORS.names()`, `ARCHITECTURES.names()`, `LIKELIHOODS.names()`),
so a class that registers gets every check here without editing a list. A throwaway prior defined in this
module (`contract_example_prior`: one diagonal Gaussian with a learned mean and log-variance) is added to
the prior names and goes through the same checks; a fixture registers it for the duration of each test
that uses it and removes it again, so it never leaks into other modules' parametrisations. It shows that
a new prior is one class + its config dataclass + one registration line.

The oracles are independent of the code under test: trapezoid quadrature of exp(log p) on fine grids
(normalisation, and the exact log p(x) = log integral exp(log p(x, z)) dz that the IWAE estimator must
reproduce), Kolmogorov-Smirnov distances between samplers and the CDF integrated from `log_prob`, and
value-for-value comparisons between a model and its clone / reloaded copy / exported SavedModel.

Budget (2 CPU cores, <= ~150 s per backend): the cheap checks run on the full prior x architecture
product with a synthetic 4x4x1 image on every backend (the config round trip and .keras save / load with
one prior per PixelCNN and per convolutional architecture: `SERIALIZATION_CASES`); priors
shrink to test size with their `tiny_options` (fewer Monte-Carlo draws), as architectures do. Training on
the digits and SavedModel export run on a covering subset in which every prior and every architecture
appears (`EXPENSIVE_CASES`; ConvHVAE and the PixelCNN architectures are left out of these two on JAX only:
tests/test_pixelcnn.py trains and exports a PixelCNN model on JAX), the exact-likelihood oracle on every prior x {vae, hvae} with the
likelihoods in turn (`ORACLE_CASES`).
"""

import contextlib
import csv
import dataclasses
import json
import math

import keras
import numpy as np
import pytest
import yaml
from keras import ops

from exports.signatures import reference, signature_names
from layers.distributions import log_normal_diag
from layers.gaussian_head import GaussianHead
from layers.likelihoods import LIKELIHOODS
from layers.priors import PRIORS
from layers.priors.base import Prior
from layers.registry import option, options_to_dict
from training import config as config_lib
from training.procedures import PROCEDURES, callbacks_for_prior
from zoo.base import ARCHITECTURES, build_model

BACKEND = keras.backend.backend()

# --------------------------------------------------------------------------------------------------
# The throwaway example prior: one class, its config dataclass, one registration line (in the fixture)
# --------------------------------------------------------------------------------------------------

EXAMPLE = "contract_example_prior"


@dataclasses.dataclass
class ContractExamplePriorConfig:
    init_scale: float = option(1.0, exclusive_minimum=0)
    """Initial standard deviation of every latent coordinate."""


class ContractExamplePrior(Prior):
    """p(z) = N(z; m, diag exp(v)) with a learned mean m and log-variance v (initialised at 0, 2 log init_scale)."""

    def __init__(self, latent_dim, init_scale=1.0, **kwargs):
        super().__init__(latent_dim, **kwargs)
        self.init_scale = init_scale

    def build(self, input_shape=None):
        self.mean = self.add_weight(name="mean", shape=(self.latent_dim,), initializer="zeros")
        self.log_var = self.add_weight(name="log_var", shape=(self.latent_dim,),
                                       initializer=keras.initializers.Constant(2.0 * math.log(self.init_scale)))

    def log_prob(self, z):
        return log_normal_diag(z, self.mean[None, :], self.log_var[None, :])

    def sample(self, num_samples, seed=None):
        eps = keras.random.normal((num_samples, self.latent_dim), seed=seed)
        return self.mean[None, :] + ops.exp(0.5 * self.log_var)[None, :] * eps

    def get_config(self):
        return {**super().get_config(), "init_scale": self.init_scale}


@contextlib.contextmanager
def example_prior_registered():
    """Register the example prior in `PRIORS` (and with keras.saving) and remove every trace afterwards."""
    from keras.src.saving import object_registration

    if EXAMPLE in PRIORS.names():
        raise RuntimeError(f"{EXAMPLE} is already registered: a previous test leaked it")
    PRIORS.register(EXAMPLE, ContractExamplePriorConfig)(ContractExamplePrior)  # the registration line
    keras_name = object_registration.GLOBAL_CUSTOM_NAMES[ContractExamplePrior]
    try:
        yield
    finally:
        PRIORS._classes.pop(EXAMPLE, None)
        PRIORS._configs.pop(EXAMPLE, None)
        object_registration.GLOBAL_CUSTOM_OBJECTS.pop(keras_name, None)
        object_registration.GLOBAL_CUSTOM_NAMES.pop(ContractExamplePrior, None)


@pytest.fixture(autouse=True)
def _register_example_prior_when_used(request):
    """Tests parametrised with prior=contract_example_prior run with it registered, and only those."""
    callspec = getattr(request.node, "callspec", None)
    if callspec is not None and callspec.params.get("prior") == EXAMPLE:
        with example_prior_registered():
            yield
    else:
        yield


# --------------------------------------------------------------------------------------------------
# What is parametrised (read from the registries at collection time)
# --------------------------------------------------------------------------------------------------


def _fits(prior, architecture):
    """Pairs the config validation accepts (`training.config.incompatibility`); the example prior fits all."""
    return prior == EXAMPLE or config_lib.incompatibility(prior, architecture) is None


PRIOR_NAMES = [*PRIORS.names(), EXAMPLE]
ARCHITECTURE_NAMES = ARCHITECTURES.names()
LIKELIHOOD_NAMES = LIKELIHOODS.names()
BASE_ARCHITECTURE = "vae" if "vae" in ARCHITECTURE_NAMES else ARCHITECTURE_NAMES[0]  # the cheapest to train

SHAPE = (4, 4, 1)  # synthetic images where no training is involved
NUM_TRAIN = 12
COMPONENTS = 3
# Every batch the networks see in the cheap checks has this size (images, latents, samples, pseudo-inputs):
# eager JAX compiles each operation once per shape, which costs ~1.5 s per new batch size for ConvHVAE.
BATCH = COMPONENTS
LATENT = 2
HIDDEN = 8

PRODUCT = [(p, a) for p in PRIOR_NAMES for a in ARCHITECTURE_NAMES if _fits(p, a)]
INCOMPATIBLE = [(p, a) for p in PRIOR_NAMES for a in ARCHITECTURE_NAMES if not _fits(p, a)]


def _is_conv(architecture):
    """Convolutional networks (ConvHVAE, the PixelCNN decoders): eager JAX compiles each of their operations
    per batch shape, which the budget below accounts for."""
    return ARCHITECTURES[architecture].likelihood_head != "dense"


def skip_prior_math_on_jax_conv(prior, architecture):
    """Budget: eager JAX compiles every ConvHVAE operation for each new batch shape (~1.5 s each), so on JAX
    the prior-math checks (density, sampling, components) run for ConvHVAE with the first prior only; the
    other priors' math is architecture-independent keras.ops, checked on JAX with the VAE and HVAE and with
    ConvHVAE on TensorFlow and PyTorch. A prior whose density reads the decoder (`needs_decoder_mean`: the
    pull-back prior) runs its prior-math checks through the dense decoders only: on ConvHVAE the sampling
    check pushes 4000 SIR + MALA chains through the convolutional decoder (400 s on TensorFlow); its
    training, round trips and export run on ConvHVAE as for every prior."""
    if BACKEND == "jax" and _is_conv(architecture) and prior != PRIOR_NAMES[0]:
        pytest.skip(f"budget: on JAX {architecture} runs the prior-math checks with {PRIOR_NAMES[0]} only")
    if prior != EXAMPLE and PRIORS[prior].needs_decoder_mean and _is_conv(architecture):
        pytest.skip(f"budget: {prior} reads the decoder; its prior math is checked through the dense decoders")


def covering(first, second):
    """Pairs in which every name of both lists appears at least once (max(len) pairs)."""
    return [(first[i % len(first)], second[i % len(second)]) for i in range(max(len(first), len(second)))]


def cheapest_covering(priors, architectures, base):
    """The fewest (prior, architecture) pairs that use every prior and every architecture, as many as possible
    on the cheap base architecture: the first priors on `base`, the last ones (the example prior, cheapest
    of all, first) one per other architecture."""
    others = [a for a in architectures if a != base]
    on_base = max(len(priors) - len(others), 1)
    rest = priors[on_base:][::-1] or priors
    pairs = [(p, base) for p in priors[:on_base]]
    for i, a in enumerate(others):  # the next prior in turn that fits the architecture
        pairs.append(next((rest[(i + j) % len(rest)], a) for j in range(len(rest)) if _fits(rest[(i + j) % len(rest)], a)))
    missing = [p for p in priors if p not in {q for q, _ in pairs}]
    return pairs + [(p, base) for p in missing]


# Training on the digits and SavedModel export cost seconds per case (jit / jax2tf compilation), so they run
# on the cheapest covering: every prior once, every architecture once (6 cases for 6 priors, 3 architectures).
# On JAX, the architectures with convolutional networks (likelihood head "conv") are left out of these two:
# XLA compiles a ConvHVAE train step / exported graph in ~12 s each, which this file's budget cannot hold on
# top of the conv model's eager compilation in the checks above (ConvHVAE is covered there on JAX too, and
# trained and exported on TensorFlow, trained on PyTorch).
EXPENSIVE_ARCHITECTURES = [a for a in ARCHITECTURE_NAMES if not (BACKEND == "jax" and _is_conv(a))]
EXPENSIVE_CASES = cheapest_covering(PRIOR_NAMES, EXPENSIVE_ARCHITECTURES, BASE_ARCHITECTURE)

# The config round trip and the .keras save / load run on every prior x architecture pair except for the
# autoregressive (PixelCNN) and the convolutional architectures, which each take one prior in turn (about
# 12 s a case: their observable outputs include pixel-by-pixel samples, or the pull-back prior's sampler
# through a conv decoder, 13 s for ResNetVAE on TensorFlow and 44 s for ConvHVAE on eager JAX). A prior's
# state is carried by the prior's own config and weights, which the full product on the dense
# architectures checks; an architecture's by its own, which one prior checks.
AUTOREGRESSIVE = [a for a in ARCHITECTURE_NAMES if ARCHITECTURES[a].autoregressive]
ONE_PRIOR_EACH = [a for a in ARCHITECTURE_NAMES if a in AUTOREGRESSIVE or _is_conv(a)]
SERIALIZATION_CASES = [(p, a) for p, a in PRODUCT if a not in ONE_PRIOR_EACH] + [
    next((q, a) for k in range(len(PRIOR_NAMES)) for q in [PRIOR_NAMES[(3 * i + k) % len(PRIOR_NAMES)]] if _fits(q, a))
    for i, a in enumerate(ONE_PRIOR_EACH)]  # a different prior for each, in turn

# The exact-likelihood oracle: every prior on both single- and two-level models, the likelihoods in turn so
# each appears with both (a likelihood enters log p(x, z) as one additive term, checked on its own in
# tests/test_distributions.py; the prior x architecture pairs are where the IWAE paths differ).
ORACLE_ARCHITECTURES = [a for a in ("vae", "hvae") if a in ARCHITECTURE_NAMES]
ORACLE_CASES = [(p, LIKELIHOOD_NAMES[(i + j) % len(LIKELIHOOD_NAMES)], a)
                for j, a in enumerate(ORACLE_ARCHITECTURES) for i, p in enumerate(PRIOR_NAMES)]


# --------------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------------


def _np(x):
    return np.asarray(ops.convert_to_numpy(x), dtype=np.float64)


def _t(a):
    return ops.convert_to_tensor(np.asarray(a, dtype=np.float32))


def prior_section(name, **extra):
    """A small `model.prior` section: 3 components where the prior has them, a quick ByPE coreset phase."""
    section = {"name": name, **PRIORS[name].tiny_options}
    options = PRIORS.option_names(name)
    if "components" in options:
        section["components"] = COMPONENTS
    if "coreset" in options:
        section["coreset"] = {"interval": 1, "steps": 2, "num_samples": 20}
    section.update(extra)
    return section


def model_options(architecture, prior, latent_dim=LATENT, likelihood="bernoulli"):
    """The validated `model` section (through `training.config.from_dict`, as a YAML file would be)."""
    section = prior_section(prior)
    if "chunk_size" in PRIORS.option_names(prior):  # the exemplar cache is encoded in batches of BATCH
        section["chunk_size"] = BATCH
    raw = {"architecture": architecture, "latent_dim": latent_dim, "hidden_units": HIDDEN,
           "likelihood": likelihood, "prior": section, **ARCHITECTURES[architecture].tiny_options}
    return config_lib.from_dict({"model": raw}).model


def synthetic_images(n, shape=SHAPE, seed=0):
    return np.random.default_rng(seed).random((n, *shape)).astype("float32")


def build(architecture, prior, latent_dim=LATENT, shape=SHAPE, likelihood="bernoulli", num_train=NUM_TRAIN, seed=0,
          before_init=None):
    """A model as `fit` builds it, with the prior's data-dependent initialisation done (after `before_init`).
    The global Keras seed is set first, as `fit` does, so the random weights do not depend on test order."""
    keras.utils.set_random_seed(seed)
    model = build_model(model_options(architecture, prior, latent_dim, likelihood), shape, seed=seed,
                        num_train=num_train)
    if before_init is not None:
        before_init(model)
    model.prior.initialize_from_data(synthetic_images(num_train, shape, seed=100 + seed), seed=seed)
    return model


_SHARED = {}
_INITIAL_PRIOR_STATE = {}


def shared_model(architecture, prior, latent_dim=LATENT):
    """One built model per (architecture, prior, latent size) with its prior state moved, shared by the
    read-only checks (integer seeds and `exports.seeds.seeded` leave every variable as it is)."""
    key = (architecture, prior, latent_dim)
    if key not in _SHARED:
        model = build(architecture, prior, latent_dim)
        _INITIAL_PRIOR_STATE[key] = [_np(v) for v in model.prior.weights]
        perturb_prior_state(model.prior)
        _SHARED[key] = model
    return _SHARED[key]


@contextlib.contextmanager
def initial_prior_state(architecture, prior, latent_dim=LATENT):
    """The shared model with its prior as `initialize_from_data` left it (restored to the moved state after)."""
    model = shared_model(architecture, prior, latent_dim)
    moved = [_np(v) for v in model.prior.weights]
    for v, value in zip(model.prior.weights, _INITIAL_PRIOR_STATE[(architecture, prior, latent_dim)]):
        v.assign(value.astype("float32"))
    try:
        yield model
    finally:
        for v, value in zip(model.prior.weights, moved):
            v.assign(value.astype("float32"))


@pytest.fixture(scope="module", autouse=True)
def _release_shared_models():
    yield
    _SHARED.clear()
    _INITIAL_PRIOR_STATE.clear()


def perturb_prior_state(prior, seed=0):
    """Move every prior variable away from its initial value (pseudo-inputs, points, weights, cache, ...),
    so that state which is not carried over (clone, save/load, export) or not used shows in the outputs,
    and mixture weights that start uniform become non-uniform. A prior whose log Z is an estimate then
    re-estimates it with its own estimator (`refresh_normalizer`), as training does."""
    rng = np.random.default_rng(seed)
    for v in prior.weights:
        value = _np(v)
        noise = rng.normal(size=value.shape)
        v.assign((value * (1.0 + 0.3 * noise) + 0.3 * rng.normal(size=value.shape)).astype("float32"))
    prior.refresh_normalizer(seed=seed)


def normalisation_tolerance(prior, exact):
    """`exact` for exactly normalised priors; for an estimated log Z, also 4 standard errors of the estimate
    (Z-hat / Z - 1 has the estimator's relative standard error)."""
    return max(exact, 4.0 * float(_np(prior.log_z_stderr))) if prior.normalizer_is_estimated else exact


def trapezoid_weights(grid):
    w = np.full(len(grid), grid[1] - grid[0])
    w[0] = w[-1] = 0.5 * (grid[1] - grid[0])
    return w


GRID_1D = np.linspace(-15.0, 15.0, 4001)
# Largest density on a grid's edge relative to its peak: the grid holds the mass, so an integral that is 1
# cannot come from an excess inside the grid compensating mass cut off outside it (Gaussian tails beyond
# a point at 1e-6 of the peak hold ~1e-6 of the mass per unit of edge length and kernel width).
EDGE = 1e-6
GRID_2D_AXIS = np.linspace(-10.0, 10.0, 401)


def grid_2d():
    a, b = np.meshgrid(GRID_2D_AXIS, GRID_2D_AXIS, indexing="ij")
    return np.stack([a.ravel(), b.ravel()], axis=-1)


def grid_cdf(prior):
    """The CDF of exp(prior.log_prob) on GRID_1D (latent_dim 1), normalised, by cumulative trapezoid."""
    p = np.exp(_np(prior.log_prob(_t(GRID_1D[:, None]))))
    cell = 0.5 * (p[1:] + p[:-1]) * np.diff(GRID_1D)
    cdf = np.concatenate([[0.0], np.cumsum(cell)])
    return cdf / cdf[-1]


def ks_distance(samples_by_group, group_weights, cdf):
    """sup_t |sum_g w_g ECDF_g(t) - F(t)| over the pooled sample points (both one-sided limits)."""
    pooled = np.sort(np.concatenate(samples_by_group))
    sorted_groups = [np.sort(s) for s in samples_by_group]
    right = sum(w * np.searchsorted(s, pooled, side="right") / len(s) for w, s in zip(group_weights, sorted_groups))
    left = sum(w * np.searchsorted(s, pooled, side="left") / len(s) for w, s in zip(group_weights, sorted_groups))
    f = np.interp(pooled, GRID_1D, cdf)
    return float(max(np.max(np.abs(right - f)), np.max(np.abs(left - f))))


# KS acceptance: 2.5 standard deviations of the (weighted) empirical CDF's sup, i.e. K = 2.5 in
# P(sqrt(n) D > K) ~ 2 exp(-2 K^2) = 7e-6 for a plain ECDF; a weighted ECDF of groups of n draws has
# pointwise variance <= sum_g w_g^2 / (4 n), the same as a plain ECDF of n / sum_g w_g^2 draws.
KS_K = 2.5


def signature_inputs(model, name):
    """Small inputs of one SavedModel signature (also the calls the clone / reload comparisons make)."""
    rng = np.random.default_rng(7)
    images = (rng.random((BATCH, *model.image_shape)) < 0.5).astype("float32")
    return {
        "sample": dict(num_samples=BATCH, seed=3),
        "sample_component": dict(component=max(model.prior.num_components - 1, 0), num_samples=BATCH, seed=3),
        "encode": dict(images=images),
        "decode": dict(z=rng.normal(size=(BATCH, model.latent_dim)).astype("float32"), seed=5),
        "reconstruct": dict(images=images, seed=2),
        "log_likelihood": dict(images=images[:1], num_samples=BATCH, seed=1),  # 1 image x BATCH samples
    }[name]


def observable_outputs(model):
    """Everything a user sees of a model, seeded: encode, reconstruct, log p(z) at the encoded means,
    model.sample with an integer seed, and every serving computation (`exports.signatures.reference`)."""
    x = _t((np.random.default_rng(11).random((BATCH, *model.image_shape)) < 0.5))
    mean, log_var = model.encode(x)
    out = {"encode/mean": _np(mean), "encode/log_var": _np(log_var), "reconstruct": _np(model.reconstruct(x, seed=9)),
           "prior.log_prob(mean)": _np(model.prior.log_prob(mean)),
           "sample(seed=7)": _np(model.sample(BATCH, seed=7))}
    for name in signature_names(model):
        for key, value in reference(model, name, **signature_inputs(model, name)).items():
            out[f"{name}/{key}"] = np.asarray(value, dtype=np.float64)
    return out


def assert_same_outputs(got, expected, rtol=1e-6, atol=1e-6):
    assert set(got) == set(expected)
    for key in expected:
        assert got[key].shape == expected[key].shape, key
        assert np.all(np.isfinite(expected[key])), key
        np.testing.assert_allclose(got[key], expected[key], rtol=rtol, atol=atol, err_msg=key)


# --------------------------------------------------------------------------------------------------
# The example prior and the registry
# --------------------------------------------------------------------------------------------------


def test_example_prior_registers_for_the_test_only():
    """Inside the fixture the example prior is a registered prior like any other (names, class, options,
    config validation); afterwards every trace is gone, so other modules' parametrisations never see it."""
    assert EXAMPLE not in PRIORS.names()
    with example_prior_registered():
        assert EXAMPLE in PRIORS.names() and PRIORS[EXAMPLE] is ContractExamplePrior
        options = PRIORS.default_options(EXAMPLE)
        assert (options.name, options.init_scale) == (EXAMPLE, 1.0)
        assert keras.saving.get_registered_object("vae_zoo>ContractExamplePrior") is ContractExamplePrior
        config = config_lib.from_dict({"model": {"prior": {"name": EXAMPLE, "init_scale": 0.5}}})
        assert config.model.prior.init_scale == 0.5
        prior = PRIORS.build(config.model.prior, latent_dim=3, image_shape=SHAPE, num_train=5, seed=0, name="prior")
        prior.build((None, 3))
        np.testing.assert_allclose(_np(prior.log_var), np.full(3, 2 * math.log(0.5)), rtol=1e-6)
    assert EXAMPLE not in PRIORS.names()
    assert keras.saving.get_registered_object("vae_zoo>ContractExamplePrior") is None
    with pytest.raises(config_lib.ConfigError, match=f"model.prior.name: '{EXAMPLE}' is not a registered prior"):
        config_lib.from_dict({"model": {"prior": {"name": EXAMPLE}}})


def test_example_prior_options_are_validated():
    """The config dataclass is the schema: a typo names the option, a wrong type or value names the path."""
    with example_prior_registered():
        with pytest.raises(config_lib.ConfigError, match=r"unknown config key 'model.prior.init_scal'; did you mean "
                                                         r"'model.prior.init_scale'\?"):
            config_lib.from_dict({"model": {"prior": {"name": EXAMPLE, "init_scal": 0.5}}})
        with pytest.raises(config_lib.ConfigError, match="model.prior.init_scale: expected a number, got 'big'"):
            config_lib.from_dict({"model": {"prior": {"name": EXAMPLE, "init_scale": "big"}}})
        with pytest.raises(config_lib.ConfigError, match="model.prior.init_scale: must be > 0, got 0"):
            config_lib.from_dict({"model": {"prior": {"name": EXAMPLE, "init_scale": 0}}})


@pytest.mark.parametrize("prior", PRIOR_NAMES)
def test_unknown_prior_options_are_rejected_clearly(prior):
    """An unknown key fails with its dotted path; a key that belongs to another prior says whose it is."""
    with pytest.raises(config_lib.ConfigError, match=r"unknown config key 'model.prior.no_such_option'"):
        config_lib.from_dict({"model": {"prior": {"name": prior, "no_such_option": 1}}})
    own = set(PRIORS.option_names(prior))
    foreign = sorted({o for p in PRIORS.names() if p != prior for o in PRIORS.option_names(p)} - own)
    if foreign:
        key = foreign[0]
        with pytest.raises(config_lib.ConfigError, match=rf"model.prior.{key} is an option of .*not of prior '{prior}'"):
            config_lib.from_dict({"model": {"prior": {"name": prior, key: 1}}})


@pytest.mark.parametrize("prior", PRIOR_NAMES)
def test_section_options_reach_the_layer(prior):
    """Each option of a prior's section appears with its value in the built layer's config, so a YAML
    setting cannot be silently dropped between the section and the class."""
    options = model_options(BASE_ARCHITECTURE, prior).prior
    built = shared_model(BASE_ARCHITECTURE, prior).prior  # moving the state does not change the config
    assert isinstance(built, PRIORS[prior])
    section = options_to_dict(options)
    section.pop("name")
    layer_config = built.get_config()
    for key, value in section.items():
        assert key in layer_config, key
        assert layer_config[key] == value, key


# --------------------------------------------------------------------------------------------------
# Per prior x architecture: density, samples, components, config round trip, .keras save / load
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("prior,architecture", PRODUCT)
def test_prior_density_normalises(prior, architecture):
    """integral exp(log p(z)) dz = 1, by trapezoid quadrature on [-15, 15] (4001 points, latent_dim 1) for the
    prior as initialised and after moving its state, and on [-10, 10]^2 (401^2 points, latent_dim 2) with the
    state moved; the density on the grid's edge must be negligible, so the grid holds the mass. Encoder-
    based priors use the model's encoder. Spacings of 0.0075 / 0.05 are at most one standard deviation of
    the narrowest kernel the encoder heads allow (log-variance >= -6), where the trapezoid rule's relative
    error on a Gaussian is ~2 exp(-2 pi^2) ~ 5e-9."""
    skip_prior_math_on_jax_conv(prior, architecture)
    w1 = trapezoid_weights(GRID_1D)

    def integral_1d(prior_1d):
        p = np.exp(_np(prior_1d.log_prob(_t(GRID_1D[:, None]))))
        assert max(p[0], p[-1]) < EDGE * p.max()
        return np.sum(w1 * p)

    with initial_prior_state(architecture, prior, 1) as model:
        assert abs(integral_1d(model.prior) - 1.0) < normalisation_tolerance(model.prior, 1e-3)
    prior_1d = shared_model(architecture, prior, 1).prior
    assert abs(integral_1d(prior_1d) - 1.0) < normalisation_tolerance(prior_1d, 1e-3)

    prior_2d = shared_model(architecture, prior).prior
    p2 = np.exp(_np(prior_2d.log_prob(_t(grid_2d())))).reshape(len(GRID_2D_AXIS), len(GRID_2D_AXIS))
    edge = max(p2[0].max(), p2[-1].max(), p2[:, 0].max(), p2[:, -1].max())
    assert edge < EDGE * p2.max()
    w2 = trapezoid_weights(GRID_2D_AXIS)
    assert abs(w2 @ p2 @ w2 - 1.0) < normalisation_tolerance(prior_2d, 2e-3)


@pytest.mark.parametrize("prior,architecture", INCOMPATIBLE)
def test_incompatible_prior_and_architecture_are_refused(prior, architecture):
    """A prior that needs what an architecture lacks (the pull-back prior's decoder mean, absent from the
    PixelCNN decoders) is refused at config validation with a one-line reason naming the usable ones."""
    with pytest.raises(config_lib.ConfigError, match=f"model.prior: '{prior}' .*{architecture}.*use one of"):
        config_lib.from_dict({"model": {"architecture": architecture, "prior": prior}})


@pytest.mark.parametrize("prior,architecture", PRODUCT)
def test_samples_have_the_right_shape_and_are_seeded(prior, architecture):
    """prior.sample: [n, latent_dim], finite, distinct rows; model.sample: [n, *image_shape], finite, in
    [0, 1]; the same integer seed gives the same draws and another seed other draws. In 1-D, prior.sample
    follows exp(log_prob): the Kolmogorov-Smirnov distance between 4000 draws and the CDF integrated from
    log_prob is below KS_K / sqrt(n)."""
    skip_prior_math_on_jax_conv(prior, architecture)
    model = shared_model(architecture, prior)
    n = 4000  # one sample size for every prior.sample call (see BATCH)
    z = _np(model.prior.sample(n, seed=3))
    assert z.shape == (n, LATENT) and np.all(np.isfinite(z))
    np.testing.assert_array_equal(z, _np(model.prior.sample(n, seed=3)))
    assert np.mean(np.abs(z - _np(model.prior.sample(n, seed=4)))) > 0.05
    assert len({tuple(row) for row in z}) == n

    x = _np(model.sample(BATCH, seed=5))
    assert x.shape == (BATCH, *SHAPE) and np.all(np.isfinite(x))
    assert x.min() >= 0.0 and x.max() <= 1.0
    np.testing.assert_array_equal(x, _np(model.sample(BATCH, seed=5)))
    assert np.max(np.abs(x - _np(model.sample(BATCH, seed=6)))) > 1e-4

    prior_1d = shared_model(architecture, prior, 1).prior
    draws = _np(prior_1d.sample(n, seed=21))[:, 0]
    distance = ks_distance([draws], [1.0], grid_cdf(prior_1d))
    assert distance < KS_K / math.sqrt(n), distance


@pytest.mark.parametrize("prior,architecture", PRODUCT)
def test_mixture_components_make_up_the_prior(prior, architecture):
    """For mixtures: the log weights normalise, component samples and inputs have the documented shapes,
    and the mixture identity p(z) = sum_k w_k p_k(z) holds in distribution: the w-weighted empirical CDF of
    2000 draws from each component (`component_sample`) matches the CDF integrated from `log_prob` (1-D KS;
    the state is moved, so weights that can differ are not uniform)."""
    skip_prior_math_on_jax_conv(prior, architecture)
    model = shared_model(architecture, prior)
    k = model.prior.num_components
    if k == 0:
        assert model.prior.component_inputs() is None
        with pytest.raises(NotImplementedError):
            model.prior.component_log_weights()
        pytest.skip(f"{prior} is not a mixture (num_components == 0)")
    log_w = _np(model.prior.component_log_weights())
    assert log_w.shape == (k,) and np.all(log_w <= 0.0)
    assert abs(np.logaddexp.reduce(log_w)) < 1e-5
    for index in (0, k - 1):
        z = _np(model.prior.component_sample(index, BATCH, seed=index))
        assert z.shape == (BATCH, LATENT) and np.all(np.isfinite(z))
        assert np.all(np.isfinite(_np(model.prior.log_prob(_t(z)))))
    inputs = model.prior.component_inputs()
    assert inputs is None or tuple(_np(inputs).shape) == (k, *SHAPE)

    prior_1d = shared_model(architecture, prior, 1).prior
    weights = np.exp(_np(prior_1d.component_log_weights()))
    per_component = 2000
    draws = [_np(prior_1d.component_sample(j, per_component, seed=50 + j))[:, 0] for j in range(k)]
    distance = ks_distance(draws, weights, grid_cdf(prior_1d))
    assert distance < KS_K * math.sqrt(np.sum(weights ** 2) / per_component), distance


@pytest.mark.parametrize("prior,architecture", SERIALIZATION_CASES)
def test_get_config_round_trip(prior, architecture):
    """prior: from_config(get_config()) has the same config; model: from_config(get_config()) with the
    weights copied reproduces every output (encode, reconstruct, log p at the encoded means, seeded
    samples and every serving computation, the seeded IWAE estimate included)."""
    model = shared_model(architecture, prior)
    config = model.prior.get_config()
    assert type(model.prior).from_config(config).get_config() == config

    clone = type(model).from_config(model.get_config())
    assert clone is not model and clone.get_config() == model.get_config()
    assert type(clone.prior) is type(model.prior) and type(clone.likelihood) is type(model.likelihood)
    clone.set_weights(model.get_weights())
    assert_same_outputs(observable_outputs(clone), observable_outputs(model))


@pytest.mark.parametrize("prior,architecture", SERIALIZATION_CASES)
def test_keras_save_and_load(prior, architecture, tmp_path):
    """A `.keras` file restores the whole model on this backend, the prior's state included (moved away
    from its initial value before saving): the same weights and the same outputs, seeded ones too."""
    model = shared_model(architecture, prior)
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert type(loaded) is type(model) and type(loaded.prior) is type(model.prior)
    assert loaded.get_config() == model.get_config()
    prior_weights = {v.path: _np(v) for v in model.prior.weights}
    loaded_prior_weights = {v.path: _np(v) for v in loaded.prior.weights}
    assert set(loaded_prior_weights) == set(prior_weights)
    for key, value in prior_weights.items():
        np.testing.assert_array_equal(loaded_prior_weights[key], value, err_msg=key)
    for a, b in zip(loaded.get_weights(), model.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    assert_same_outputs(observable_outputs(loaded), observable_outputs(model))


# --------------------------------------------------------------------------------------------------
# Training through training.fit (digits)
# --------------------------------------------------------------------------------------------------

TRAIN_YAML = """
name: contract
seed: 0
data: {data}
model:
  architecture: {architecture}
  latent_dim: 2
  hidden_units: 8
  prior: {prior}
train: {{epochs: 2, batch_size: 100, learning_rate: 0.002, warmup_epochs: 0, early_stopping_patience: 0,
         eval_batch_size: 250, verbose: "0"}}
evaluate: {{num_samples: 10}}
"""


class LossBeforeTraining(keras.callbacks.Callback):
    """The test objective (negative single-sample ELBO, as `val_loss`) on the validation images before the
    first step, and the prior's variables before and after training (before `fit` restores the best weights).

    The loss is `model.evaluate` on the validation stream `fit` validates on: the same compiled test step
    that `fit` then reuses (one compilation fewer than `evaluation.density.elbo_metrics`, which computes the
    same mean, on JAX ~1 s per run)."""

    def __init__(self, validation):
        super().__init__()
        self.validation = validation

    def on_train_begin(self, logs=None):
        self.value = self.model.evaluate(self.validation, verbose=0, return_dict=True)["loss"]
        self.prior_before = {v.path: _np(v) for v in self.model.prior.weights}

    def on_train_end(self, logs=None):
        self.prior_after = {v.path: _np(v) for v in self.model.prior.weights}
        self.trainable = {v.path for v in self.model.prior.trainable_weights}


@pytest.mark.parametrize("prior,architecture", EXPENSIVE_CASES)
def test_short_training_lowers_the_validation_loss(prior, architecture, tmp_path):
    """Two epochs of `training.fit.train` from a YAML config (the real procedure: the prior's callbacks, the
    ByPE coreset phase every epoch, the exemplar cache) lower the validation loss below its value before
    training by more than its Monte-Carlo noise; every trainable prior variable moves, and a prior that
    brings training callbacks has them change its non-trainable state."""
    from training import data as data_lib, fit

    data = {"name": "digits"}
    if ARCHITECTURES[architecture].likelihood_head == "conv":
        # gated convolutions with 64 channels at full resolution: 4x4 digits keep the run to seconds (on JAX,
        # compiling the 8x8 ConvHVAE train step alone takes longer than this file's budget allows)
        data["image_size"] = [4, 4]
    text = TRAIN_YAML.format(architecture=architecture, data=json.dumps(data), prior=json.dumps(prior_section(prior)))
    raw = yaml.safe_load(text)
    raw["model"].update(ARCHITECTURES[architecture].tiny_options)
    config = config_lib.from_dict(raw)
    splits = data_lib.load_splits(config.data)
    before = LossBeforeTraining(data_lib.eval_dataset(splits.validation, config.train.eval_batch_size))
    model, metrics = fit.train(config, tmp_path, run_evaluation=False, extra_callbacks=[before])
    assert metrics is None and isinstance(model.prior, PRIORS[prior])
    with open(tmp_path / "history.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2
    val_losses = [float(r["val_loss"]) for r in rows]
    assert all(math.isfinite(v) for v in val_losses)
    # 250 validation images, single-sample ELBO: each loss has a standard error well below 1 nat
    assert val_losses[-1] < before.value - 1.0, (before.value, val_losses)

    changed = {k for k in before.prior_before
               if before.prior_before[k].shape != before.prior_after[k].shape
               or not np.allclose(before.prior_before[k], before.prior_after[k])}
    assert before.trainable <= changed, sorted(before.trainable - changed)
    if callbacks_for_prior(model, splits, config.train):
        assert changed - before.trainable, f"{prior}: its training callbacks left its state unchanged"


# Every registered training procedure, each with a different prior in turn (procedure i trains with prior
# i mod |priors|, so pairing costs nothing extra): on a single-latent VAE for procedures that refine one
# Gaussian q(z | x) (which a hierarchical architecture must refuse at config validation), on the HVAE otherwise.
# A procedure that trains part of one prior (`requires_prior`: the VAEPP procedures) trains with that prior
# and must refuse another one at config validation.
PROCEDURE_CASES = [(name, PROCEDURES[name].requires_prior or PRIOR_NAMES[i % len(PRIOR_NAMES)])
                   for i, name in enumerate(PROCEDURES.names())]


@pytest.mark.parametrize("procedure,prior", PROCEDURE_CASES)
def test_every_procedure_trains_with_a_prior(procedure, prior, tmp_path):
    """Two epochs of `fit.train` with `train.procedure` set lower the validation loss by more than its noise
    and log the procedure's own epoch metrics, finite; single-latent procedures refuse the HVAE by name, and
    procedures bound to one prior refuse the others."""
    from training import data as data_lib, fit

    cls = PROCEDURES[procedure]
    architecture = "vae" if cls.single_latent else "hvae"
    raw = yaml.safe_load(TRAIN_YAML.format(architecture=architecture, data=json.dumps({"name": "digits"}),
                                           prior=json.dumps(prior_section(prior))))
    raw["train"]["procedure"] = procedure
    raw["train"]["batch_size"] = 50
    config = config_lib.from_dict(raw)
    splits = data_lib.load_splits(config.data)
    before = LossBeforeTraining(data_lib.eval_dataset(splits.validation, config.train.eval_batch_size))
    model, _ = fit.train(config, tmp_path, run_evaluation=False, extra_callbacks=[before])
    with open(tmp_path / "history.csv") as f:
        rows = list(csv.DictReader(f))
    for name in ("loss", *cls.metric_names):
        assert all(math.isfinite(float(r[name])) for r in rows), (name, rows)
    assert float(rows[-1]["val_loss"]) < before.value - 1.0, (before.value, rows)
    if cls.single_latent:
        raw["model"]["architecture"] = "hvae"
        with pytest.raises(config_lib.ConfigError, match="single Gaussian q"):
            config_lib.from_dict(raw)
    if cls.requires_prior:
        raw["model"]["prior"] = {"name": next(p for p in PRIORS.names() if p != cls.requires_prior)}
        with pytest.raises(config_lib.ConfigError, match=f"trains the '{cls.requires_prior}' prior"):
            config_lib.from_dict(raw)


# --------------------------------------------------------------------------------------------------
# SavedModel signatures (TensorFlow and JAX)
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("prior,architecture", EXPENSIVE_CASES)
def test_saved_model_signatures_reproduce_the_keras_model(prior, architecture, tmp_path):
    """Every signature of the export (`signature_names`) returns what `exports.signatures.reference`
    computes with the Keras model for the same inputs and seeds (tolerances of tests/test_exports.py)."""
    if BACKEND not in ("tensorflow", "jax"):
        pytest.skip("in-process SavedModel export needs TensorFlow or JAX; under PyTorch `python -m "
                    "exports.saved_model` re-runs itself on TensorFlow (tests/test_exports.py covers that path)")
    import tensorflow as tf

    from exports import saved_model

    model = build(architecture, prior)
    perturb_prior_state(model.prior)
    limits = saved_model.Limits(max_samples=64, max_batch=64, max_pairs=2000)
    target = saved_model.export(model, tmp_path, "contract", version=1, limits=limits)
    loaded = tf.saved_model.load(str(target))
    names = signature_names(model)
    assert ("sample_component" in names) == (model.prior.num_components > 0)
    assert set(loaded.signatures) == {"serving_default", *names}
    for name in names:
        inputs = signature_inputs(model, name)
        expected = reference(model, name, **inputs)
        fn = loaded.signatures[name]
        specs = fn.structured_input_signature[1]
        got = {k: v.numpy() for k, v in fn(**{k: tf.constant(v, dtype=specs[k].dtype) for k, v in inputs.items()}).items()}
        assert set(got) == set(expected), name
        for key in expected:
            assert got[key].shape == expected[key].shape, (name, key)
            np.testing.assert_allclose(got[key], expected[key], rtol=1e-5, atol=1e-5, err_msg=f"{name}/{key}")


# --------------------------------------------------------------------------------------------------
# The exact-likelihood oracle: IWAE against quadrature of log p(x, z)
# --------------------------------------------------------------------------------------------------

ORACLE_SHAPE = (2, 2, 1)
ORACLE_SAMPLES = 50_000
ORACLE_TRAIN = 6
ORACLE_KERNEL_SCALE = 0.4
# Oracle grids with as many points as importance samples, so that the quadrature of both images and the
# S = 50,000 importance weights of both images evaluate the networks on batches of one shape (eager JAX
# compiles each operation once per shape): z on [-15, 15] (spacing 6e-4) for one latent, [z1, z2] on
# [-15, 15] x [-10, 10] (250 x 200 points, spacings 0.12 and 0.1) for two.
ORACLE_AXES = {1: [np.linspace(-15.0, 15.0, ORACLE_SAMPLES)],
               2: [np.linspace(-15.0, 15.0, 250), np.linspace(-10.0, 10.0, ORACLE_SAMPLES // 250)]}


def tame_networks(model):
    """Make q a proposal with light-tailed importance weights: scale every network kernel (not the prior's
    variables, not biases) by ORACLE_KERNEL_SCALE, and set the log-variance bias of every Gaussian head
    (q(z | x), and p(z1 | z2) / q(z1 | x, z2) in the HVAE) to log 2.

    At the He initialisation of these tiny networks q(z | x) is far from the posterior, and the importance
    weights are so heavy-tailed that no S makes the IWAE comparison decidable (se up to 0.5 nats at S =
    20,000). A Gaussian proposal of variance t^2 for a target of variance s^2 has weights of finite variance
    only when t^2 > s^2 / 2; the priors' mixtures of unit-variance kernels spread over N(0, 1) means have
    s^2 ~ 2, hence t^2 = 2. The networks stay non-linear and the posterior non-trivial (the ELBO gap is
    tens of its standard errors in most cases)."""
    prior_variables = {id(v) for v in model.prior.weights}
    for v in model.trainable_weights:
        if id(v) not in prior_variables and len(v.shape) >= 2:
            v.assign((_np(v) * ORACLE_KERNEL_SCALE).astype("float32"))
    heads = [layer for layer in model._flatten_layers(include_self=False, recursive=True)
             if isinstance(layer, GaussianHead)]
    assert heads, "no Gaussian heads found: tame_networks needs updating for this architecture"
    for head in heads:
        bias = head.log_var_head.bias
        bias.assign(np.full(tuple(bias.shape), math.log(2.0), dtype="float32"))


def oracle_images(likelihood, n=2, seed=3):
    """Data the likelihood is defined on: binary (Bernoulli), bin centres (k + 0.5) / 256 for a discrete
    likelihood on 8-bit bins (as data.preprocessing=continuous produces), continuous in [0, 1] otherwise."""
    cls = LIKELIHOODS[likelihood]
    rng = np.random.default_rng(seed)
    if cls.needs_binary_data:
        return (rng.random((n, *ORACLE_SHAPE)) < 0.5).astype("float32")
    if cls.is_discrete:
        return ((rng.integers(0, 256, size=(n, *ORACLE_SHAPE)) + 0.5) / 256).astype("float32")
    return rng.uniform(0.05, 0.95, size=(n, *ORACLE_SHAPE)).astype("float32")


def exact_log_likelihood(model, x):
    """log integral exp(log p(x, z)) dz per image by quadrature in log space on the `ORACLE_AXES` grid:
    logsumexp of the log-integrand plus the log cell volume (the trapezoid rule, whose end-point halving is
    immaterial because the integrand vanishes on the edge, which is checked). Returns (log p(x), the same
    on the grid of every second point, the largest log-integrand on the edge minus the peak): for these
    smooth, fast-decaying integrands the rule converges faster than any power of the spacing (kinks: O(h^2)),
    so agreement between the two spacings bounds the error of the fine one far below their difference."""
    axes = ORACLE_AXES.get(model.joint_latent_dim)
    if axes is None:
        raise ValueError(f"quadrature oracle for joint latent size {model.joint_latent_dim} is not implemented")
    grid = np.stack([m.ravel() for m in np.meshgrid(*axes, indexing="ij")], axis=-1)
    log_cell = sum(math.log(a[1] - a[0]) for a in axes)
    images = np.repeat(x, len(grid), axis=0)
    log_joint = _np(model.log_joint(_t(images), _t(np.tile(grid, (len(x), 1))))).reshape(len(x), *[len(a) for a in axes])
    assert np.all(np.isfinite(log_joint))
    every = tuple(slice(None, None, 2) for _ in axes)
    fine, coarse, edges = [], [], []
    for cube in log_joint:
        fine.append(np.logaddexp.reduce(cube.ravel()) + log_cell)
        coarse.append(np.logaddexp.reduce(cube[every].ravel()) + log_cell + len(axes) * math.log(2.0))
        edge = max(np.take(cube, i, axis=ax).max() for ax in range(len(axes)) for i in (0, -1))
        edges.append(edge - cube.max())
    return np.array(fine), np.array(coarse), np.array(edges)


@pytest.mark.parametrize("prior,likelihood,architecture", ORACLE_CASES)
def test_iwae_log_likelihood_matches_quadrature(prior, likelihood, architecture):
    """`model.log_likelihood` (the one IWAE estimator, S = 50,000) equals log p(x) = log integral p(x, z) dz
    computed by quadrature of `model.log_joint` (converged: halving the points changes it by < 5e-4), within
    4 standard errors of the estimator (delta method on an independent draw of S importance weights:
    se = sqrt(Var w / (S E[w]^2))) plus 2e-3 for float32 and quadrature; the estimator must be sharp
    (se < 0.012, so the tolerance is at most 0.05 nats). The single-sample ELBO (the mean of the 50,000
    log-weights of that draw, each an independent S = 1 draw) is not above log p(x) (Jensen) beyond 3 of
    its standard errors. Tiny model: 2x2x1 images, one latent per stochastic layer, random networks (see `tame_networks`), the prior as initialised from 6 training images."""
    model = build(architecture, prior, latent_dim=1, shape=ORACLE_SHAPE, likelihood=likelihood,
                  num_train=ORACLE_TRAIN, before_init=tame_networks)
    x = oracle_images(likelihood)
    exact, coarse, edges = exact_log_likelihood(model, x)
    assert np.all(edges < -20.0), edges
    # 5e-4: kinks (the pull-back prior's leaky-ReLU critic) slow the rule to O(h^2); still a quarter of the
    # 2e-3 the comparison below allows for float32 and quadrature
    np.testing.assert_allclose(exact, coarse, rtol=0, atol=5e-4)

    estimate = model.log_likelihood(x, num_samples=ORACLE_SAMPLES, max_batch=50_000)
    assert estimate.dtype == np.float64 and estimate.shape == (len(x),)

    log_w = _np(model.log_importance_weights(_t(x), ORACLE_SAMPLES))
    assert log_w.shape == (len(x), ORACLE_SAMPLES)
    w = np.exp(log_w - log_w.max(axis=1, keepdims=True))
    se = np.sqrt(w.var(axis=1) / (ORACLE_SAMPLES * w.mean(axis=1) ** 2))
    assert np.all(se < 0.012), se
    np.testing.assert_array_less(np.abs(estimate - exact), 4 * se + 2e-3)

    elbo, elbo_se = log_w.mean(axis=1), log_w.std(axis=1) / math.sqrt(ORACLE_SAMPLES)
    np.testing.assert_array_less(elbo - 3 * elbo_se, exact)
