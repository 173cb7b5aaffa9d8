"""Randomness driven by a request's seed: the same seed gives the same samples, with no shared state.

`keras.random` takes only an int or a `SeedGenerator`, and a `SeedGenerator` keeps its state in a
variable: exported as is, concurrent requests would advance one shared counter, and no request could be
replayed. `RequestSeed` is a `SeedGenerator` whose state is the request's seed tensor plus a counter that
advances at trace time, so draw k of a request uses the key (seed, k): stateless, per-request, and the
same in the SavedModel as in the Keras model.
"""

import contextlib

import keras
from keras import ops
from keras.src.backend import random_seed_dtype  # the dtype each backend's stateless RNG expects


class RequestSeed(keras.random.SeedGenerator):
    """A `SeedGenerator` over a seed tensor (or int); its i-th draw returns the key (seed, i).

    It holds no variable, so it works inside `tf.function`, `jax.jit`/jax2tf and eager code alike.
    """

    def __init__(self, seed):  # deliberately no super().__init__: that would create a state variable
        self._request_seed = seed
        self._draws = 0

    def next(self, ordered=True):
        dtype = random_seed_dtype()
        key = ops.stack([ops.cast(self._request_seed, dtype), ops.convert_to_tensor(self._draws, dtype=dtype)])
        self._draws += 1
        return key


@contextlib.contextmanager
def seeded(model, seed):
    """Within the block, every `SeedGenerator` attribute of `model` and its layers draws from one
    `RequestSeed(seed)` (yielded), so functions that use a model's internal noise (e.g. the IWAE samples of
    `log_importance_weights`) become deterministic functions of `seed`. One shared counter keeps the draws
    of different generators independent."""
    request_seed = RequestSeed(seed)
    swapped = []
    for layer in model._flatten_layers(include_self=True, recursive=True):
        for name, value in list(vars(layer).items()):
            if isinstance(value, keras.random.SeedGenerator) and not isinstance(value, RequestSeed):
                swapped.append((layer, name, value))
                object.__setattr__(layer, name, request_seed)  # bypass Keras tracking: a temporary swap
    try:
        yield request_seed
    finally:
        for layer, name, value in swapped:
            object.__setattr__(layer, name, value)
