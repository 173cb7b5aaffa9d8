"""Decoder likelihoods p(x | z): each is the decoder's output head plus its log-density.

A likelihood maps decoder features to distribution parameters (`call`), scores images under them
(`log_prob`, one value per image), and gives the mean image (`mean`). Dense heads read flat features,
conv heads read feature maps with a 1x1 convolution, as in the reference ConvHVAE.
"""

import math

import keras
from keras import ops

from layers.dense import HeDense
from layers.initializers import torch_default_bias, torch_default_kernel
from layers.masked_conv import MaskedConv2D
from layers.registry import Registry, layer_from_config

LIKELIHOODS = Registry("likelihood", package="layers.likelihoods", section="model.likelihood")

MEAN_CLAMP = (1.0 / 512.0, 1.0 - 1.0 / 512.0)


class Likelihood(keras.layers.Layer):
    """Base class: `parameters` names the per-pixel tensors the head produces.

    Args:
        image_shape: (H, W, C) of the data.
        head: "dense" (flat features in), "conv" (feature maps in, 1x1 convolution) or "pixel" (feature maps
            of a PixelCNN in, a 1x1 convolution colour-masked like the trunk, so channel c of a pixel reads
            only the features that do not see that channel).
    """

    parameters = ("mean",)
    is_discrete = False
    needs_binary_data = False  # True: the data must be binarised (config validation checks it)

    def __init__(self, image_shape, head="dense", **kwargs):
        super().__init__(**kwargs)
        self.image_shape = tuple(image_shape)
        self.head = head
        self.event_size = math.prod(self.image_shape)

    def build(self, input_shape):
        if self.head == "dense":
            self.heads = [HeDense(self.event_size, name=f"{p}_head") for p in self.parameters]
        elif self.head == "pixel":
            self.heads = [MaskedConv2D(self.image_shape[-1], 1, "B", color_channels=self.image_shape[-1],
                                       name=f"{p}_head") for p in self.parameters]
        else:
            fan_in = input_shape[-1]
            self.heads = [
                keras.layers.Conv2D(
                    self.image_shape[-1], 1, name=f"{p}_head",
                    kernel_initializer=torch_default_kernel(), bias_initializer=torch_default_bias(fan_in),
                )
                for p in self.parameters
            ]
        for layer in self.heads:
            layer.build(input_shape)

    def call(self, h):
        outputs = []
        for layer in self.heads:
            out = layer(h)
            if self.head == "dense":
                out = ops.reshape(out, (-1, *self.image_shape))
            outputs.append(out)
        return self.transform(*outputs)

    def transform(self, *raw):
        """Map raw head outputs to distribution parameters (a tuple)."""
        return tuple(raw)

    def log_prob(self, x, params):
        raise NotImplementedError("abstract: each likelihood defines its log-density")

    def mean(self, params):
        return params[0]

    @classmethod
    def can_draw_pixels(cls):
        """Whether `sample_from_uniform` is implemented (autoregressive decoders need it)."""
        return cls.sample_from_uniform is not Likelihood.sample_from_uniform

    def sample_from_uniform(self, params, uniform):
        """Draws x ~ p(x | params), one per pixel, as a deterministic function of U(0, 1) noise of the image's
        shape: autoregressive samplers draw the noise once per request and read one pixel of it per step."""
        raise NotImplementedError(f"the {self.registered_name} likelihood cannot draw pixels (autoregressive "
                                  "decoders need it): use bernoulli or discretized_logistic")

    def gaussian_log_variance(self):
        """log of the pixel variance when log p(x|z) is Gaussian in x (None otherwise)."""
        return None

    def log_normalizer_offset(self):
        """Constant to add to `log_prob` to obtain a normalised log-density (0 unless stated)."""
        return 0.0

    def get_config(self):
        return {**super().get_config(), "image_shape": list(self.image_shape), "head": self.head}

    @classmethod
    def from_config(cls, config):
        return layer_from_config(cls, config)
