"""The three gradient primitives every training procedure is written with, one per backend.

Keras 3 has no backend-neutral `grad`, so this module is the only place that knows about
`tf.GradientTape`, `jax.value_and_grad` and `torch.autograd`. Train steps are written once, in a
stateful style, on top of:

- `gradient_step(loss_fn, variables, optimizer)`: differentiate `loss_fn()` with respect to `variables`
  and apply `optimizer` to them (any number of optimizers may alternate inside one train step);
- `input_gradient(fn, x)`: d sum(fn(x)) / dx, itself differentiable (gradient penalties, double
  backpropagation), also the building block of inner optimisation loops (SVI refinement);
- `tracked_state(variables, values)`: on JAX, the scope that makes stateful code pure, so the same
  train step runs under `jax.jit` (see `zoo.stepped_model`).
"""

from __future__ import annotations

import contextlib

import keras
from keras import ops

BACKEND = keras.backend.backend()

_TRACKED = []  # stack of (variables, StatelessScope) opened by `tracked_state` (JAX only)


@contextlib.contextmanager
def tracked_state(variables, values):
    """Map every Keras variable the step touches to an explicit value (JAX's functional state).

    Inside, variables read and assign as if stateful; afterwards `scope.get_current_value(v)` gives the
    new values to hand back to the JAX trainer.
    """
    scope = keras.StatelessScope(state_mapping=list(zip(variables, values)))
    _TRACKED.append((list(variables), scope))
    try:
        with scope:
            yield scope
    finally:
        _TRACKED.pop()


def _jax_gradient_step(loss_fn, variables, optimizer):
    import jax

    if not _TRACKED:
        raise RuntimeError("gradient_step on JAX must run inside layers.autodiff.tracked_state")
    all_variables, outer = _TRACKED[-1]
    differentiated = {id(v) for v in variables}
    others = [v for v in all_variables if id(v) not in differentiated]

    def pure_loss(values):
        mapping = [(v, outer.get_current_value(v)) for v in others] + list(zip(variables, values))
        with keras.StatelessScope(state_mapping=mapping) as inner:
            loss, aux = loss_fn()
        return loss, (aux, [inner.get_current_value(v) for v in others])

    values = [outer.get_current_value(v) for v in variables]
    (loss, (aux, updated)), grads = jax.value_and_grad(pure_loss, has_aux=True)(values)
    for v, value in zip(others, updated):  # state advanced inside the loss, e.g. seed generators
        v.assign(value)
    optimizer.apply(grads, variables)
    return loss, aux


def _tensorflow_gradient_step(loss_fn, variables, optimizer):
    import tensorflow as tf

    with tf.GradientTape() as tape:
        loss, aux = loss_fn()
    grads = tape.gradient(loss, variables)
    optimizer.apply(grads, variables)
    return loss, aux


def _torch_gradient_step(loss_fn, variables, optimizer):
    import torch

    with torch.enable_grad():
        loss, aux = loss_fn()
        grads = torch.autograd.grad(loss, [v.value for v in variables], allow_unused=True)
    with torch.no_grad():
        optimizer.apply(list(grads), variables)
    return loss, aux


def gradient_step(loss_fn, variables, optimizer):
    """Differentiate `loss_fn() -> (loss, aux)` w.r.t. `variables`, apply `optimizer`; return (loss, aux)."""
    step = {
        "jax": _jax_gradient_step,
        "tensorflow": _tensorflow_gradient_step,
        "torch": _torch_gradient_step,
    }[BACKEND]
    return step(loss_fn, list(variables), optimizer)


def input_gradient(fn, x):
    """Gradient of sum(fn(x)) with respect to the tensor x, differentiable again (create_graph)."""
    if BACKEND == "jax":
        import jax

        return jax.grad(lambda xx: ops.sum(fn(xx)))(x)
    if BACKEND == "tensorflow":
        import tensorflow as tf

        with tf.GradientTape() as tape:
            tape.watch(x)
            y = ops.sum(fn(x))
        return tape.gradient(y, x)
    import torch

    with torch.enable_grad():
        if not x.requires_grad:
            x = x.detach().requires_grad_(True)
        y = ops.sum(fn(x))
        (grad,) = torch.autograd.grad(y, x, create_graph=True)
    return grad
