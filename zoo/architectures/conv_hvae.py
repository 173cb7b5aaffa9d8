"""ConvHVAE: the two-level hierarchical VAE with the reference gated convolutional networks."""

from layers.gated import GatedDense
from zoo.architectures.hvae import HVAE
from zoo.base import ARCHITECTURES, ModelConfig
from zoo.networks import conv_decoder_trunk, conv_encoder_q_z1, conv_encoder_q_z2, conv_feature_size


@ARCHITECTURES.register("conv_hvae", ModelConfig)
class ConvHVAE(HVAE):
    """HVAE with the reference gated conv encoders and a gated conv decoder at full resolution; the
    likelihood's 1x1 convolution reads the decoder's feature maps."""

    likelihood_head = "conv"

    def build_x_networks(self, h):
        self.q_z2_net = conv_encoder_q_z2()
        self.q_z1_x_net = conv_encoder_q_z1()
        self.q_z1_z2_net = GatedDense(conv_feature_size(self.image_shape), name="q_z1_z2_net")
        self.p_x_net = conv_decoder_trunk(self.image_shape)
