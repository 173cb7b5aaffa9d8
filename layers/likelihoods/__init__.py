"""Decoder likelihoods p(x | z), each registered in `LIKELIHOODS` by the module that defines it.

A new likelihood is one module here: the layer (decoder head + log-density), the dataclass of its
`model.likelihood` options if it has any, and `@LIKELIHOODS.register(name, Config)` on the class.
"""

from layers.likelihoods.base import LIKELIHOODS, MEAN_CLAMP, Likelihood

__all__ = ["LIKELIHOODS", "MEAN_CLAMP", "Likelihood"]

LIKELIHOODS.names()  # import every module, so each registered class is known (keras.saving.load_model)
