"""Gaussian pixels with a fixed or learned shared variance (Exemplar / ByPE code)."""

import math
from dataclasses import dataclass

from keras import ops

from layers.distributions import log_normal_diag
from layers.likelihoods.base import LIKELIHOODS, MEAN_CLAMP, Likelihood
from layers.registry import option


@dataclass
class GaussianConfig:
    variance: float | None = option(None, exclusive_minimum=0)
    """A fixed pixel variance, or None to learn one shared log-variance (initialised at 0)."""


@LIKELIHOODS.register("gaussian", GaussianConfig)
class Gaussian(Likelihood):
    """Gaussian pixels with a linear, clamped mean (Exemplar/ByPE code) and a fixed or learned variance.

    Args:
        variance: a fixed variance, or None to learn one shared log-variance (initialised at 0).
    """

    def __init__(self, image_shape, head="dense", variance=None, **kwargs):
        super().__init__(image_shape, head, **kwargs)
        self.variance = variance

    def build(self, input_shape):
        super().build(input_shape)
        if self.variance is None:
            self.log_variance = self.add_weight(name="log_variance", shape=(), initializer="zeros")

    def transform(self, mean):
        return (ops.clip(mean, *MEAN_CLAMP),)

    def _log_var(self):
        return self.log_variance if self.variance is None else ops.convert_to_tensor(math.log(self.variance))

    def log_prob(self, x, params):
        return log_normal_diag(x, params[0], self._log_var(), event_ndims=3)  # the scalar broadcasts

    def gaussian_log_variance(self):
        return self._log_var()

    def get_config(self):
        return {**super().get_config(), "variance": self.variance}
