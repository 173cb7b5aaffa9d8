"""The default procedure: one gradient step of the (KL-annealed) ELBO on every trainable variable."""

from training.procedures.base import PROCEDURES, Procedure


@PROCEDURES.register("elbo")
class ELBO(Procedure):
    """The papers' training step: maximise the single-sample ELBO with the model's optimizer
    (`LatentVariableModel.objective`, KL weight from the warm-up)."""

    def train_update(self, model, data):
        return model.objective_step(data)
