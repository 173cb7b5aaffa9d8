"""Conversions shared by the oracle tests: backend tensors in, float64 NumPy out."""

import numpy as np
from keras import ops


def _t(a):
    """float32 backend tensor from a NumPy array (torch layers do not take NumPy inputs)."""
    return ops.convert_to_tensor(np.asarray(a, dtype=np.float32))


def _np(x):
    return np.asarray(ops.convert_to_numpy(x), dtype=np.float64)


def _f32(a):
    """The float64 copy of exactly the float32 values the code under test sees."""
    return np.asarray(a, dtype=np.float32).astype(np.float64)


def build_likelihood(name, image_shape, head="dense", **options):
    """The registered likelihood `name` with `options`, as a model builds it."""
    from layers.likelihoods import LIKELIHOODS

    return LIKELIHOODS.build(LIKELIHOODS.options(name, **options), image_shape=image_shape, head=head,
                             name="likelihood")
