"""Dense layers: the reference code's initialisation (`HeDense`) and weight normalisation (`WeightNormDense`)."""

import keras
from keras import ops

from layers.initializers import he_normal_untruncated, torch_default_bias


@keras.saving.register_keras_serializable(package="vae_zoo")
class HeDense(keras.layers.Dense):
    """`keras.layers.Dense` with kernel N(0, sqrt(2/fan_in)) and bias U(+-1/sqrt(fan_in)).

    Used for every fully connected output head (means, log-variances, decoder outputs).
    """

    def __init__(self, units, **kwargs):
        kwargs.setdefault("kernel_initializer", he_normal_untruncated())
        super().__init__(units, **kwargs)

    def build(self, input_shape):
        self.bias_initializer = torch_default_bias(input_shape[-1])
        super().build(input_shape)


@keras.saving.register_keras_serializable(package="vae_zoo")
class WeightNormDense(keras.layers.Layer):
    """Dense layer with weight normalisation (Salimans & Kingma 2016): kernel = g v / ||v|| per output unit.

    The direction v and the scale g train separately, which conditions small GAN nets better; g starts at 1
    (unit-norm columns), as tfsnippet's `weight_norm` without data-dependent init (VAEPP's latent GAN).
    """

    def __init__(self, units, activation=None, **kwargs):
        super().__init__(**kwargs)
        self.units = int(units)
        self.activation = keras.activations.get(activation)

    def build(self, input_shape):
        self.direction = self.add_weight(name="kernel", shape=(input_shape[-1], self.units),
                                         initializer="glorot_uniform")
        self.scale = self.add_weight(name="scale", shape=(self.units,), initializer="ones")
        self.bias = self.add_weight(name="bias", shape=(self.units,), initializer="zeros")

    def kernel(self):
        norm = ops.sqrt(ops.sum(ops.square(self.direction), axis=0, keepdims=True))
        return self.direction * (self.scale / ops.maximum(norm, 1e-12))

    def call(self, x):
        return self.activation(ops.matmul(x, self.kernel()) + self.bias)

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], self.units)

    def get_config(self):
        return {**super().get_config(), "units": self.units,
                "activation": keras.activations.serialize(self.activation)}
