"""The VAEPP code's pre-activation ResNet networks (vaepp-svi-penalties.md, section 1.6), channels last.

The blocks are tfsnippet's `resnet_conv2d_block` / `resnet_deconv2d_block` as the code calls them: a leaky
ReLU (slope 0.2, `tf.nn.leaky_relu`'s default) before each of the two convolutions, no normalisation (the
code passes `normalizer_fn = None` everywhere), biases on, glorot-normal kernels and zero biases
(tfsnippet's defaults). One topology per network of the code: mnist (`dmm_bernouli.py`), cifar10
(`dmm_cifar10.py`) and celeba (`dmm_for_sampling.py`), each as an encoder trunk, a decoder trunk and a critic.
"""

import math

import keras
from keras import ops

NETWORKS = ("mnist", "cifar10", "celeba")
LEAKY_SLOPE = 0.2
KERNEL_INIT = "glorot_normal"

# (filters, strides, kernel_size) of each block, in the code's order
ENCODER_BLOCKS = {
    "mnist": [(16, 1, 3), (32, 2, 3), (64, 2, 3)],
    "cifar10": [(96, 1, 5), (96, 1, 3), (192, 2, 3), (192, 1, 3), (192, 2, 3), (192, 1, 3), (192, 1, 3)],
    "celeba": [(32, 2, 5), (32, 1, 3), (64, 2, 3), (64, 1, 3), (128, 2, 3)],
}
DECODER_BLOCKS = {
    "mnist": [(64, 2, 3), (32, 2, 3), (16, 1, 3)],
    "cifar10": [(192, 1, 3)] * 3 + [(192, 2, 3), (192, 1, 3), (192, 1, 3), (96, 2, 3), (96, 1, 5)],
    "celeba": [(64, 2, 3), (64, 1, 3), (32, 2, 3), (32, 1, 3), (32, 2, 5)],
}
DECODER_FIRST_CHANNELS = {"mnist": 64, "cifar10": 16, "celeba": 64}  # channels of the map z is mapped to
CRITIC_BLOCKS = {
    "mnist": [(16, 1, 3), (32, 2, 3), (64, 2, 3)],
    "cifar10": [(16, 1, 3), (32, 1, 3), (64, 1, 3), (128, 2, 3), (256, 2, 3), (256, 2, 3)],
    "celeba": [(32, 2, 3), (32, 1, 3), (64, 2, 3), (64, 1, 3), (64, 2, 3)],
}
CRITIC_UNITS = 64  # the linear dense layer before the score


def _leaky(x):
    return ops.leaky_relu(x, LEAKY_SLOPE)


def _conv(filters, kernel_size, strides, transpose, name):
    cls = keras.layers.Conv2DTranspose if transpose else keras.layers.Conv2D
    return cls(filters, kernel_size, strides=strides, padding="same", kernel_initializer=KERNEL_INIT, name=name)


def _resized(size, strides, transpose):
    """Spatial size after a 'same' convolution (ceil(n / s)) or transposed convolution (n s)."""
    if size is None:
        return None
    return size * strides if transpose else -(-size // strides)


@keras.saving.register_keras_serializable(package="vae_zoo")
class PreActResidualBlock(keras.layers.Layer):
    """act -> conv(kernel_size, input channels) -> act -> conv(kernel_size, `strides`, `filters`), plus the
    shortcut: a 1x1 convolution with the stride when the channels or the stride change, else the identity.

    Wide-ResNet pre-activation as in tfsnippet's `resnet_conv2d_block` (it resizes at the exit conv).

    Args:
        filters: output channels.
        strides: stride of the resizing convolution and of the shortcut.
        kernel_size: size of both residual convolutions.
    """

    transpose = False  # the deconv block: transposed convolutions, resized in the first one

    def __init__(self, filters, strides=1, kernel_size=3, **kwargs):
        super().__init__(**kwargs)
        self.filters = int(filters)
        self.strides = int(strides)
        self.kernel_size = int(kernel_size)

    def build(self, input_shape):
        in_channels = input_shape[-1]
        if self.transpose:  # tfsnippet's resize_at_exit=False: the first conv resizes
            first, second = (self.filters, self.strides), (self.filters, 1)
        else:  # resize_at_exit=True: the first conv keeps the input's channels
            first, second = (in_channels, 1), (self.filters, self.strides)
        self.conv = _conv(first[0], self.kernel_size, first[1], self.transpose, name="conv")
        self.conv.build(input_shape)
        self.conv_1 = _conv(second[0], self.kernel_size, second[1], self.transpose, name="conv_1")
        self.conv_1.build(self.conv.compute_output_shape(input_shape))
        self.shortcut = None
        if self.strides != 1 or in_channels != self.filters:
            self.shortcut = _conv(self.filters, 1, self.strides, self.transpose, name="shortcut")
            self.shortcut.build(input_shape)

    def call(self, x):
        residual = self.conv_1(_leaky(self.conv(_leaky(x))))
        shortcut = x if self.shortcut is None else self.shortcut(x)
        return residual + shortcut

    def compute_output_shape(self, input_shape):
        batch, rows, cols, _ = input_shape
        return (batch, _resized(rows, self.strides, self.transpose), _resized(cols, self.strides, self.transpose),
                self.filters)

    def get_config(self):
        return {**super().get_config(), "filters": self.filters, "strides": self.strides,
                "kernel_size": self.kernel_size}


@keras.saving.register_keras_serializable(package="vae_zoo")
class PreActResidualDeconvBlock(PreActResidualBlock):
    """The decoder's block (tfsnippet's `resnet_deconv2d_block`): act -> transposed conv(kernel_size, `strides`,
    `filters`) -> act -> transposed conv(kernel_size, `filters`), plus a 1x1 transposed-conv shortcut with
    the stride when the shape changes. 'same' padding: the output is `strides` times the input's size."""

    transpose = True


@keras.saving.register_keras_serializable(package="vae_zoo")
class LogStdGaussianHead(keras.layers.Layer):
    """features -> (mean, log_var) as the VAEPP code's encoder: two linear dense heads with zero kernels (q
    starts at N(bias, exp(bias)) for every image), log_var = 2 max(log sigma, `log_std_min`).

    The code clips log sigma from below only (-5 on MNIST / Fashion / Omniglot, -3 on static MNIST, CIFAR-10
    and CelebA), so there is no upper clip here either."""

    def __init__(self, units, log_std_min=-5.0, **kwargs):
        super().__init__(**kwargs)
        self.units = int(units)
        self.log_std_min = float(log_std_min)

    def build(self, input_shape):
        self.mean_head = keras.layers.Dense(self.units, kernel_initializer="zeros", name="mean")
        self.log_std_head = keras.layers.Dense(self.units, kernel_initializer="zeros", name="log_std")
        self.mean_head.build(input_shape)
        self.log_std_head.build(input_shape)

    def call(self, h):
        return self.mean_head(h), 2.0 * ops.maximum(self.log_std_head(h), self.log_std_min)

    def get_config(self):
        return {**super().get_config(), "units": self.units, "log_std_min": self.log_std_min}


def scaled(channels, width):
    """Channels of a block at the `width` multiplier (at least 1)."""
    return max(1, round(channels * width))


def _blocks(table, width, block):
    return [block(scaled(filters, width), strides=strides, kernel_size=kernel) for filters, strides, kernel in table]


def _check(network):
    if network not in NETWORKS:
        raise ValueError(f"unknown ResNet network {network!r}: choose one of {', '.join(NETWORKS)}")


def resnet_encoder_trunk(network, width=1.0, name="encoder_net"):
    """image -> the flat features the mean and log sigma heads read ('same' padding: any image size)."""
    _check(network)
    return keras.Sequential(_blocks(ENCODER_BLOCKS[network], width, PreActResidualBlock) + [keras.layers.Flatten()],
                            name=name)


def resnet_decoder_trunk(network, image_shape, width=1.0, name="decoder_net"):
    """z -> feature maps at the image's resolution (the likelihood's 1x1 head follows): a linear dense layer
    to a ceil(H / 2^k) x ceil(W / 2^k) map, k the decoder's stride-2 blocks, the deconv blocks, and a crop of
    the bottom / right rows and columns that overshoot H x W (none when 2^k divides H and W).

    cifar10: the code's latent is the 8x8x16 map itself (1024 values) and has no dense layer; z is a flat
    vector of any size in this project, so a dense layer maps it to that 16-channel map."""
    _check(network)
    rows, cols = image_shape[0], image_shape[1]
    table = DECODER_BLOCKS[network]
    scale = math.prod(strides for _, strides, _ in table)
    first_rows, first_cols = -(-rows // scale), -(-cols // scale)
    channels = scaled(DECODER_FIRST_CHANNELS[network], width)
    layers = [keras.layers.Dense(first_rows * first_cols * channels, kernel_initializer=KERNEL_INIT),
              keras.layers.Reshape((first_rows, first_cols, channels))]
    layers += _blocks(table, width, PreActResidualDeconvBlock)
    crop_rows, crop_cols = first_rows * scale - rows, first_cols * scale - cols
    if crop_rows or crop_cols:
        layers.append(keras.layers.Cropping2D(((0, crop_rows), (0, crop_cols))))
    return keras.Sequential(layers, name=name)


def resnet_critic(network, width=1.0, name="critic"):
    """image -> energy [B, 1]: the critic's blocks -> flatten -> Dense(64, linear: the code gives it no
    activation) -> Dense(1)."""
    _check(network)
    head = [keras.layers.Flatten(), keras.layers.Dense(CRITIC_UNITS, kernel_initializer=KERNEL_INIT),
            keras.layers.Dense(1, kernel_initializer=KERNEL_INIT)]
    return keras.Sequential(_blocks(CRITIC_BLOCKS[network], width, PreActResidualBlock) + head, name=name)
