"""VampPrior: a uniform mixture of the variational posteriors at K learned pseudo-inputs (Eq. 9)."""

import math
from dataclasses import dataclass

import keras
import numpy as np
from keras import ops

from layers.distributions import log_mixture_normal_diag
from layers.priors.base import PRIORS, Prior
from layers.priors.mixture import sample_diag_normal, split_seed
from layers.registry import option


@dataclass
class VampPriorConfig:
    components: int = option(500, minimum=1)
    """K pseudo-inputs."""
    init: str = option("random", choices=("random", "training_data"))
    """random (N(mean, std)) | training_data (K training images + N(0, 0.01))."""
    pseudo_inputs_mean: float = 0.05
    """Mean of the random initialisation (the reference MNIST value)."""
    pseudo_inputs_std: float = option(0.01, exclusive_minimum=0)
    """Its standard deviation."""
    trainable: bool = True
    """False with init=training_data gives the 'VampPrior data' variant (fixed training images)."""


@PRIORS.register("vampprior", VampPriorConfig)
class VampPrior(Prior):
    """p(z) = (1/K) sum_k q(z | u_k), pseudo-inputs u_k image-shaped and clipped to [0, 1].

    The pseudo-inputs are pushed through the model's full top encoder (mean and clipped log-variance
    heads) on every call, so gradients reach both the pseudo-inputs and the encoder.

    Args:
        latent_dim: dimensionality of z.
        image_shape: (H, W, C) of a pseudo-input.
        components: K.
        init: "random" draws N(mean, std) (reference MNIST values 0.05 / 0.01); "training_data" uses K
            training images plus N(0, 0.01) noise (set by `initialize_from_data`).
        trainable: False with init="training_data" is the "VampPrior data" variant.
    """

    def __init__(self, latent_dim, image_shape, components=500, init="random", pseudo_inputs_mean=0.05,
                 pseudo_inputs_std=0.01, trainable=True, **kwargs):
        super().__init__(latent_dim, **kwargs)
        self.image_shape = tuple(image_shape)
        self.components = components
        self.num_components = components
        self.init = init
        self.pseudo_inputs_mean = pseudo_inputs_mean
        self.pseudo_inputs_std = pseudo_inputs_std
        self.learn_pseudo_inputs = trainable

    def build(self, input_shape=None):
        self.pseudo_inputs = self.add_weight(
            name="pseudo_inputs",
            shape=(self.components, *self.image_shape),
            initializer=keras.initializers.RandomNormal(self.pseudo_inputs_mean, self.pseudo_inputs_std),
            trainable=self.learn_pseudo_inputs,
        )

    def initialize_from_data(self, images, seed):
        if self.init != "training_data":
            return
        rng = np.random.default_rng(seed)
        if len(images) < self.components:
            raise ValueError(
                f"model.prior.components={self.components} pseudo-inputs cannot be initialised from "
                f"{len(images)} training images; lower model.prior.components or use model.prior.init=random"
            )
        chosen = images[rng.permutation(len(images))[: self.components]]
        noise = rng.normal(0.0, 0.01, size=chosen.shape)
        self.pseudo_inputs.assign((chosen + noise).astype("float32"))

    def _components(self, pseudo_inputs):
        return self._encode(ops.clip(pseudo_inputs, 0.0, 1.0))

    def log_prob(self, z):
        return self.density()(z)

    def density(self, batch=None):
        """The mixture with its K components encoded once (the VampPrior trains as it evaluates)."""
        means, log_vars = self._components(self.pseudo_inputs)
        log_weights = ops.full((self.components,), -math.log(self.components))
        return lambda z: log_mixture_normal_diag(z, means, log_vars, log_weights)

    def sample(self, num_samples, seed=None):
        index_seed, noise_seed = split_seed(seed, 2)
        index = keras.random.randint((num_samples,), 0, self.components, seed=index_seed)
        means, log_vars = self._components(ops.take(self.pseudo_inputs, index, axis=0))
        return sample_diag_normal(means, log_vars, noise_seed)

    def component_sample(self, index, num_samples, seed=None):
        means, log_vars = self._components(self.pseudo_inputs[index][None])
        return sample_diag_normal(ops.repeat(means, num_samples, 0), ops.repeat(log_vars, num_samples, 0), seed)

    def component_inputs(self):
        return ops.clip(self.pseudo_inputs, 0.0, 1.0)

    def get_config(self):
        return {
            **super().get_config(),
            "image_shape": list(self.image_shape),
            "components": self.components,
            "init": self.init,
            "pseudo_inputs_mean": self.pseudo_inputs_mean,
            "pseudo_inputs_std": self.pseudo_inputs_std,
            "trainable": self.learn_pseudo_inputs,
        }
