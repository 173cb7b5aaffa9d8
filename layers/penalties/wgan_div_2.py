"""WGAN-div at the real and fake points ("WGAN-div-2" in VAEPP; PyTorch-GAN's wgan_div):

    (k / 2) * [mean_i (sum g_real,i^2)^(p/2) + mean_i (sum g_fake,i^2)^(p/2)].

No interpolates, so nothing is drawn (`seed` is ignored); the fake term carries the gradient to `fake`.
"""

from keras import ops

from layers.penalties.base import PENALTIES, GradientPenalty, critic_gradient, squared_norms
from layers.penalties.wgan_div_1 import WGANDivConfig


@PENALTIES.register("wgan_div_2", WGANDivConfig)
class WGANDivRealFake(GradientPenalty):
    """(k / 2) [mean (sum g_real^2)^(p/2) + mean (sum g_fake^2)^(p/2)]."""

    uses_interpolates = False

    def __init__(self, weight=2.0, exponent=6.0):
        super().__init__(weight)
        self.exponent = float(exponent)

    def penalty(self, critic, real, fake, alpha=None):
        power = 0.5 * self.exponent
        real_term = ops.mean(ops.power(squared_norms(critic_gradient(critic, real)), power))
        fake_term = ops.mean(ops.power(squared_norms(critic_gradient(critic, fake)), power))
        return 0.5 * self.weight * (real_term + fake_term)

    def get_config(self):
        return {**super().get_config(), "exponent": self.exponent}
