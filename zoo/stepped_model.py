"""`SteppedModel`: the Keras model base class whose train and test steps run on every backend.

Subclasses write `train_update(data)` and `test_update(data)` once, statefully, with
`layers.autodiff.gradient_step` / `input_gradient`, and return a dict of logs. This class adapts them
to each backend's trainer: TensorFlow and PyTorch call them directly; on JAX the step receives and
returns explicit state, so the update runs inside `tracked_state`, which maps every variable (weights,
seeds, optimizer slots, metric accumulators) to the values the JAX trainer passes in.
"""

import keras

from layers.autodiff import BACKEND, gradient_step, tracked_state


class SteppedModel(keras.Model):
    """A Keras model trained through `train_update` / `test_update` instead of `compute_loss`."""

    def objective(self, data, training):
        """Return (scalar loss, dict of scalar logs); the default train/test updates use it."""
        raise NotImplementedError("abstract: models define their objective or override train_update")

    procedure = None
    """The training procedure (`training.procedures`) whose `train_update(model, data)` a train step runs;
    None runs `objective_step`, which is the `elbo` procedure."""

    def train_update(self, data):
        """One training iteration: the attached procedure's, by default one gradient step of `objective`."""
        if self.procedure is not None:
            return self.procedure.train_update(self, data)
        return self.objective_step(data)

    def objective_step(self, data):
        """One gradient step of `objective` on all trainable variables."""
        _, logs = gradient_step(lambda: self.objective(data, training=True), self.trainable_variables, self.optimizer)
        return self.update_trackers(logs)

    def test_update(self, data):
        _, logs = self.objective(data, training=False)
        return self.update_trackers(logs)

    def update_trackers(self, logs):
        """Accumulate each logged value in the metric of the same name and return the running results;
        values without a metric are returned as they are (this batch's value)."""
        trackers = {m.name: m for m in self.metrics}
        results = {}
        for name, value in logs.items():
            if name in trackers:
                trackers[name].update_state(value)
                value = trackers[name].result()
            results[name] = value
        return results

    def compile(self, optimizer, **kwargs):
        """Compile and build the optimizer now: the TF trainer would otherwise build it inside the first
        traced step, where sub-optimizers of a MultiOptimizer are still unbuilt."""
        super().compile(optimizer=optimizer, **kwargs)
        self.optimizer.build(self.trainable_variables)

    if BACKEND == "jax":

        def train_step(self, state, data):
            refs = (self.trainable_variables, self.non_trainable_variables, self.optimizer.variables,
                    self.metrics_variables)
            return self._tracked_call(self.train_update, refs, state, data)

        def test_step(self, state, data):
            refs = (self.trainable_variables, self.non_trainable_variables, self.metrics_variables)
            return self._tracked_call(self.test_update, refs, state, data)

        def _tracked_call(self, update, refs, state, data):
            flat_refs = [v for group in refs for v in group]
            flat_values = [x for group in state for x in group]
            with tracked_state(flat_refs, flat_values) as scope:
                logs = update(data)
            new_state = tuple([scope.get_current_value(v) for v in group] for group in refs)
            return logs, new_state

    else:

        def train_step(self, data):
            return self.train_update(data)

        def test_step(self, data):
            return self.test_update(data)
