"""The three gradient primitives every training procedure is written with, one per backend.

Keras 3 has no backend-neutral `grad`, so this module is the only place that knows about
`tf.GradientTape`, `jax.value_and_grad` and `torch.autograd`. Train steps are written once, in a
stateful style, on top of:

- `gradient_step(loss_fn, variables, optimizer)`: differentiate `loss_fn()` with respect to `variables`
  and apply `optimizer` to them (any number of optimizers may alternate inside one train step);
  `gradients(loss_fn, variables)` is the same without the update, so two losses can train two groups of
  variables with one optimizer (SVI: the encoder on the amortised ELBO, the decoder on the refined bound);
- `input_gradient(fn, x)`: d sum(fn(x)) / dx, itself differentiable (gradient penalties, double
  backpropagation); `value_and_input_gradient(fn, x)` returns (fn(x), d sum(fn(x)) / dx) without a graph
  for a second derivative, the step of inner optimisation loops (SVI refinement);
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


def _jax_gradients(loss_fn, variables):
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
    return loss, aux, list(grads)


def _tensorflow_gradients(loss_fn, variables):
    import tensorflow as tf

    with tf.GradientTape() as tape:
        loss, aux = loss_fn()
    return loss, aux, list(tape.gradient(loss, variables))


def _torch_gradients(loss_fn, variables):
    import torch

    with torch.enable_grad():
        loss, aux = loss_fn()
        grads = torch.autograd.grad(loss, [v.value for v in variables], allow_unused=True)
    return loss, aux, list(grads)


def gradients(loss_fn, variables):
    """Differentiate `loss_fn() -> (loss, aux)` w.r.t. `variables`; return (loss, aux, grads).

    A variable the loss does not use gets a zero gradient (so an optimizer can apply the list as is)."""
    variables = list(variables)
    compute = {"jax": _jax_gradients, "tensorflow": _tensorflow_gradients, "torch": _torch_gradients}[BACKEND]
    loss, aux, grads = compute(loss_fn, variables)
    grads = [ops.zeros_like(v.value) if g is None else g for g, v in zip(grads, variables)]
    return loss, aux, grads


def gradient_step(loss_fn, variables, optimizer):
    """Differentiate `loss_fn() -> (loss, aux)` w.r.t. `variables`, apply `optimizer`; return (loss, aux)."""
    variables = list(variables)
    loss, aux, grads = gradients(loss_fn, variables)
    if BACKEND == "torch":
        import torch

        with torch.no_grad():
            optimizer.apply(grads, variables)
    else:
        optimizer.apply(grads, variables)
    return loss, aux


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


def value_and_input_gradient(fn, x):
    """`fn(x) -> (values, aux)`: return (values, aux, d sum(values) / dx), all without gradient history.

    The step of an inner optimisation loop: every row of `values` depends on its own row of x only, so
    the gradient is per row, and no graph is kept for a second derivative."""
    if BACKEND == "jax":
        import jax

        def summed(xx):
            values, aux = fn(xx)
            return ops.sum(values), (values, aux)

        (_, (values, aux)), grad = jax.value_and_grad(summed, has_aux=True)(x)
        return jax.lax.stop_gradient((values, aux, grad))
    if BACKEND == "tensorflow":
        import tensorflow as tf

        with tf.GradientTape(watch_accessed_variables=False) as tape:
            tape.watch(x)
            values, aux = fn(x)
            total = ops.sum(values)
        grad = tape.gradient(total, x)
        return tf.nest.map_structure(tf.stop_gradient, (values, aux, grad))
    import torch

    with torch.enable_grad():
        x = x.detach().requires_grad_(True)
        values, aux = fn(x)
        (grad,) = torch.autograd.grad(ops.sum(values), x)
    return tuple(_detach_tree((values, aux, grad)))


def _detach_tree(tree):
    if isinstance(tree, (list, tuple)):
        return type(tree)(_detach_tree(t) for t in tree)
    if isinstance(tree, dict):
        return {k: _detach_tree(v) for k, v in tree.items()}
    return tree.detach()
