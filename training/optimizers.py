"""The papers' optimizer: Adam on gradients normalised to unit L2 norm per tensor ("AdamNormGrad")."""

import keras
from keras import ops


def _backend_adam():
    """The Adam class Keras itself would run on this backend.

    On PyTorch, `keras.optimizers.Adam(...)` turns into a fused `torch._foreach` implementation, but only
    when instantiated as exactly `Adam`; a subclass falls back to one small update per tensor, which made
    the optimizer most of the PyTorch MLP step (7.6 ms of it). Subclassing the fused class keeps it."""
    if keras.backend.backend() != "torch":
        return keras.optimizers.Adam
    try:
        from keras.src.backend.torch.optimizers.torch_adam import Adam
    except ImportError:  # a Keras without it: the generic (correct, slower) path
        return keras.optimizers.Adam
    return Adam


@keras.saving.register_keras_serializable(package="vae_zoo")
class AdamNormGrad(_backend_adam()):
    """Adam whose every gradient tensor is first scaled to unit L2 norm: g / (||g||_2 + 1e-7).

    The three reference repositories use this for every model (lr 5e-4, betas 0.9/0.999, epsilon 1e-8);
    it makes the step size independent of the loss scale, which is why the same learning rate works
    for Bernoulli, logistic and squared-error objectives. Keras's `clipnorm` only caps the norm.
    """

    def __init__(self, learning_rate=5e-4, beta_1=0.9, beta_2=0.999, epsilon=1e-8, **kwargs):
        super().__init__(learning_rate=learning_rate, beta_1=beta_1, beta_2=beta_2, epsilon=epsilon, **kwargs)

    def _clip_gradients(self, grads):
        if keras.backend.backend() == "torch" and all(g is not None for g in grads):
            import torch

            norms = torch._foreach_add(torch._foreach_norm(grads), 1e-7)
            return super()._clip_gradients(list(torch._foreach_div(grads, norms)))
        grads = [None if g is None else g / (ops.sqrt(ops.sum(ops.square(g))) + 1e-7) for g in grads]
        return super()._clip_gradients(grads)


def build_optimizer(train_config):
    """The optimizer a `TrainConfig` asks for (AdamNormGrad or Adam; AMSGrad and global-norm clipping
    on request)."""
    extra = {"amsgrad": train_config.amsgrad}
    if train_config.clip_norm > 0:
        extra["global_clipnorm"] = train_config.clip_norm
    if train_config.gradient_normalization:
        return AdamNormGrad(train_config.learning_rate, **extra)
    return keras.optimizers.Adam(train_config.learning_rate, epsilon=1e-8, **extra)
