"""`LatentVariableModel`: what every VAE of the zoo shares (objective, trackers, generation API).

Architectures subclass it and implement `encode`, `elbo_terms`, `log_importance_weights`, `decode` and
`reconstruct`; the prior is a separate layer with `log_prob` / `sample`, attached to the top encoder.
"""

import keras
from keras import ops

from layers.priors.mixture import split_seed
from training.steps import SteppedModel


class LatentVariableModel(SteppedModel):
    """Base of VAE, HVAE and ConvHVAE.

    Args:
        image_shape: (H, W, C).
        latent_dim: size of the (top) latent.
        likelihood: a `layers.likelihoods.Likelihood`.
        prior: a `layers.priors.Prior` over the top latent.
        seed: seed of the model's `SeedGenerator` (reparameterisation noise).
    """

    def __init__(self, image_shape, latent_dim, likelihood, prior, seed=0, **kwargs):
        super().__init__(**kwargs)
        self.image_shape = tuple(image_shape)
        self.latent_dim = latent_dim
        self.likelihood = likelihood
        self.prior = prior
        self.seed_generator = keras.random.SeedGenerator(seed)
        self.kl_weight = self.add_weight(name="kl_weight", shape=(), initializer="ones", trainable=False)
        self.trackers = [keras.metrics.Mean(name=n) for n in ("loss", "reconstruction", "kl")]

    def finish_build(self):
        """Attach the prior to the top encoder and create every weight with one dummy forward pass."""
        self.prior.attach_encoder(self.encode)
        self.prior.build((None, self.latent_dim))
        self.elbo_terms(ops.zeros((1, *self.image_shape)))
        self.built = True

    @property
    def metrics(self):
        return self.trackers

    # --- what architectures implement -------------------------------------------------------------
    def encode(self, x):
        """Top latent posterior q(z | x) (or q(z2 | x)): (mean, log_var)."""
        raise NotImplementedError("abstract: architectures define encode")

    def elbo_terms(self, x, batch=None):
        """Single-sample per-example terms: {"log_px": log p(x | z), "kl": log q(z | x) - log p(z)}.

        `batch` is the training batch dict inside a training step (the prior may use it, see
        `prior_log_prob`), None in evaluation."""
        raise NotImplementedError("abstract: architectures define elbo_terms")

    def log_importance_weights(self, x, num_samples):
        """log p(x, z_s) - log q(z_s | x) for S posterior samples per image: shape [B, S]."""
        raise NotImplementedError("abstract: architectures define log_importance_weights")

    def decode(self, z, seed=None):
        """Mean image of p(x | z) for top latents z (lower latents drawn from their conditional prior)."""
        raise NotImplementedError("abstract: architectures define decode")

    def reconstruct(self, x):
        """Mean image decoded from the posterior means."""
        raise NotImplementedError("abstract: architectures define reconstruct")

    # --- shared ---------------------------------------------------------------------------------------
    def reparameterize(self, mean, log_var, seed=None):
        eps = keras.random.normal(ops.shape(mean), seed=self.seed_generator if seed is None else seed)
        return mean + ops.exp(0.5 * log_var) * eps

    def prior_log_prob(self, z, batch=None):
        """log p(z): the prior's training form inside a training step, its evaluation form otherwise."""
        return self.prior.log_prob(z) if batch is None else self.prior.training_log_prob(z, batch)

    def training_callbacks(self, splits, train_config):
        """Callbacks the model's training procedure adds to `fit` (the prior's, e.g. a coreset phase)."""
        return self.prior.training_callbacks(self, splits, train_config)

    def sample(self, num_samples, seed=None):
        """Images from the generative model: z ~ p(z), x = E[x | z]."""
        prior_seed, decode_seed = split_seed(self.seed_generator if seed is None else seed, 2)
        return self.decode(self.prior.sample(num_samples, seed=prior_seed), seed=decode_seed)

    def objective(self, data, training):
        x = data["image"]
        terms = self.elbo_terms(x, batch=data if training else None)
        reconstruction = -terms["log_px"]
        kl_weight = self.kl_weight if training else 1.0
        loss = ops.mean(reconstruction + kl_weight * terms["kl"])
        return loss, {"loss": loss, "reconstruction": ops.mean(reconstruction), "kl": ops.mean(terms["kl"])}

    def call(self, x):
        return self.reconstruct(x)
