"""Sampling shared by all mixture-of-diagonal-Gaussian priors."""

import keras
from keras import ops


def sample_diag_normal(means, log_vars, seed):
    """Reparameterised draw z = mean + exp(log_var / 2) * eps, one per row."""
    return means + ops.exp(0.5 * log_vars) * keras.random.normal(ops.shape(means), seed=seed)


def sample_component_indices(log_weights, num_samples, seed):
    """Component indices drawn with probabilities softmax(log_weights)."""
    return ops.reshape(keras.random.categorical(log_weights[None, :], num_samples, seed=seed), (-1,))
