"""Initialisers that reproduce the reference PyTorch code (VampPrior / Exemplar / ByPE repositories).

Dense kernels: N(0, sqrt(2 / fan_in)), a *non-truncated* normal (Keras's HeNormal is truncated).
Dense biases, conv kernels and conv biases: PyTorch's default U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
"""

import math

import keras


def he_normal_untruncated():
    """N(0, 2 / fan_in) for Dense kernels, as the reference `he_init` does."""
    return keras.initializers.VarianceScaling(scale=2.0, mode="fan_in", distribution="untruncated_normal")


def torch_default_kernel():
    """PyTorch's default kernel init: U(+-1/sqrt(fan_in)) (kaiming-uniform with a=sqrt(5))."""
    return keras.initializers.VarianceScaling(scale=1.0 / 3.0, mode="fan_in", distribution="uniform")


def torch_default_bias(fan_in):
    """PyTorch's default bias init, which depends on the layer's fan-in, not on the bias shape."""
    bound = 1.0 / math.sqrt(max(1, fan_in))
    return keras.initializers.RandomUniform(-bound, bound)
