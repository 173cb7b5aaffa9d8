"""Gradient penalties on a critic (`train.procedure.penalty` of the VAEPP procedures), each registered in `PENALTIES` by the module that defines it.

A new penalty is one module here: the class, the dataclass of its section, and
`@PENALTIES.register(name, Config)` on the class (see `layers.registry` and `layers.penalties.base`).
"""

from layers.penalties.base import PENALTIES, GradientPenalty

__all__ = ["PENALTIES", "GradientPenalty"]

PENALTIES.names()  # import every module, so each registered class is known (keras.saving)
