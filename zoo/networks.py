"""The reference architectures' deterministic networks (official-prior-implementations.md, section 1)."""

import keras

from layers.gated import GatedConv2D, GatedDense


def gated_mlp(units, depth, name):
    """Flatten, then `depth` GatedDense layers of width `units`."""
    return keras.Sequential([keras.layers.Flatten()] + [GatedDense(units) for _ in range(depth)], name=name)


# (filters, kernel, stride, padding) per GatedConv2D; both end in 6 channels at a quarter of the resolution
Q_Z2_CONVS = [(32, 7, 1, 3), (32, 3, 2, 1), (64, 5, 1, 2), (64, 3, 2, 1), (6, 3, 1, 1)]
Q_Z1_CONVS = [(32, 3, 1, 1), (32, 3, 2, 1), (64, 3, 1, 1), (64, 3, 2, 1), (6, 3, 1, 1)]


def gated_conv_encoder(table, name):
    """Gated convolutions from a (filters, kernel, stride, padding) table, then flatten."""
    return keras.Sequential([GatedConv2D(*row) for row in table] + [keras.layers.Flatten()], name=name)


def conv_encoder_q_z2(name="q_z2_net"):
    """ConvHVAE q(z2 | x) trunk: 28x28 -> 6 x 7 x 7 features, flattened (294 for MNIST)."""
    return gated_conv_encoder(Q_Z2_CONVS, name)


def conv_encoder_q_z1(name="q_z1_x_net"):
    """ConvHVAE x-branch of q(z1 | x, z2): all 3x3 kernels, same output size as `conv_encoder_q_z2`."""
    return gated_conv_encoder(Q_Z1_CONVS, name)


def conv_feature_size(image_shape):
    """Flattened size of the conv encoders' output: 6 channels at ceil(ceil(H/2)/2) x ceil(ceil(W/2)/2)."""

    def down(n):
        return (n - 1) // 2 + 1

    height, width = down(down(image_shape[0])), down(down(image_shape[1]))
    return 6 * height * width


def conv_decoder_trunk(image_shape, name="p_x_net"):
    """ConvHVAE p(x | z1, z2) trunk after the joint features: GatedDense to an image-sized map, then four
    3x3 gated convolutions with 64 channels at full resolution (the likelihood's 1x1 conv head follows)."""
    height, width, channels = image_shape
    return keras.Sequential(
        [GatedDense(height * width * channels), keras.layers.Reshape((height, width, channels))]
        + [GatedConv2D(64, 3, 1, 1) for _ in range(4)],
        name=name,
    )
