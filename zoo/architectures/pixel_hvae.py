"""PixelHVAE: the ConvHVAE's encoders and z1 / z2 structure with a PixelCNN decoder (VampPrior paper,
section 5; official `PixelHVAE_2level`, pixelcnn-decoders.md section 2)."""

from dataclasses import dataclass

from keras import ops

from layers.gated import GatedDense
from layers.pixelcnn import CONDITIONINGS, PixelCNN
from layers.registry import option
from zoo.architectures.conv_hvae import ConvHVAE
from zoo.autoregressive import SAMPLERS, AutoregressiveDecoder
from zoo.base import ARCHITECTURES, ModelConfig
from zoo.networks import conv_encoder_q_z1, conv_encoder_q_z2, conv_feature_size


@dataclass
class PixelHVAEConfig(ModelConfig):
    decoder_depth: int = option(8, minimum=1)
    """Masked convolutions of the PixelCNN (reference: 8, the first with mask A)."""
    decoder_channels: int = option(64, minimum=1)
    """Their width (a multiple of the image's channels)."""
    kernel_size: int = option(3, minimum=1)
    """Their odd kernel size."""
    conditioning: str = option("input", choices=CONDITIONINGS)
    """input: the z1 and z2 maps are concatenated to the image before the mask-A layer (VampPrior code; pixel (0, 0) ignores z) | every_layer: added to every layer (Conditional PixelCNN)."""
    sampler: str = option("window", choices=SAMPLERS)
    """window: each sampling step runs only the rows an output can see (exact; 9 of 28 rows for the reference) | full: the whole image every step (the reference)."""

    def __post_init__(self):
        if self.kernel_size % 2 == 0:
            raise ValueError(f"kernel_size: expected an odd size, got {self.kernel_size}")


@ARCHITECTURES.register("pixel_hvae", PixelHVAEConfig)
class PixelHVAE(AutoregressiveDecoder, ConvHVAE):
    """ConvHVAE encoders and p(z1 | z2); p(x | z1, z2): z1 and z2 each mapped by a GatedDense to an image-sized
    map, concatenated with x, then `decoder_depth` masked convolutions with ReLU and the likelihood's head.

    The reference follows each convolution with batch normalisation; it is left out (docs/models/pixelcnn.md):
    batch statistics mix every pixel of the batch, future ones included, into each output during training."""

    tiny_options = {"decoder_depth": 2, "decoder_channels": 4}

    def __init__(self, image_shape, latent_dim, likelihood, prior, decoder_depth=8, decoder_channels=64,
                 kernel_size=3, conditioning="input", sampler="window", **kwargs):
        self.decoder_depth = decoder_depth
        self.decoder_channels = decoder_channels
        self.kernel_size = kernel_size
        self.conditioning = conditioning
        self.sampler = sampler
        super().__init__(image_shape, latent_dim, likelihood, prior, **kwargs)

    def build_x_networks(self, h):
        channels = self.image_shape[-1]
        self.q_z2_net = conv_encoder_q_z2()
        self.q_z1_x_net = conv_encoder_q_z1()
        self.q_z1_z2_net = GatedDense(conv_feature_size(self.image_shape), name="q_z1_z2_net")
        self.pixel_trunk = PixelCNN(channels, self.decoder_depth, self.decoder_channels, self.kernel_size,
                                    self.conditioning, name="pixel_trunk")
        self.pixel_trunk.build((None, *self.image_shape[:2], 3 * channels))

    def build_decoder_inputs(self, h):
        size = 1
        for n in self.image_shape:
            size *= n
        self.p_x_z1 = GatedDense(size, name="p_x_z1")
        self.p_x_z2 = GatedDense(size, name="p_x_z2")

    def conditioning_maps(self, z1, z2):
        """[z1 map, z2 map]: 2C channels at image size."""
        return ops.concatenate([ops.reshape(self.p_x_z1(z1), (-1, *self.image_shape)),
                                ops.reshape(self.p_x_z2(z2), (-1, *self.image_shape))], axis=-1)

    def log_px(self, x, z1, z2):
        return self.pixel_log_prob(x, self.conditioning_maps(z1, z2))

    def log_px_samples(self, x, z1, z2, num_samples):
        return self.pixel_log_prob_samples(x, self.conditioning_maps(z1, z2), num_samples)

    def generate(self, z1, z2, seed=None):
        return self.pixel_sample(self.conditioning_maps(z1, z2), seed=seed)
