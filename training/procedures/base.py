"""The procedure interface and its two registries (train steps by name, prior companions by class)."""

from layers.registry import Registry

PROCEDURES = Registry("procedure", package="training.procedures", section="train.procedure")

_PRIOR_CALLBACKS = {}


class Procedure:
    """One training step of a `SteppedModel` (attached as `model.procedure` by `training.fit`).

    Subclasses implement `train_update(model, data)` with `layers.autodiff` (so it runs on every backend)
    and return the logs; `callbacks` adds what the procedure needs around the steps inside `fit`.
    """

    single_latent = False
    """True when the step refines or samples one Gaussian q(z | x) itself (checked against the architecture's
    `stochastic_layers` when the config is validated)."""

    requires_prior = None
    """The registered prior the procedure trains parts of (the vaepp procedures: the pull-back prior's
    critic), checked when the config is validated; None: any prior."""

    metric_names = ()
    """Logs of the train step averaged over the epoch (besides loss, reconstruction and kl)."""

    def __init__(self, **options):
        self.options = options

    def check_model(self, model):
        """Raise ValueError when the procedure cannot train `model` (checked before training starts)."""

    def state_layer(self):
        """A Keras layer holding weights the procedure trains besides the model's (None: no such weights).
        `attach` stores it as `model.procedure_state`, so it is saved, restored and optimised with the model."""
        return None

    def attach(self, model):
        """Make `model` train with this procedure: its checks, its weights, its epoch metrics."""
        self.check_model(model)
        model.procedure = self
        state = self.state_layer()
        if state is not None:
            model.procedure_state = state
        model.add_trackers(self.metric_names)

    def optimizer(self, model, base):
        """The optimizer `fit` compiles `model` with, given the one the train section asks for (`base`);
        procedures with optimizers of their own return a `keras.optimizers.MultiOptimizer` holding them."""
        return base

    def train_update(self, model, data):
        raise NotImplementedError("abstract: each procedure defines its training step")

    def callbacks(self, model, splits, train_config):
        """Keras callbacks the procedure needs inside `fit` (none by default)."""
        return []

    def get_config(self):
        return dict(self.options)

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config.pop("name", None)
        return cls(**config)


def prior_callbacks(prior_class):
    """Decorator: `factory(model, splits, train_config) -> [callbacks]` is the training `prior_class` (and
    its subclasses) needs besides the gradient steps, e.g. ByPE's coreset phase."""

    def decorate(factory):
        _PRIOR_CALLBACKS[prior_class] = factory
        return factory

    return decorate


def callbacks_for_prior(model, splits, train_config):
    """The callbacks the model's prior brings (registered with `prior_callbacks`), or none."""
    PROCEDURES.names()  # imports every procedure module, so every companion is registered
    for cls in type(model.prior).__mro__:
        if cls in _PRIOR_CALLBACKS:
            return list(_PRIOR_CALLBACKS[cls](model, splits, train_config))
    return []
