"""ByPE's squared-error reconstruction term, an unnormalised Gaussian of variance 1/2."""

import math

from keras import ops

from layers.likelihoods.base import LIKELIHOODS, MEAN_CLAMP, Likelihood


@LIKELIHOODS.register("squared_error")
class SquaredError(Likelihood):
    """ByPE's reconstruction term: log p(x|z) := -sum_d (x_d - mean_d)^2 (sum, no 1/2, no variance).

    This is a Gaussian with variance 1/2 *without* its normalising constant: the normalised log-density
    is `log_prob - (D/2) log(pi)` (about -448.7 nats for D = 784). Evaluation reports both numbers.
    """

    def transform(self, mean):
        return (ops.clip(mean, *MEAN_CLAMP),)

    def log_prob(self, x, params):
        return -ops.sum(ops.square(x - params[0]), axis=(-3, -2, -1))

    def gaussian_log_variance(self):
        return ops.convert_to_tensor(math.log(0.5))

    def log_normalizer_offset(self):
        return -0.5 * self.event_size * math.log(math.pi)
