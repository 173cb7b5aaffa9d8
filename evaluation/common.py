"""What the metrics share: batched encode / decode through compiled functions, seeds, skipping."""

import zlib

import numpy as np
from keras import ops

from zoo.compiled import backend_function


class Skipped(Exception):
    """A metric (or one part of it) does not apply to this run; the message says why."""


def derive_seed(seed, *names):
    """A stable 31-bit seed for (seed, *names); Python's own str hash is salted per process."""
    return zlib.crc32(repr((int(seed), *names)).encode()) & 0x7FFFFFFF


def reseed(model, seed):
    """Reset every `SeedGenerator` of `model` (model, prior) from `seed`.

    Each metric calls this first, so its noise does not depend on which metrics ran before it."""
    for variable in model.variables:
        if variable.path.endswith("seed_generator_state"):
            variable.assign(np.array([derive_seed(seed, variable.path), 0]).astype(variable.dtype))


SMALL_BATCH = 128


def batches(count, batch_size):
    for start in range(0, count, batch_size):
        yield slice(start, min(start + batch_size, count))


def subset(count, limit, seed):
    """Indices of at most `limit` of `count` items, drawn without replacement and kept in order."""
    if limit is None or count <= limit:
        return np.arange(count)
    return np.sort(np.random.default_rng(seed).choice(count, limit, replace=False))


def pad_rows(x, size):
    """`x` with zero rows appended up to `size` rows (compiled functions then see few distinct shapes)."""
    x = np.asarray(x, dtype="float32")
    return x if len(x) == size else np.concatenate([x, np.zeros((size - len(x), *x.shape[1:]), x.dtype)])


def predict(network, x, batch_size):
    """`network.predict` over `x` padded to whole batches: one compiled shape on every backend."""
    total = -(-len(x) // batch_size) * batch_size
    return network.predict(pad_rows(x, total), batch_size=batch_size, verbose=0)[: len(x)]


class ModelFunctions:
    """The model's encoder and decoder compiled once (tf.function / jax.jit / no-grad torch), over NumPy.

    Inputs are cut into chunks of `batch_size` rows, or one chunk of SMALL_BATCH rows for small inputs,
    each padded with zeros to that size: rows are independent, and JAX and TensorFlow compile two shapes
    instead of one per input size."""

    def __init__(self, model, batch_size=500):
        self.model = model
        self.batch_size = batch_size
        self._encode = backend_function(model, lambda x: model.encode(ops.convert_to_tensor(x)))
        self._decode = backend_function(model, lambda z: model.decode(ops.convert_to_tensor(z)))

    def _map(self, fn, x):
        size = SMALL_BATCH if len(x) <= SMALL_BATCH else self.batch_size
        outs = []
        for part in batches(len(x), size):
            out = fn(pad_rows(x[part], size))
            n = part.stop - part.start
            outs.append([ops.convert_to_numpy(o)[:n] for o in out] if isinstance(out, (tuple, list))
                        else ops.convert_to_numpy(out)[:n])
        if isinstance(outs[0], list):
            return tuple(np.concatenate(column) for column in zip(*outs))
        return np.concatenate(outs)

    def encode(self, images):
        """Top-latent posterior parameters (mean, log_var) as float32 NumPy arrays [N, d_z]."""
        return self._map(self._encode, images)

    def means(self, images):
        return self.encode(images)[0]

    def decode(self, z):
        """Mean images E[x | z] (hierarchical models draw z1 ~ p(z1 | z2)) as NumPy [N, H, W, C]."""
        return self._map(self._decode, z)


def kernel_sample(model, images, seed, batch_size=1000):
    """z ~ r(z | x) of the prior for each image, in chunks; raises `Skipped` when the prior has no kernel."""
    out = []
    for i, part in enumerate(batches(len(images), batch_size)):
        try:
            z = model.prior.kernel_sample(ops.convert_to_tensor(np.asarray(images[part], "float32")),
                                          seed=derive_seed(seed, "kernel", i))
        except NotImplementedError as error:
            raise Skipped(str(error) or f"{type(model.prior).__name__} has no input kernel r(z | x)") from None
        out.append(ops.convert_to_numpy(z))
    return np.concatenate(out)


def posterior_sample(means, log_vars, rng):
    """z ~ q(z | x) = N(mean, diag exp(log_var)) for precomputed posterior parameters (NumPy noise)."""
    return (means + np.exp(0.5 * log_vars) * rng.standard_normal(means.shape)).astype("float32")
