"""ResNetVAE: one latent with the VAEPP code's pre-activation ResNet encoder and decoder
(vaepp-svi-penalties.md, section 1.6; the networks are `layers.resnet`)."""

from dataclasses import dataclass

from layers.registry import option
from layers.resnet import NETWORKS, LogStdGaussianHead, resnet_decoder_trunk, resnet_encoder_trunk
from zoo.architectures.vae import VAE, VAEConfig
from zoo.base import ARCHITECTURES


@dataclass
class ResNetVAEConfig(VAEConfig):
    latent_dim: int = option(13, minimum=1)
    """Size of z. The VAEPP code's: 13 MNIST-NLL (the default), 12 static MNIST, 24 Omniglot, 40 Fashion
    (Bernoulli), 20 MNIST-FID, 112 Fashion-FID, 128 CelebA and CIFAR-FID, 1024 CIFAR-NLL (an 8x8x16 map
    there; a flat z here)."""
    network: str = option("mnist", choices=NETWORKS)
    """Which of the code's networks: mnist (28x28 digits, dmm_bernouli.py) | cifar10 (dmm_cifar10.py) |
    celeba (64x64, dmm_for_sampling.py). Any image size works: the decoder crops to it."""
    width: float = option(1.0, exclusive_minimum=0)
    """Channel multiplier of every block: max(1, round(channels * width)); 1 is the code's."""
    log_std_min: float = -5.0
    """Lower clip of the encoder's log sigma: -5 in the code's MNIST / Fashion / Omniglot configs, -3 in its
    static MNIST, CIFAR-10 and CelebA ones."""


@ARCHITECTURES.register("resnet_vae", ResNetVAEConfig)
class ResNetVAE(VAE):
    """q(z | x): pre-activation ResNet trunk -> flatten -> zero-kernel linear heads (mean, log sigma clipped
    at `log_std_min`); p(x | z): linear dense -> feature map -> deconv ResNet trunk at image resolution -> the
    likelihood's 1x1 conv head (so every likelihood works; the code's tanh mean head is replaced by it).

    `hidden_units` is not used (the widths are the code's, times `width`)."""

    likelihood_head = "conv"
    # half the code's width (8 to 32 channels) is still cheap on 4x4 images; two epochs on the digits lower the
    # validation loss by ~3.5 nats at 0.5, by 1.5 at 0.25 and by 0.9 at 0.125 (the contract asks for 1)
    tiny_options = {"width": 0.5}

    def __init__(self, image_shape, latent_dim, likelihood, prior, network="mnist", width=1.0, log_std_min=-5.0,
                 **kwargs):
        self.network = network
        self.width = float(width)
        self.log_std_min = float(log_std_min)
        super().__init__(image_shape, latent_dim, likelihood, prior, **kwargs)

    def build_networks(self):
        self.encoder_net = resnet_encoder_trunk(self.network, self.width, name="encoder_net")
        self.encoder_head = LogStdGaussianHead(self.latent_dim, self.log_std_min, name="encoder_head")
        self.decoder_net = resnet_decoder_trunk(self.network, self.image_shape, self.width, name="decoder_net")
