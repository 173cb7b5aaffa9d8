"""Dense layer initialised like the reference code's `nn.Linear` after its He loop."""

import keras

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
