"""The VampPrior code's 256-bin discretised logistic for 8-bit images, with a per-pixel or one global scale."""

import math
from dataclasses import dataclass

from keras import ops

from layers.distributions import log_discretized_logistic
from layers.likelihoods.base import LIKELIHOODS, MEAN_CLAMP, Likelihood
from layers.registry import option

SCALES = ("per_pixel", "global")
END_BINS = ("closed", "open")
BINS = 256
LOG_SCALE_CLAMP = (-4.5, 0.0)  # the VampPrior code's per-pixel clamp


@dataclass
class DiscretizedLogisticConfig:
    scale: str = option("per_pixel", choices=SCALES)
    """per_pixel: a log-scale head per pixel, clamped to [log min_scale, 0] (VampPrior code) | global: one trainable log-scale (initialised at 0), bounded below by log min_scale (BSVI)."""
    min_scale: float | None = option(None, exclusive_minimum=0)
    """Lower bound of the scale (the BSVI setting is scale: global, min_scale: 0.001); None: exp(-4.5), the VampPrior clamp's lower end."""
    end_bins: str = option("closed", choices=END_BINS)
    """closed: the VampPrior code's 256 bins, the mass outside [0, 1] is lost (default: the VampPrior reproductions) | open: PixelCNN++'s end bins to -inf / +inf, a normalised distribution (BSVI)."""


@LIKELIHOODS.register("discretized_logistic", DiscretizedLogisticConfig)
class DiscretizedLogistic(Likelihood):
    """256-bin discretised logistic (VampPrior code): sigmoid-then-clamped mean, log-scale in [-4.5, 0].

    Args:
        scale: "per_pixel" (a second head gives one log-scale per pixel, clamped to [log min_scale, 0]) or
            "global" (one trainable log-scale weight, initialised at 0, bounded below by log min_scale and
            not above; only the mean head is built, and `call` returns (mean,)).
        min_scale: the smallest scale, > 0 (<= 1 for per_pixel); None: exp(-4.5).
        end_bins: "closed" (VampPrior code) or "open" (PixelCNN++).
    """

    parameters = ("mean", "log_scale")
    is_discrete = True

    def __init__(self, image_shape, head="dense", scale="per_pixel", min_scale=None, end_bins="closed", **kwargs):
        super().__init__(image_shape, head, **kwargs)
        if end_bins not in END_BINS:
            raise ValueError(f"discretized_logistic end_bins: '{end_bins}' is not one of {list(END_BINS)}")
        self.end_bins = end_bins
        if scale not in SCALES:
            raise ValueError(f"discretized_logistic scale: '{scale}' is not one of {list(SCALES)}")
        if min_scale is not None and not min_scale > 0:
            raise ValueError(f"discretized_logistic min_scale: must be > 0, got {min_scale}")
        if scale == "per_pixel" and min_scale is not None and min_scale > 1:
            raise ValueError(f"discretized_logistic min_scale: {min_scale} is above the per-pixel upper bound 1 "
                             "(log-scale clamp [log min_scale, 0]); use scale: global or min_scale <= 1")
        self.scale = scale
        self.min_scale = None if min_scale is None else float(min_scale)
        self.min_log_scale = LOG_SCALE_CLAMP[0] if min_scale is None else math.log(min_scale)
        if scale == "global":
            self.parameters = ("mean",)  # the base class builds one head per name: no per-pixel log-scale head

    def build(self, input_shape):
        super().build(input_shape)
        if self.scale == "global":
            self.log_scale = self.add_weight(name="log_scale", shape=(), initializer="zeros")

    def transform(self, mean, log_scale=None):
        mean = ops.clip(ops.sigmoid(mean), *MEAN_CLAMP)
        if self.scale == "global":
            return (mean,)
        return (mean, ops.clip(log_scale, self.min_log_scale, LOG_SCALE_CLAMP[1]))

    def global_log_scale(self):
        """log max(exp(log_scale weight), min_scale), a scalar (global scale only)."""
        return ops.maximum(self.log_scale, self.min_log_scale)

    def _log_scale(self, params):
        return self.global_log_scale() if self.scale == "global" else params[1]

    def log_prob(self, x, params):
        return log_discretized_logistic(x, params[0], self._log_scale(params), bins=BINS,
                                        open_ends=self.end_bins == "open")  # a scalar log-scale broadcasts

    def sample_from_uniform(self, params, uniform):
        """mean + s * logit(u), put in its bin and returned at the bin's centre, (k + 0.5) / 256 as the data.

        Values outside [0, 1] go to the end bins: exact for open end bins; with closed ones it draws from
        the distribution renormalised the same way (the lost mass is given to the end bins)."""
        u = ops.clip(uniform, 1e-7, 1.0 - 1e-7)
        value = params[0] + ops.exp(self._log_scale(params)) * (ops.log(u) - ops.log1p(-u))
        return (ops.clip(ops.floor(value * BINS), 0.0, BINS - 1.0) + 0.5) / BINS

    def get_config(self):
        return {**super().get_config(), "scale": self.scale, "min_scale": self.min_scale, "end_bins": self.end_bins}
