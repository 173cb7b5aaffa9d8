"""WGAN-GP (Gulrajani et al. 2017): lambda * mean_i (||grad D(x~_i)|| - target)^2.

Interpolates x~ = real + alpha (fake - real), alpha ~ U[0, 1] per example, broadcast over every pixel, as
the official code draws them; the norm is per example over all non-batch axes. It is
sqrt(sum g^2 + 1e-12): sqrt has an infinite derivative at 0, so a critic whose gradient vanishes at a
point would give NaN weight gradients (keras-io #910, pytorch #2534).
"""

from dataclasses import dataclass

from keras import ops

from layers.penalties.base import PENALTIES, GradientPenalty, critic_gradient, interpolate, squared_norms
from layers.registry import option

NORM_EPSILON = 1e-12


@dataclass
class WGANGPConfig:
    weight: float = option(10.0, minimum=0)
    """lambda: 10 in the paper and the official code."""
    target: float = option(1.0, minimum=0)
    """The gradient norm the penalty pulls towards (1: the 1-Lipschitz constraint)."""


@PENALTIES.register("wgan_gp", WGANGPConfig)
class WGANGP(GradientPenalty):
    """lambda * mean_i (sqrt(sum g_i^2 + 1e-12) - target)^2 at interpolates between real and fake."""

    def __init__(self, weight=10.0, target=1.0):
        super().__init__(weight)
        self.target = float(target)

    def penalty(self, critic, real, fake, alpha):
        g = critic_gradient(critic, interpolate(real, fake, alpha))
        norms = ops.sqrt(squared_norms(g) + NORM_EPSILON)
        return self.weight * ops.mean(ops.square(norms - self.target))

    def get_config(self):
        return {**super().get_config(), "target": self.target}
