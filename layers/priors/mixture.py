"""Sampling shared by all mixture-of-diagonal-Gaussian priors."""

import keras
from keras import ops


def split_seed(seed, count):
    """`count` seeds for `count` independent draws.

    A `SeedGenerator` (or None) advances on every draw, so it can be reused; an integer cannot: the same
    integer given to two draws makes them dependent (e.g. the noise would depend on the chosen component).
    """
    if isinstance(seed, int):
        return [hash((seed, i)) % (2**31 - 1) for i in range(count)]
    return [seed] * count


def sample_diag_normal(means, log_vars, seed):
    """Reparameterised draw z = mean + exp(log_var / 2) * eps, one per row."""
    return means + ops.exp(0.5 * log_vars) * keras.random.normal(ops.shape(means), seed=seed)


def sample_component_indices(log_weights, num_samples, seed):
    """Component indices drawn with probabilities softmax(log_weights)."""
    return ops.reshape(keras.random.categorical(log_weights[None, :], num_samples, seed=seed), (-1,))
