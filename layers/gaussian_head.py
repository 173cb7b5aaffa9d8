"""Mean and clipped log-variance heads of a diagonal Gaussian (encoders and p(z1 | z2))."""

import keras
from keras import ops

from layers.dense import HeDense


@keras.saving.register_keras_serializable(package="vae_zoo")
class GaussianHead(keras.layers.Layer):
    """features -> (mean, log_var), log_var clipped to [-6, 2] as in the reference code.

    The clip keeps posteriors from collapsing to zero variance or exploding early in training.
    """

    def __init__(self, units, log_var_range=(-6.0, 2.0), **kwargs):
        super().__init__(**kwargs)
        self.units = units
        self.log_var_range = tuple(log_var_range)
        self.mean_head = HeDense(units, name="mean")
        self.log_var_head = HeDense(units, name="log_var")

    def build(self, input_shape):
        self.mean_head.build(input_shape)
        self.log_var_head.build(input_shape)

    def call(self, h):
        return self.mean_head(h), ops.clip(self.log_var_head(h), *self.log_var_range)

    def get_config(self):
        return {**super().get_config(), "units": self.units, "log_var_range": list(self.log_var_range)}
