"""Training procedures: what one training step does (`train.procedure`), and the procedures priors bring.

Each module registers what it defines: a train step with `@PROCEDURES.register(name, Config)`, the
training a prior needs besides the gradient step (ByPE's coreset phase, the exemplar cache) with
`@prior_callbacks(PriorClass)`. A new procedure is one module here.
"""

from training.procedures.base import PROCEDURES, Procedure, callbacks_for_prior, prior_callbacks

__all__ = ["PROCEDURES", "Procedure", "callbacks_for_prior", "prior_callbacks"]

PROCEDURES.names()  # import every module, so each registered class is known (keras.saving.load_model)
