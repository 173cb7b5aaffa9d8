"""Prior layers over the top latent, each registered in `PRIORS` by the module that defines it.

A new prior is one module here: the layer, the dataclass of its `model.prior` section, and
`@PRIORS.register(name, Config)` on the class (see `layers.registry`).
"""

from layers.priors.base import PRIORS, Prior

__all__ = ["PRIORS", "Prior"]

PRIORS.names()  # import every module, so each registered class is known (keras.saving.load_model)
