"""Bernoulli pixels for binary images."""

from keras import ops

from layers.distributions import log_bernoulli_logits
from layers.likelihoods.base import LIKELIHOODS, Likelihood


@LIKELIHOODS.register("bernoulli")
class Bernoulli(Likelihood):
    """Bernoulli pixels parameterised by logits (stable; the reference clamps sigmoid means to 1e-5)."""

    parameters = ("logits",)
    is_discrete = True
    needs_binary_data = True

    def log_prob(self, x, params):
        return log_bernoulli_logits(x, params[0])

    def mean(self, params):
        return ops.sigmoid(params[0])

    def sample_from_uniform(self, params, uniform):
        return ops.cast(uniform < ops.sigmoid(params[0]), "float32")
