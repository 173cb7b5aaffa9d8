"""The gradient-penalty interface: `penalty(critic, real, fake, seed) -> scalar`.

Convention (VAEPP and the official WGAN-div code): the critic D is an energy, LOW on real data. A penalty
constrains grad_x D at some points between (or at) the real and the generated data; only the norm of
that gradient enters, so the sign convention changes nothing here but is kept for the callers' losses.

- `critic`: x [B, ...] -> [B] or [B, 1], one value per example (no batch statistics: batch norm couples
  the examples and breaks the per-example gradient, see the WGAN-GP issues in the reference, section 5);
- `real`, `fake`: [B, ...] of the same shape; the per-example norm is over ALL non-batch axes;
- `seed`: a `keras.random.SeedGenerator` (advanced by each draw; the form for compiled train steps) or
  an int (the same int gives the same interpolation coefficients);
- the result is differentiable w.r.t. the critic's weights (double backpropagation through
  `layers.autodiff.input_gradient`) AND w.r.t. `fake`: no stop-gradient, since VAEPP's decoder is trained
  through the interpolates.
"""

import keras
from keras import ops

from layers.autodiff import input_gradient
from layers.registry import Registry

PENALTIES = Registry("gradient penalty", package="layers.penalties", section="train.procedure.penalty")


def critic_gradient(critic, x):
    """g = d D(x) / dx per example [B, ...], itself differentiable (the critic scores examples independently)."""
    return input_gradient(critic, x)


def squared_norms(g):
    """sum of g^2 over every non-batch axis: [B]."""
    return ops.sum(ops.square(g), axis=tuple(range(1, len(g.shape))))


def interpolation_coefficients(batch_size, seed):
    """alpha ~ U[0, 1], one per example: [batch_size]."""
    return keras.random.uniform((batch_size,), seed=seed)


def interpolate(start, end, alpha):
    """start + alpha (end - start), alpha [B] broadcast over all non-batch axes."""
    alpha = ops.reshape(ops.cast(alpha, start.dtype), (-1,) + (1,) * (len(start.shape) - 1))
    return start + alpha * (end - start)


class GradientPenalty:
    """Base class: subclasses implement `penalty`. Instances are called as `penalty(critic, real, fake, seed)`.

    Args:
        weight: the coefficient in front of the penalty (lambda of WGAN-GP, k of WGAN-div).
    """

    uses_interpolates = True
    """False: the penalty sits at the real and fake points themselves and draws nothing (wgan_div_2)."""

    def __init__(self, weight):
        self.weight = float(weight)

    def __call__(self, critic, real, fake, seed=None, alpha=None):
        """The scalar penalty. `alpha` [B]: explicit interpolation coefficients instead of a draw from `seed`
        (tests, or a caller that shares one draw between several penalties)."""
        real = ops.convert_to_tensor(real)
        fake = ops.convert_to_tensor(fake)
        if self.uses_interpolates and alpha is None:
            alpha = interpolation_coefficients(ops.shape(real)[0], seed)
        return self.penalty(critic, real, fake, alpha)

    def penalty(self, critic, real, fake, alpha):
        raise NotImplementedError("abstract: each gradient penalty defines its value")

    def get_config(self):
        return {"weight": self.weight}

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config.pop("name", None)
        return cls(**config)
