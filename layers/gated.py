"""Gated blocks of the VampPrior paper: h = (x W + b) * sigmoid(x V + c).

The value branch is linear (no activation), as in all three reference repositories. Value and gate
are computed by one fused kernel with 2x the output units, then split: the same function and the same
initial distribution as two separate layers, but one matmul / conv instead of two.
"""

import keras
from keras import ops

from layers.initializers import he_normal_untruncated, torch_default_bias, torch_default_kernel


@keras.saving.register_keras_serializable(package="vae_zoo")
class GatedDense(keras.layers.Layer):
    """Fully connected gated layer (VampPrior paper, Eq. 16 with a linear value branch).

    Args:
        units: output width.
    """

    def __init__(self, units, **kwargs):
        super().__init__(**kwargs)
        self.units = units

    def build(self, input_shape):
        fan_in = input_shape[-1]
        self.kernel = self.add_weight(
            name="kernel", shape=(fan_in, 2 * self.units), initializer=he_normal_untruncated()
        )
        self.bias = self.add_weight(name="bias", shape=(2 * self.units,), initializer=torch_default_bias(fan_in))

    def call(self, x):
        h = ops.matmul(x, self.kernel) + self.bias
        return h[..., : self.units] * ops.sigmoid(h[..., self.units :])

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], self.units)

    def get_config(self):
        return {**super().get_config(), "units": self.units}


@keras.saving.register_keras_serializable(package="vae_zoo")
class GatedConv2D(keras.layers.Layer):
    """Gated 2-D convolution with PyTorch-style symmetric zero padding (channels last).

    Keras's `padding="same"` pads stride-2 convolutions asymmetrically; the reference pads `padding`
    pixels on every side, so this layer pads explicitly and convolves with `padding="valid"`.

    Args:
        filters: output channels.
        kernel_size: square kernel size.
        strides: stride.
        padding: zero pixels added on each side.
    """

    def __init__(self, filters, kernel_size, strides=1, padding=0, **kwargs):
        super().__init__(**kwargs)
        self.filters = filters
        self.kernel_size = kernel_size
        self.strides = strides
        self.padding = padding

    def build(self, input_shape):
        fan_in = input_shape[-1] * self.kernel_size * self.kernel_size
        self.conv = keras.layers.Conv2D(
            2 * self.filters,
            self.kernel_size,
            strides=self.strides,
            padding="valid",
            kernel_initializer=torch_default_kernel(),
            bias_initializer=torch_default_bias(fan_in),
        )
        padded = list(input_shape)
        if self.padding:
            padded[1] = None if padded[1] is None else padded[1] + 2 * self.padding
            padded[2] = None if padded[2] is None else padded[2] + 2 * self.padding
        self.conv.build(tuple(padded))

    def call(self, x):
        if self.padding:
            p = self.padding
            x = ops.pad(x, [[0, 0], [p, p], [p, p], [0, 0]])
        h = self.conv(x)
        return h[..., : self.filters] * ops.sigmoid(h[..., self.filters :])

    def compute_output_shape(self, input_shape):
        def out(n):
            return None if n is None else (n + 2 * self.padding - self.kernel_size) // self.strides + 1

        return (input_shape[0], out(input_shape[1]), out(input_shape[2]), self.filters)

    def get_config(self):
        return {
            **super().get_config(),
            "filters": self.filters,
            "kernel_size": self.kernel_size,
            "strides": self.strides,
            "padding": self.padding,
        }
