"""The standard normal prior N(0, I)."""

import keras

from layers.distributions import log_standard_normal
from layers.priors.base import PRIORS, Prior


@PRIORS.register("standard_normal")
class StandardNormal(Prior):
    """p(z) = N(z; 0, I)."""

    def log_prob(self, z):
        return log_standard_normal(z)

    def sample(self, num_samples, seed=None):
        return keras.random.normal((num_samples, self.latent_dim), seed=seed)
