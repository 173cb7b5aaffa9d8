"""BSVI-pi's global buffer weights pi over the k + 1 importance weights of an SVI trajectory (BSVI paper
Section 4.1), parameterised as softmax(logits) so pi stays on the simplex while gradient ascent trains it."""

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="vae_zoo")
class BufferWeights(keras.layers.Layer):
    """k + 1 logits, zero at the start (uniform pi); `log_pi()` is log softmax(logits)."""

    def __init__(self, size, **kwargs):
        super().__init__(**kwargs)
        self.size = int(size)
        self.logits = self.add_weight(name="logits", shape=(self.size,), initializer="zeros")
        self.built = True

    def log_pi(self):
        return ops.log_softmax(self.logits)

    def get_config(self):
        return {**super().get_config(), "size": self.size}
