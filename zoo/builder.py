"""Build a zoo model from a validated `ModelConfig` (architecture x likelihood x prior)."""

from layers.likelihoods import build_likelihood
from layers.priors import build_prior
from zoo.hvae import HVAE, ConvHVAE
from zoo.vae import VAE

ARCHITECTURES = {"vae": VAE, "hvae": HVAE, "conv_hvae": ConvHVAE}


def build_model(model_config, image_shape, seed=0, num_train=None):
    """The Keras model a config describes, with all weights created.

    `num_train` (the training-set size N) is needed by priors defined over the training set (exemplar,
    bype); a run's `fit` passes it, and presets record it."""
    cls = ARCHITECTURES[model_config.architecture]
    head = "conv" if cls is ConvHVAE else "dense"
    likelihood = build_likelihood(model_config.likelihood, image_shape, head, model_config.gaussian_variance)
    prior = build_prior(model_config.prior, model_config.latent_dim, image_shape, num_train, seed)
    return cls(image_shape, model_config.latent_dim, likelihood, prior, hidden_units=model_config.hidden_units,
               seed=seed, name=model_config.architecture)
