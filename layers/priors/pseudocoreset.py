"""ByPE-VAE prior: a weighted mixture over a small Bayesian pseudocoreset (ByPE paper Eq. 11-12).

p(z | U, w) = sum_m (w~_m / N) N(z | mu_phi(u_m), sigma^2 I), where mu_phi is the mean head of the top
encoder, sigma^2 one learned scalar, and w~ the centred weights of Algorithm 2 line 2,
w~ = w + (N/M - mean(w)), which sum to N. The pseudo-points U and weights w are not trained by the VAE
optimizer: they are non-trainable state (saved with the weights), updated only by the coreset phase of
`training.procedures.coreset`, together with that update's Adam moments and step counter.
"""

import dataclasses
from dataclasses import dataclass

import keras
import numpy as np
from keras import ops

from layers.distributions import log_mixture_isotropic
from layers.priors.base import PRIORS, Prior
from layers.priors.mixture import sample_component_indices, split_seed
from layers.registry import option


@dataclass
class CoresetConfig:
    """The pseudocoreset update (paper Algorithm 2, reference notes section 3.4), run by the coreset phase
    of `training.procedures.coreset`. Defaults reproduce the official code; each option names a choice the
    paper leaves open or where paper and code differ (docs/models/bype.md#options lists the paper mode)."""

    interval: int = option(10, minimum=1)
    """Run a coreset phase every k epochs (after epochs k, 2k, ...); 1 updates after every epoch."""
    steps: int = option(0, minimum=0)
    """Coreset steps per phase; 0 = one pass over the training split in train.batch_size minibatches."""
    num_samples: int = option(500, minimum=1)
    """S latent samples from the current pseudocoreset prior per step."""
    step_size: float = option(0.5, exclusive_minimum=0)
    """gamma_0 of the step-size schedule gamma_j = gamma_0 / (j + 1)."""
    schedule: str = option("restart", choices=("restart", "continue"))
    """restart: j counts from 0 in every phase while Adam moments persist (official code) | continue:
    j and the bias correction keep counting across phases."""
    potential: str = option("unit_gaussian", choices=("unit_gaussian", "likelihood"))
    """Log-likelihood potential f(x, z): unit_gaussian (official: -1/2 ||x - mean(z)||^2, variance 1)
    | likelihood (the model's own likelihood: Gaussian / squared-error, or Bernoulli). A Gaussian of any scalar
    variance scales every gradient by one constant, which the Adam step ignores, so the two differ only
    for a Bernoulli likelihood."""
    gradient_centering: str = option("pixels", choices=("pixels", "samples"))
    """Centre the pseudo-point gradients over the pixel axis (official code) or over the S samples
    (textbook estimator, paper Eq. 19)."""
    clip_points: bool = False
    """Clip pseudo-point pixels to [0, 1] after each step (the official code does not)."""
    weight_centering: str = option("sampling", choices=("sampling", "write_back"))
    """sampling: the S samples come from the centred, clamped weights w~ while the residual and the update
    use the raw w (official code) | write_back: w is projected onto {w >= 0, sum w = N} before and after
    every step (Algorithm 2 line 2's centring, with the clamp made part of it), so sampling, the residual,
    the update and the VAE's prior all use one vector (paper)."""
    weight_step_size: float = option(0.0, minimum=0)
    """0: w takes the shared Adam step gamma_j of [w; vec(U)], about gamma_j per step whatever the weights'
    scale N/M (official code) | > 0: gamma_0 of w's own schedule in units of N/M (a step of
    weight_step_size * (N/M) / (j + 1) times w's Adam direction), so w moves on its own scale."""
    update_points: bool = True
    """Update the pseudo-points U in the coreset phase (false: U stays at its initial training images)."""
    update_weights: bool = True
    """Update the weights w in the coreset phase (false: w stays uniform, N/M). With both false no phase runs."""


@dataclass
class PseudocoresetPriorConfig:
    components: int = option(500, minimum=1)
    """M pseudo-points."""
    coreset: CoresetConfig = dataclasses.field(default_factory=CoresetConfig)
    """The coreset update run every `coreset.interval` epochs (the two-step alternation)."""


@PRIORS.register("bype", PseudocoresetPriorConfig)
class PseudocoresetPrior(Prior):
    """Weighted pseudocoreset prior with a shared isotropic kernel r(z | u) = N(mu(u), sigma^2 I).

    Args:
        latent_dim: dimensionality of z.
        image_shape: (H, W, C) of a pseudo-point.
        num_train: N, the training-set size the weights sum to.
        components: M pseudo-points.
        seed: seed of the prior's own generator (log-variance init, coreset-phase sampling).
        coreset: options of the coreset update (`CoresetConfig` as a dict; unset keys take its defaults).
    """

    def __init__(self, latent_dim, image_shape, num_train, components=500, seed=0, coreset=None, **kwargs):
        super().__init__(latent_dim, **kwargs)
        if num_train is None or num_train < 1:
            raise ValueError("the bype prior needs the training-set size N (build_model(..., num_train=len(train)))")
        self.image_shape = tuple(image_shape)
        self.num_train = int(num_train)
        self.components = int(components)
        self.num_components = self.components
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)
        self.coreset = {**dataclasses.asdict(CoresetConfig()), **(coreset or {})}

    def build(self, input_shape=None):
        dim = int(np.prod(self.image_shape))
        m = self.components
        # Reference init of the shared log-variance: one N(0, 1) draw.
        log_var0 = float(np.random.default_rng(self.seed).normal())
        self.log_variance = self.add_weight(
            name="log_variance", shape=(), initializer=keras.initializers.Constant(log_var0))
        state = dict(trainable=False)
        self.points = self.add_weight(name="points", shape=(m, *self.image_shape), initializer="zeros", **state)
        self.point_weights = self.add_weight(
            name="coreset_weights", shape=(m,), initializer=keras.initializers.Constant(self.num_train / m), **state)
        # Adam moments of the concatenated vector [w; vec(U)] and the step counter j of the coreset update.
        self.moment1 = self.add_weight(name="moment1", shape=(m + m * dim,), initializer="zeros", **state)
        self.moment2 = self.add_weight(name="moment2", shape=(m + m * dim,), initializer="zeros", **state)
        self.update_count = self.add_weight(name="update_count", shape=(), initializer="zeros", **state)

    def initialize_from_data(self, images, seed):
        """u_m <- M distinct random training images, w_m <- N / M (Algorithm 2, input)."""
        if len(images) < self.components:
            raise ValueError(
                f"model.prior.components={self.components} pseudo-points cannot be initialised from "
                f"{len(images)} training images; lower model.prior.components"
            )
        chosen = np.random.default_rng(seed).choice(len(images), self.components, replace=False)
        self.points.assign(np.asarray(images[chosen], dtype="float32"))
        self.point_weights.assign(np.full(self.components, self.num_train / self.components, dtype="float32"))

    # --- the mixture -------------------------------------------------------------------------------
    def centred_weights(self):
        """w~ = w + (N/M - mean(w)) (sums to N); clamped at 0 so a component can switch off, never NaN."""
        w = self.point_weights + (self.num_train / self.components - ops.mean(self.point_weights))
        return ops.maximum(w, 0.0)

    def component_log_weights(self):
        w = self.centred_weights()
        return ops.log(w) - ops.log(ops.sum(w))  # = log(w~ / N) unless clamping removed mass

    def component_means(self, points=None):
        """mu_phi(u_m): the encoder's mean head on the pseudo-points (gradients reach the encoder only)."""
        points = self.points if points is None else points
        return self._encode(ops.stop_gradient(points))[0]

    def log_prob(self, z):
        return log_mixture_isotropic(z, self.component_means(), self.log_variance, self.component_log_weights())

    # --- generation (Algorithm 1) --------------------------------------------------------------------
    def _kernel(self, means, seed):
        eps = keras.random.normal(ops.shape(means), seed=seed)
        return means + ops.exp(0.5 * self.log_variance) * eps

    def sample(self, num_samples, seed=None):
        """u_m ~ Multi(w~ / N), z ~ r(z | u_m)."""
        index_seed, noise_seed = split_seed(self.seed_generator if seed is None else seed, 2)
        index = sample_component_indices(self.component_log_weights(), num_samples, index_seed)
        return self._kernel(self.component_means(ops.take(self.points, index, axis=0)), noise_seed)

    def component_sample(self, index, num_samples, seed=None):
        means = self.component_means(self.points[index][None])
        return self._kernel(ops.repeat(means, num_samples, axis=0), self.seed_generator if seed is None else seed)

    def component_inputs(self):
        return self.points

    def kernel_sample(self, images, seed=None):
        return self._kernel(self._encode(ops.convert_to_tensor(images))[0], self.seed_generator if seed is None else seed)

    def get_config(self):
        return {
            **super().get_config(),
            "image_shape": list(self.image_shape),
            "num_train": self.num_train,
            "components": self.components,
            "seed": self.seed,
            "coreset": self.coreset,
        }
