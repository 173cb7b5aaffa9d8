"""WGAN-div on interpolates (Wu et al. 2018; VAEPP's default "WGAN-div-1"): k * mean_i (sum g_i^2)^(p/2).

x~ = fake + alpha (real - fake), alpha ~ U[0, 1] per example (VAEPP's code). No "-1" target, and the power
is taken of the SQUARED norm, so no sqrt appears and the penalty is smooth at g = 0 for p >= 2.

VAEPP's MNIST-type (Bernoulli) files raise sqrt(sum g^2) to index / 2 = 3, i.e. ||g||^3: that is
`exponent: 3` here (k mean (sum g^2)^(3/2)), the configuration behind the published MNIST numbers; the
CIFAR / Fashion / CelebA files and the WGAN-div paper use p = 6.
"""

from dataclasses import dataclass

from keras import ops

from layers.penalties.base import PENALTIES, GradientPenalty, critic_gradient, interpolate, squared_norms
from layers.registry import option


@dataclass
class WGANDivConfig:
    weight: float = option(2.0, minimum=0)
    """k: 2 in the WGAN-div paper and VAEPP (the official WGAN-div code uses 10)."""
    exponent: float = option(6.0, minimum=2)
    """p, the power of the norm: 6 (paper, VAEPP CIFAR); 3 reproduces VAEPP's MNIST code. Below 2 the
    derivative of (sum g^2)^(p/2) is infinite at g = 0."""


@PENALTIES.register("wgan_div_1", WGANDivConfig)
class WGANDivInterpolates(GradientPenalty):
    """k * mean_i (sum g_i^2)^(p/2) at x~ = fake + alpha (real - fake)."""

    def __init__(self, weight=2.0, exponent=6.0):
        super().__init__(weight)
        self.exponent = float(exponent)

    def penalty(self, critic, real, fake, alpha):
        g = critic_gradient(critic, interpolate(fake, real, alpha))
        return self.weight * ops.mean(ops.power(squared_norms(g), 0.5 * self.exponent))

    def get_config(self):
        return {**super().get_config(), "exponent": self.exponent}
