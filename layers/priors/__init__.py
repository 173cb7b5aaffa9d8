"""Prior layers and the registry that builds one from `model.prior` in a config."""

import dataclasses

from layers.priors.base import Prior
from layers.priors.exemplar import ExemplarPrior
from layers.priors.mixture_of_gaussians import MixtureOfGaussians
from layers.priors.pseudocoreset import PseudocoresetPrior
from layers.priors.standard_normal import StandardNormal
from layers.priors.vampprior import VampPrior


def build_prior(prior_config, latent_dim, image_shape, num_train=None, seed=0):
    """Create the prior named by `prior_config.name` (see training.config.PriorConfig).

    `num_train` is the training-set size N (priors over the training set need it); `seed` seeds the
    prior's own random state."""
    c = prior_config
    if c.name == "standard_normal":
        return StandardNormal(latent_dim, name="prior")
    if c.name == "mog":
        return MixtureOfGaussians(latent_dim, c.components, learn_weights=c.learn_weights, name="prior")
    if c.name == "vampprior":
        return VampPrior(
            latent_dim, image_shape, c.components, init=c.init, pseudo_inputs_mean=c.pseudo_inputs_mean,
            pseudo_inputs_std=c.pseudo_inputs_std, trainable=c.trainable, name="prior",
        )
    if c.name == "exemplar":
        e = c.exemplar
        return ExemplarPrior(latent_dim, image_shape, num_train, c.components, mode=e.mode, k=e.k,
                             leave_one_out=e.leave_one_out, chunk_size=e.chunk_size, seed=seed, name="prior")
    if c.name == "bype":
        return PseudocoresetPrior(latent_dim, image_shape, num_train, c.components,
                                  seed=seed, coreset=dataclasses.asdict(c.coreset), name="prior")
    raise ValueError(f"unknown prior '{c.name}'")


__all__ = ["Prior", "StandardNormal", "MixtureOfGaussians", "VampPrior", "ExemplarPrior", "PseudocoresetPrior", "build_prior"]
