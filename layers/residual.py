"""The SA-VAE image encoder's residual block (pixelcnn-decoders.md, section 3), channels last."""

import keras
from keras import ops

from layers.initializers import torch_default_bias, torch_default_kernel


def _conv(filters, kernel_size, fan_in, strides=1, padding="same"):
    return keras.layers.Conv2D(filters, kernel_size, strides=strides, padding=padding,
                               kernel_initializer=torch_default_kernel(), bias_initializer=torch_default_bias(fan_in))


@keras.saving.register_keras_serializable(package="vae_zoo")
class ResidualBlock(keras.layers.Layer):
    """relu(conv3x3(relu(conv3x3(x))) + skip(x)); the skip is a 1x1 projection when the width changes.

    The SA-VAE code puts batch normalisation after each 3x3 convolution; it is left out here, so the encoder
    does not depend on batch statistics (training and evaluation compute the same function).

    Args:
        filters: output channels.
    """

    def __init__(self, filters, **kwargs):
        super().__init__(**kwargs)
        self.filters = filters

    def build(self, input_shape):
        in_channels = input_shape[-1]
        self.conv1 = _conv(self.filters, 3, 9 * in_channels)
        self.conv1.build(input_shape)
        self.conv2 = _conv(self.filters, 3, 9 * self.filters)
        self.conv2.build((*input_shape[:-1], self.filters))
        self.projection = None
        if in_channels != self.filters:
            self.projection = _conv(self.filters, 1, in_channels)
            self.projection.build(input_shape)

    def call(self, x):
        skip = x if self.projection is None else self.projection(x)
        return ops.relu(self.conv2(ops.relu(self.conv1(x))) + skip)

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], self.filters)

    def get_config(self):
        return {**super().get_config(), "filters": self.filters}


def resnet_encoder(filters, depth, name):
    """`depth` x (ResidualBlock, 2x2 stride-2 convolution), then flatten: 28 -> 14 -> 7 -> 4 for depth 3
    ("same" padding keeps the last row and column that the SA-VAE code's 7 -> 3 drops)."""
    stack = []
    for _ in range(depth):
        stack += [ResidualBlock(filters), _conv(filters, 2, 4 * filters, strides=2)]
    return keras.Sequential(stack + [keras.layers.Flatten()], name=name)
