"""Run a model function compiled by its backend: `tf.function`, `jax.jit` or eager PyTorch without autograd.

Evaluation calls the same function thousands of times (IWAE chunks); eager JAX or TF would dispatch op by
op. On JAX the function is made pure over the model's variables and the advanced seed-generator state is
written back, so successive calls draw fresh noise. `model_function` keeps one compiled function per model
and name, so a second evaluation of the same model reuses the traced / jitted one.
"""

import keras

from layers.autodiff import BACKEND


def backend_function(model, fn, static_argnums=()):
    """Compile `fn(*args)` that reads `model`'s variables; `static_argnums` are Python ints (shapes)."""
    if BACKEND == "tensorflow":
        import tensorflow as tf

        return tf.function(fn, reduce_retracing=True)
    if BACKEND == "torch":
        import torch

        def run_without_autograd(*args):
            with torch.no_grad():
                return fn(*args)

        return run_without_autograd

    import jax

    variables = model.variables

    def pure(values, *args):
        with keras.StatelessScope(state_mapping=list(zip(variables, values))) as scope:
            out = fn(*args)
        return out, [scope.get_current_value(v) for v in variables]

    jitted = jax.jit(pure, static_argnums=tuple(i + 1 for i in static_argnums))

    def run(*args):
        out, new_values = jitted([v.value for v in variables], *args)
        for v, value in zip(variables, new_values):
            if not v.trainable:
                v.assign(value)
        return out

    return run


def model_function(model, name, fn, static_argnums=()):
    """`backend_function(model, fn)` compiled once per (model, name) and kept on the model.

    Stored with `object.__setattr__` so Keras does not track the cache as model state (it is not saved)."""
    cache = model.__dict__.get("_compiled_functions")
    if cache is None:
        cache = {}
        object.__setattr__(model, "_compiled_functions", cache)
    if name not in cache:
        cache[name] = backend_function(model, fn, static_argnums)
    return cache[name]
