"""The VampPrior code's 256-bin discretised logistic for 8-bit images."""

from keras import ops

from layers.distributions import log_discretized_logistic
from layers.likelihoods.base import LIKELIHOODS, MEAN_CLAMP, Likelihood


@LIKELIHOODS.register("discretized_logistic")
class DiscretizedLogistic(Likelihood):
    """256-bin discretised logistic (VampPrior code): sigmoid-then-clamped mean, log-scale in [-4.5, 0]."""

    parameters = ("mean", "log_scale")
    is_discrete = True

    def transform(self, mean, log_scale):
        return (ops.clip(ops.sigmoid(mean), *MEAN_CLAMP), ops.clip(log_scale, -4.5, 0.0))

    def log_prob(self, x, params):
        return log_discretized_logistic(x, params[0], params[1])
