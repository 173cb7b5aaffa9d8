"""PixelVAE: one latent, the SA-VAE / BSVI gated PixelCNN decoder and ResNet encoder (pixelcnn-decoders.md,
section 3; BSVI paper, Appendix D)."""

from dataclasses import dataclass

from keras import ops

from layers.dense import HeDense
from layers.gaussian_head import GaussianHead
from layers.pixelcnn import CONDITIONINGS, VERTICAL_SHIFTS, GatedPixelCNN
from layers.registry import option
from layers.residual import resnet_encoder
from zoo.architectures.vae import VAE
from zoo.autoregressive import SAMPLERS, AutoregressiveDecoder
from zoo.base import ARCHITECTURES, ModelConfig


@dataclass
class PixelVAEConfig(ModelConfig):
    latent_dim: int = option(32, minimum=1)
    """Size of z (BSVI: 32 for Omniglot and FashionMNIST, 64 for SVHN)."""
    encoder_channels: int = option(64, minimum=1)
    """Width of the three residual blocks of q(z | x)."""
    decoder_channels: int = option(32, minimum=1)
    """Width of every gated PixelCNN block (a multiple of the image's channels)."""
    kernel_sizes: list[int] = option([9, 9, 9, 7, 7, 7, 5, 5, 5, 3, 3, 3])
    """One odd kernel size per gated block (SA-VAE: 12 blocks)."""
    z_maps: int = option(4, minimum=1)
    """Image-sized feature maps that z is mapped to, linearly."""
    conditioning: str = option("input", choices=CONDITIONINGS)
    """input: the z-maps are concatenated to the image before the mask-A layer (SA-VAE code; pixel (0, 0) ignores z) | every_layer: added to every block (Conditional PixelCNN)."""
    vertical_shift: str = option("link", choices=VERTICAL_SHIFTS)
    """link: the vertical stack reaches the horizontal one shifted one row down (Conditional PixelCNN: no blind spot) | every_layer: shifted in every block (SA-VAE code: one row of reach lost per block)."""
    sampler: str = option("window", choices=SAMPLERS)
    """window: each sampling step runs only the rows an output can see (exact; the full image when the receptive field covers it) | full: the whole image every step."""

    def __post_init__(self):
        if not self.kernel_sizes or any(k < 1 or k % 2 == 0 for k in self.kernel_sizes):
            raise ValueError(f"kernel_sizes: expected a non-empty list of odd sizes >= 1, got {self.kernel_sizes}")


@ARCHITECTURES.register("pixel_vae", PixelVAEConfig)
class PixelVAE(AutoregressiveDecoder, VAE):
    """q(z | x): 3 x (residual block, 2x2 stride-2 conv) -> (mean, log_var); p(x | z): z -> `z_maps` linear
    image-sized maps -> gated PixelCNN -> the likelihood's colour-masked 1x1 head.

    `hidden_units` is not used (the widths are `encoder_channels` and `decoder_channels`)."""

    tiny_options = {"encoder_channels": 4, "decoder_channels": 4, "kernel_sizes": [3, 3], "z_maps": 2}

    def __init__(self, image_shape, latent_dim, likelihood, prior, encoder_channels=64, decoder_channels=32,
                 kernel_sizes=(9, 9, 9, 7, 7, 7, 5, 5, 5, 3, 3, 3), z_maps=4, conditioning="input",
                 vertical_shift="link", sampler="window", **kwargs):
        self.encoder_channels = encoder_channels
        self.decoder_channels = decoder_channels
        self.kernel_sizes = [int(k) for k in kernel_sizes]
        self.z_maps = z_maps
        self.conditioning = conditioning
        self.vertical_shift = vertical_shift
        self.sampler = sampler
        super().__init__(image_shape, latent_dim, likelihood, prior, **kwargs)

    def build_networks(self):
        height, width, channels = self.image_shape
        self.encoder_net = resnet_encoder(self.encoder_channels, 3, name="encoder_net")
        self.encoder_head = GaussianHead(self.latent_dim, name="encoder_head")
        self.z_map_net = HeDense(height * width * self.z_maps, name="z_map_net")
        self.pixel_trunk = GatedPixelCNN(channels, self.decoder_channels, self.kernel_sizes, self.conditioning,
                                         self.vertical_shift, name="pixel_trunk")
        self.pixel_trunk.build((None, height, width, channels + self.z_maps))

    def conditioning_maps(self, z):
        height, width, _ = self.image_shape
        return ops.reshape(self.z_map_net(z), (-1, height, width, self.z_maps))

    def conditional_log_prob(self, x, z):
        return self.pixel_log_prob(x, self.conditioning_maps(z))

    def log_px_samples(self, x, z, num_samples):
        return self.pixel_log_prob_samples(x, self.conditioning_maps(z), num_samples)

    def decode(self, z, seed=None):
        return self.pixel_sample(self.conditioning_maps(z), seed=seed)
