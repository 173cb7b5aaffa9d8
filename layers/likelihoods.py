"""Decoder likelihoods p(x | z): each is the decoder's output head plus its log-density.

A likelihood maps decoder features to distribution parameters (`call`), scores images under them
(`log_prob`, one value per image), and gives the mean image (`mean`). Dense heads read flat features,
conv heads read feature maps with a 1x1 convolution, as in the reference ConvHVAE.
"""

import math

import keras
from keras import ops

from layers.dense import HeDense
from layers.distributions import log_bernoulli_logits, log_discretized_logistic, log_normal_diag
from layers.initializers import torch_default_bias, torch_default_kernel

MEAN_CLAMP = (1.0 / 512.0, 1.0 - 1.0 / 512.0)


class Likelihood(keras.layers.Layer):
    """Base class: `parameters` names the per-pixel tensors the head produces.

    Args:
        image_shape: (H, W, C) of the data.
        head: "dense" (flat features in) or "conv" (feature maps in, 1x1 convolution).
    """

    parameters = ("mean",)
    is_discrete = False

    def __init__(self, image_shape, head="dense", **kwargs):
        super().__init__(**kwargs)
        self.image_shape = tuple(image_shape)
        self.head = head
        self.event_size = math.prod(self.image_shape)

    def build(self, input_shape):
        if self.head == "dense":
            self.heads = [HeDense(self.event_size, name=f"{p}_head") for p in self.parameters]
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

    def gaussian_log_variance(self):
        """log of the pixel variance when log p(x|z) is Gaussian in x (None otherwise)."""
        return None

    def log_normalizer_offset(self):
        """Constant to add to `log_prob` to obtain a normalised log-density (0 unless stated)."""
        return 0.0

    def get_config(self):
        return {**super().get_config(), "image_shape": list(self.image_shape), "head": self.head}


@keras.saving.register_keras_serializable(package="vae_zoo")
class Bernoulli(Likelihood):
    """Bernoulli pixels parameterised by logits (stable; the reference clamps sigmoid means to 1e-5)."""

    parameters = ("logits",)
    is_discrete = True

    def log_prob(self, x, params):
        return log_bernoulli_logits(x, params[0])

    def mean(self, params):
        return ops.sigmoid(params[0])


@keras.saving.register_keras_serializable(package="vae_zoo")
class DiscretizedLogistic(Likelihood):
    """256-bin discretised logistic (VampPrior code): sigmoid-then-clamped mean, log-scale in [-4.5, 0]."""

    parameters = ("mean", "log_scale")
    is_discrete = True

    def transform(self, mean, log_scale):
        return (ops.clip(ops.sigmoid(mean), *MEAN_CLAMP), ops.clip(log_scale, -4.5, 0.0))

    def log_prob(self, x, params):
        return log_discretized_logistic(x, params[0], params[1])


@keras.saving.register_keras_serializable(package="vae_zoo")
class Gaussian(Likelihood):
    """Gaussian pixels with a linear, clamped mean (Exemplar/ByPE code) and a fixed or learned variance.

    Args:
        variance: a fixed variance, or None to learn one shared log-variance (initialised at 0).
    """

    def __init__(self, image_shape, head="dense", variance=None, **kwargs):
        super().__init__(image_shape, head, **kwargs)
        self.variance = variance

    def build(self, input_shape):
        super().build(input_shape)
        if self.variance is None:
            self.log_variance = self.add_weight(name="log_variance", shape=(), initializer="zeros")

    def transform(self, mean):
        return (ops.clip(mean, *MEAN_CLAMP),)

    def _log_var(self):
        return self.log_variance if self.variance is None else ops.convert_to_tensor(math.log(self.variance))

    def log_prob(self, x, params):
        return log_normal_diag(x, params[0], self._log_var(), event_ndims=3)  # the scalar broadcasts

    def gaussian_log_variance(self):
        return self._log_var()

    def get_config(self):
        return {**super().get_config(), "variance": self.variance}


@keras.saving.register_keras_serializable(package="vae_zoo")
class SquaredError(Likelihood):
    """ByPE's reconstruction term: log p(x|z) := -sum_d (x_d - mean_d)^2 (sum, no 1/2, no variance).

    This is a Gaussian with variance 1/2 *without* its normalising constant: the normalised log-density
    is `log_prob - (D/2) log(pi)` (about -448.7 nats for D = 784). Evaluation reports both numbers.
    """

    def transform(self, mean):
        return (ops.clip(mean, *MEAN_CLAMP),)

    def log_prob(self, x, params):
        return -ops.sum(ops.square(x - params[0]), axis=(-3, -2, -1))

    def gaussian_log_variance(self):
        return ops.convert_to_tensor(math.log(0.5))

    def log_normalizer_offset(self):
        return -0.5 * self.event_size * math.log(math.pi)


LIKELIHOODS = {
    "bernoulli": Bernoulli,
    "discretized_logistic": DiscretizedLogistic,
    "gaussian": Gaussian,
    "squared_error": SquaredError,
}


def build_likelihood(name, image_shape, head="dense", gaussian_variance=None):
    """Create the likelihood named in the config (`model.likelihood`)."""
    cls = LIKELIHOODS[name]
    if cls is Gaussian:
        return Gaussian(image_shape, head, variance=gaussian_variance, name="likelihood")
    return cls(image_shape, head, name="likelihood")
