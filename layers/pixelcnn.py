"""PixelCNN trunks: features at pixel (i, j) that depend on the image only before (i, j) in raster (and colour)
order, plus conditioning maps computed from the latents (pixelcnn-decoders.md, sections 1-3).

Both trunks take one tensor, the image and its conditioning maps concatenated on the channel axis
([x (C channels), maps]), and return feature maps for the likelihood's per-pixel head. `conditioning` says
where the maps enter:

* "input" (VampPrior and SA-VAE code): concatenated to the image before the first, mask-A layer, so output
  (i, j) sees the maps only strictly before (i, j), and pixel (0, 0) ignores z;
* "every_layer" (Conditional PixelCNN, van den Oord et al. 2016, section 2.3): a 1x1 convolution of the
  maps is added to every layer's pre-activation; the maps depend on z only, so they need no mask.

`rows_above` is how many rows above its own one an output can see; the windowed sampler uses it.
"""

import keras
from keras import ops

from layers.initializers import torch_default_bias, torch_default_kernel
from layers.masked_conv import MaskedConv2D, causal_mask

CONDITIONINGS = ("input", "every_layer")
VERTICAL_SHIFTS = ("link", "every_layer")


def _conv(filters, kernel_size, fan_in, name=None, use_bias=True):
    return keras.layers.Conv2D(filters, kernel_size, padding="valid", use_bias=use_bias, name=name,
                               kernel_initializer=torch_default_kernel(), bias_initializer=torch_default_bias(fan_in))


def _check(conditioning, image_channels, cond_channels):
    if conditioning not in CONDITIONINGS:
        raise ValueError(f"conditioning: '{conditioning}' is not one of {list(CONDITIONINGS)}")
    if cond_channels < 1:
        raise ValueError(f"a PixelCNN trunk needs conditioning maps after the {image_channels} image channels")


def shift_down(x):
    """Move every row one down (row 0 becomes zeros): features of row i - 1 at row i."""
    return ops.pad(x, [[0, 0], [1, 0], [0, 0], [0, 0]])[:, :-1]


def gate(pre):
    """tanh(a) * sigmoid(b) for pre = [a, b] on the channel axis (Conditional PixelCNN, Eq. 2)."""
    half = pre.shape[-1] // 2
    return ops.tanh(pre[..., :half]) * ops.sigmoid(pre[..., half:])


@keras.saving.register_keras_serializable(package="vae_zoo")
class PixelCNN(keras.layers.Layer):
    """The VampPrior code's PixelCNN (`PixelHVAE_2level`): `depth` masked k x k convolutions with ReLU, the
    first with mask A. No gating and one stack, so the blind spot of stacked masked convolutions is there.

    Args:
        image_channels: C; the first C input channels are the image, the rest the conditioning maps.
        depth, channels, kernel_size: the stack (reference: 8, 64, 3).
        conditioning: "input" or "every_layer" (module docstring).
    """

    def __init__(self, image_channels, depth=8, channels=64, kernel_size=3, conditioning="input", **kwargs):
        super().__init__(**kwargs)
        self.image_channels = image_channels
        self.depth = depth
        self.channels = channels
        self.kernel_size = kernel_size
        self.conditioning = conditioning

    @property
    def rows_above(self):
        return self.depth * (self.kernel_size // 2)

    def build(self, input_shape):
        c = self.image_channels
        cond_channels = input_shape[-1] - c
        _check(self.conditioning, c, cond_channels)
        first_in = input_shape[-1] if self.conditioning == "input" else c
        self.convs = []
        for i in range(self.depth):
            conv = MaskedConv2D(self.channels, self.kernel_size, "A" if i == 0 else "B", color_channels=c,
                                name=f"masked_conv_{i}")
            conv.build((*input_shape[:-1], first_in if i == 0 else self.channels))
            self.convs.append(conv)
        self.cond_projections = []
        if self.conditioning == "every_layer":
            for i in range(self.depth):
                projection = _conv(self.channels, 1, cond_channels, name=f"cond_{i}", use_bias=False)
                projection.build((*input_shape[:-1], cond_channels))
                self.cond_projections.append(projection)

    def call(self, inputs):
        x, cond = inputs[..., : self.image_channels], inputs[..., self.image_channels:]
        h = inputs if self.conditioning == "input" else x
        for i, conv in enumerate(self.convs):
            pre = conv(h)
            if self.cond_projections:
                pre = pre + self.cond_projections[i](cond)
            h = ops.relu(pre)
        return h

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], self.channels)

    def get_config(self):
        return {**super().get_config(), "image_channels": self.image_channels, "depth": self.depth,
                "channels": self.channels, "kernel_size": self.kernel_size, "conditioning": self.conditioning}


@keras.saving.register_keras_serializable(package="vae_zoo")
class GatedPixelCNNBlock(keras.layers.Layer):
    """One gated layer with a vertical and a horizontal stack (Conditional PixelCNN, section 2.2), no blind spot.

    Vertical: a (k//2 + 1) x k convolution over rows i - k//2 .. i. Horizontal: a 1 x (k//2 + 1) convolution
    over columns j - k//2 .. j of row i, colour-masked at the current pixel (mask A in the first block). The
    vertical stack feeds the horizontal one through a 1x1 convolution of its pre-gate features shifted one row
    down; `vertical_shift: every_layer` (SA-VAE code) shifts the vertical output itself in every block, which
    keeps causality but loses one row of reach per block. The horizontal stack ends in a colour-masked 1x1
    convolution and (after the first block) a residual connection.

    Args:
        channels: d, the width of both stacks (a multiple of color_channels).
        kernel_size: k, odd.
        first: the first block (mask A, no residual).
        color_channels: C of the image.
        vertical_shift: "link" (van den Oord et al.) or "every_layer" (SA-VAE code).
        conditioned: add 1x1 convolutions of conditioning maps (conditioning: every_layer).
    """

    def __init__(self, channels, kernel_size, first=False, color_channels=1, vertical_shift="link",
                 conditioned=False, **kwargs):
        super().__init__(**kwargs)
        if vertical_shift not in VERTICAL_SHIFTS:
            raise ValueError(f"vertical_shift: '{vertical_shift}' is not one of {list(VERTICAL_SHIFTS)}")
        self.channels = channels
        self.kernel_size = kernel_size
        self.first = first
        self.color_channels = color_channels
        self.vertical_shift = vertical_shift
        self.conditioned = conditioned

    def build(self, v_shape, h_shape=None, cond_shape=None):
        h_shape = v_shape if h_shape is None else h_shape
        d, k, p = self.channels, self.kernel_size, self.kernel_size // 2
        v_in, h_in = v_shape[-1], h_shape[-1]
        spatial = v_shape[:-1]
        self.vertical = _conv(2 * d, (p + 1, k), (p + 1) * k * v_in, name="vertical")
        # built on the padded input `call` gives it (p rows above, p columns each side): a kernel taller or
        # wider than the image is valid there, not on the unpadded shape
        padded = [None if n is None else n + pad for n, pad in zip(spatial[1:], (p, 2 * p))]
        self.vertical.build((spatial[0], *padded, v_in))
        self.link = _conv(2 * d, 1, 2 * d, name="link")
        self.link.build((*spatial, 2 * d))
        self.horizontal_kernel = self.add_weight(name="horizontal_kernel", shape=(1, p + 1, h_in, 2 * d),
                                                 initializer=torch_default_kernel())
        self.horizontal_bias = self.add_weight(name="horizontal_bias", shape=(2 * d,),
                                               initializer=torch_default_bias((p + 1) * h_in))
        self.horizontal_mask = causal_mask(1, p + 1, h_in, 2 * d, "A" if self.first else "B",
                                           self.color_channels, centre_row=0, centre_col=p)
        self.output_conv = MaskedConv2D(d, 1, "B", color_channels=self.color_channels, name="output")
        self.output_conv.build((*spatial, d))
        if self.conditioned:
            self.cond_vertical = _conv(2 * d, 1, cond_shape[-1], name="cond_vertical", use_bias=False)
            self.cond_horizontal = _conv(2 * d, 1, cond_shape[-1], name="cond_horizontal", use_bias=False)
            self.cond_vertical.build(cond_shape)
            self.cond_horizontal.build(cond_shape)

    def call(self, v, h, cond=None):
        k, p = self.kernel_size, self.kernel_size // 2
        v_pre = self.vertical(ops.pad(v, [[0, 0], [p, 0], [p, p], [0, 0]]))
        if self.vertical_shift == "every_layer":
            v_pre = shift_down(v_pre)
            link_in = v_pre
        else:
            link_in = shift_down(v_pre)
        h_pre = ops.conv(ops.pad(h, [[0, 0], [0, 0], [p, 0], [0, 0]]), self.horizontal_kernel * self.horizontal_mask,
                         padding="valid") + self.horizontal_bias
        h_pre = h_pre + self.link(link_in)
        if self.conditioned:
            v_pre = v_pre + self.cond_vertical(cond)
            h_pre = h_pre + self.cond_horizontal(cond)
        h_out = self.output_conv(gate(h_pre))
        if not self.first:
            h_out = h_out + h
        return gate(v_pre), h_out

    def get_config(self):
        return {**super().get_config(), "channels": self.channels, "kernel_size": self.kernel_size,
                "first": self.first, "color_channels": self.color_channels,
                "vertical_shift": self.vertical_shift, "conditioned": self.conditioned}


@keras.saving.register_keras_serializable(package="vae_zoo")
class GatedPixelCNN(keras.layers.Layer):
    """The SA-VAE / BSVI decoder trunk: gated two-stack blocks with per-block kernel sizes
    (reference: 12 blocks of width 32, kernels 9,9,9,7,7,7,5,5,5,3,3,3); returns the horizontal stack.

    Args:
        image_channels: C; the first C input channels are the image, the rest the conditioning maps.
        channels: width of every block.
        kernel_sizes: one odd kernel size per block.
        conditioning: "input" or "every_layer" (module docstring).
        vertical_shift: "link" or "every_layer" (`GatedPixelCNNBlock`).
    """

    def __init__(self, image_channels, channels=32, kernel_sizes=(9, 9, 9, 7, 7, 7, 5, 5, 5, 3, 3, 3),
                 conditioning="input", vertical_shift="link", **kwargs):
        super().__init__(**kwargs)
        self.image_channels = image_channels
        self.channels = channels
        self.kernel_sizes = [int(k) for k in kernel_sizes]
        self.conditioning = conditioning
        self.vertical_shift = vertical_shift

    @property
    def rows_above(self):
        reach = sum(k // 2 for k in self.kernel_sizes)
        return reach + (len(self.kernel_sizes) if self.vertical_shift == "every_layer" else 1)

    def build(self, input_shape):
        c = self.image_channels
        cond_channels = input_shape[-1] - c
        _check(self.conditioning, c, cond_channels)
        first_in = input_shape[-1] if self.conditioning == "input" else c
        spatial = tuple(input_shape[:-1])
        cond_shape = (*spatial, cond_channels)
        self.blocks = []
        for i, k in enumerate(self.kernel_sizes):
            block = GatedPixelCNNBlock(self.channels, k, first=i == 0, color_channels=c,
                                       vertical_shift=self.vertical_shift,
                                       conditioned=self.conditioning == "every_layer", name=f"gated_block_{i}")
            width = first_in if i == 0 else self.channels
            block.build((*spatial, width), (*spatial, width), cond_shape)
            self.blocks.append(block)

    def call(self, inputs):
        x, cond = inputs[..., : self.image_channels], inputs[..., self.image_channels:]
        v = h = inputs if self.conditioning == "input" else x
        for block in self.blocks:
            v, h = block(v, h, cond)
        return h

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], self.channels)

    def get_config(self):
        return {**super().get_config(), "image_channels": self.image_channels, "channels": self.channels,
                "kernel_sizes": self.kernel_sizes, "conditioning": self.conditioning,
                "vertical_shift": self.vertical_shift}
