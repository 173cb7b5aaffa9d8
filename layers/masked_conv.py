"""Masked convolutions: the causal building block of PixelCNN decoders (van den Oord et al. 2016).

The kernel is multiplied by a constant mask in `call`, so output (i, j) sees only inputs before (i, j) in
raster order: rows above, and columns to the left in the same row. At the centre tap, colour channels are
ordered too (Pixel RNN, section 3.4): channel c of an input and of an output belongs to group c mod C, and
mask "A" (first layer) lets group g see the current pixel's groups < g, mask "B" (later layers) groups <= g.
With C = 1, mask A drops the centre and mask B keeps it.
"""

import keras
import numpy as np
from keras import ops

from layers.initializers import torch_default_bias, torch_default_kernel

MASK_TYPES = ("A", "B")


def causal_mask(kernel_height, kernel_width, in_channels, out_channels, mask_type, color_channels=1,
                centre_row=None, centre_col=None):
    """The (kh, kw, in, out) 0/1 mask; the centre tap is (centre_row, centre_col), by default the middle."""
    if mask_type not in MASK_TYPES:
        raise ValueError(f"mask_type: '{mask_type}' is not one of {list(MASK_TYPES)}")
    row = kernel_height // 2 if centre_row is None else centre_row
    col = kernel_width // 2 if centre_col is None else centre_col
    mask = np.zeros((kernel_height, kernel_width, in_channels, out_channels), dtype="float32")
    mask[:row] = 1.0
    mask[row, :col] = 1.0
    in_group = np.arange(in_channels)[:, None] % color_channels
    out_group = np.arange(out_channels)[None, :] % color_channels
    allowed = in_group < out_group if mask_type == "A" else in_group <= out_group
    mask[row, col] = allowed.astype("float32")
    return mask


@keras.saving.register_keras_serializable(package="vae_zoo")
class MaskedConv2D(keras.layers.Layer):
    """Stride-1 convolution whose kernel is masked to raster order; zero padding keeps the image size.

    Args:
        filters: output channels (a multiple of `color_channels`, so every colour group has features).
        kernel_size: int or (height, width), odd.
        mask_type: "A" (the first layer: the current pixel's own value is hidden) or "B".
        color_channels: C of the image; channel groups are c mod C.
        use_bias: add a bias (PyTorch-default initialised like every conv of the zoo).
    """

    def __init__(self, filters, kernel_size, mask_type="B", color_channels=1, use_bias=True, **kwargs):
        super().__init__(**kwargs)
        size = (kernel_size, kernel_size) if isinstance(kernel_size, int) else tuple(kernel_size)
        if size[0] % 2 == 0 or size[1] % 2 == 0:
            raise ValueError(f"MaskedConv2D kernel_size must be odd, got {size}")
        if filters % color_channels:
            raise ValueError(f"MaskedConv2D filters ({filters}) must be a multiple of color_channels ({color_channels})")
        if mask_type not in MASK_TYPES:
            raise ValueError(f"MaskedConv2D mask_type: '{mask_type}' is not one of {list(MASK_TYPES)}")
        self.filters = filters
        self.kernel_size = size
        self.mask_type = mask_type
        self.color_channels = color_channels
        self.use_bias = use_bias

    def build(self, input_shape):
        in_channels = input_shape[-1]
        kh, kw = self.kernel_size
        self.kernel = self.add_weight(name="kernel", shape=(kh, kw, in_channels, self.filters),
                                      initializer=torch_default_kernel())
        self.bias = (self.add_weight(name="bias", shape=(self.filters,), initializer=torch_default_bias(kh * kw * in_channels))
                     if self.use_bias else None)
        self.mask = causal_mask(kh, kw, in_channels, self.filters, self.mask_type, self.color_channels)

    def call(self, x):
        kh, kw = self.kernel_size
        if kh > 1 or kw > 1:
            x = ops.pad(x, [[0, 0], [kh // 2, kh // 2], [kw // 2, kw // 2], [0, 0]])
        y = ops.conv(x, self.kernel * self.mask, padding="valid")
        return y if self.bias is None else y + self.bias

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], self.filters)

    def get_config(self):
        return {**super().get_config(), "filters": self.filters, "kernel_size": list(self.kernel_size),
                "mask_type": self.mask_type, "color_channels": self.color_channels, "use_bias": self.use_bias}
