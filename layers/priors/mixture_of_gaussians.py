"""Mixture-of-Gaussians prior with trainable means and variances (VampPrior paper's MoG baseline)."""

from dataclasses import dataclass

import keras
from keras import ops

from layers.distributions import log_mixture_normal_diag
from layers.priors.base import PRIORS, Prior
from layers.priors.mixture import sample_component_indices, sample_diag_normal, split_seed
from layers.registry import option


@dataclass
class MixtureOfGaussiansConfig:
    components: int = option(500, minimum=1)
    """K mixture components."""
    learn_weights: bool = False
    """Learn the mixture weights (True) or keep them uniform (False, as in the VampPrior paper)."""


@PRIORS.register("mog", MixtureOfGaussiansConfig)
class MixtureOfGaussians(Prior):
    """p(z) = sum_k pi_k N(z; mu_k, diag sigma_k^2).

    Args:
        latent_dim: dimensionality of z.
        components: K.
        learn_weights: learn pi (softmax of trainable logits) instead of keeping it uniform.
    """

    def __init__(self, latent_dim, components=500, learn_weights=False, **kwargs):
        super().__init__(latent_dim, **kwargs)
        self.components = components
        self.learn_weights = learn_weights
        self.num_components = components

    def build(self, input_shape=None):
        k, d = self.components, self.latent_dim
        self.means = self.add_weight(name="means", shape=(k, d), initializer=keras.initializers.RandomNormal(0.0, 1.0))
        self.log_vars = self.add_weight(name="log_vars", shape=(k, d), initializer="zeros")
        self.logits = self.add_weight(name="logits", shape=(k,), initializer="zeros", trainable=self.learn_weights)

    def log_weights(self):
        return self.logits - ops.logsumexp(self.logits)

    def log_prob(self, z):
        return log_mixture_normal_diag(z, self.means, self.log_vars, self.log_weights())

    def sample(self, num_samples, seed=None):
        index_seed, noise_seed = split_seed(seed, 2)
        index = sample_component_indices(self.log_weights(), num_samples, index_seed)
        return sample_diag_normal(ops.take(self.means, index, axis=0), ops.take(self.log_vars, index, axis=0), noise_seed)

    def component_sample(self, index, num_samples, seed=None):
        means = ops.repeat(self.means[index][None, :], num_samples, axis=0)
        log_vars = ops.repeat(self.log_vars[index][None, :], num_samples, axis=0)
        return sample_diag_normal(means, log_vars, seed)

    def get_config(self):
        return {**super().get_config(), "components": self.components, "learn_weights": self.learn_weights}


