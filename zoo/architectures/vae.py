"""VAE with one stochastic layer and gated MLP encoder/decoder (VampPrior paper's "VAE")."""

from dataclasses import dataclass

import keras
from keras import ops

from layers.gated import GatedDense
from layers.gaussian_head import GaussianHead
from layers.posteriors import FAMILIES, log_posterior_density, sample_posterior
from layers.registry import option
from zoo.base import ARCHITECTURES, LatentVariableModel, ModelConfig
from zoo.networks import gated_mlp

ENCODER_INPUTS = ("image", "grey")
TRAINING_TARGETS = ("image", "grey")


@dataclass
class VAEConfig(ModelConfig):
    posterior: str = option("gaussian", choices=FAMILIES)
    """q(z | x): gaussian | truncated_normal (+-2 sigma, renormalised; the VAEPP code's NLL models)."""
    encoder_input: str = option("image", choices=ENCODER_INPUTS)
    """What q reads in training: image (the binarised x) | grey (VAEPP's q(z | e) trick: the greyscale e the
    batch was binarised from; dynamic_binarization only). The test NLL's proposal then reads the grey test
    image too, as the code's evaluation does."""
    training_target: str = option("image", choices=TRAINING_TARGETS)
    """Target of log p(x | z) in training: image (the binarised x, the paper) | grey (the VAEPP code's soft
    Bernoulli target e, the expectation over the binarisation; dynamic_binarization only)."""


@ARCHITECTURES.register("vae", VAEConfig)
class VAE(LatentVariableModel):
    """q(z|x): 2 x GatedDense(h) -> (mean, clipped log_var); p(x|z): 2 x GatedDense(h) -> likelihood head."""

    def __init__(self, image_shape, latent_dim, likelihood, prior, hidden_units=300, seed=0, num_train=None,
                 posterior="gaussian", encoder_input="image", training_target="image", **kwargs):
        super().__init__(image_shape, latent_dim, likelihood, prior, hidden_units=hidden_units, seed=seed,
                         num_train=num_train, **kwargs)
        self.posterior = posterior
        self.encoder_input = encoder_input
        self.training_target = training_target
        self.build_networks()
        self.finish_build()

    def build_networks(self):
        """q(z | x) as `encoder_net` + `encoder_head`, and the decoder; `PixelVAE` swaps in its own."""
        self.encoder_net = gated_mlp(self.hidden_units, 2, name="encoder_net")
        self.encoder_head = GaussianHead(self.latent_dim, name="encoder_head")
        self.decoder_net = keras.Sequential([GatedDense(self.hidden_units), GatedDense(self.hidden_units)],
                                            name="decoder_net")

    def encode(self, x):
        return self.encoder_head(self.encoder_net(x))

    def decoder_params(self, z):
        return self.likelihood(self.decoder_net(z))

    @property
    def reads_grey(self):
        return "grey" in (self.encoder_input, self.training_target)

    def elbo_terms(self, x, batch=None):
        x = ops.convert_to_tensor(x)
        mean, log_var = self.encode(self.training_view(x, batch, "encoder_input"))
        z = sample_posterior(mean, log_var, self.posterior, seed=self.seed_generator)
        log_px = self.conditional_log_prob(self.training_view(x, batch, "training_target"), z)
        kl = log_posterior_density(z, mean, log_var, self.posterior) - self.prior_log_prob(z, batch)
        return {"log_px": log_px, "kl": kl}

    @property
    def joint_latent_dim(self):
        return self.latent_dim

    def conditional_log_prob(self, x, z):
        return self.likelihood.log_prob(x, self.decoder_params(z))

    def inference_variables(self):
        return self.encoder_net.trainable_variables + self.encoder_head.trainable_variables

    def log_joint(self, x, z):
        """log p(x, z) = log p(x | z) + log p(z), one value per row of (x, z)."""
        return self.conditional_log_prob(x, z) + self.prior.log_prob(z)

    def log_importance_weights(self, x, num_samples, encoder_x=None):
        """`encoder_x`: what q reads instead of x (the q(z | e) trick's grey test images)."""
        x = ops.convert_to_tensor(x)
        mean, log_var = self.encode(x if encoder_x is None else ops.convert_to_tensor(encoder_x))  # once per image
        shape = (ops.shape(x)[0], num_samples, self.latent_dim)
        mean, log_var = ops.broadcast_to(mean[:, None, :], shape), ops.broadcast_to(log_var[:, None, :], shape)
        z = sample_posterior(mean, log_var, self.posterior, seed=self.seed_generator)
        z_flat = ops.reshape(z, (-1, self.latent_dim))
        log_px = self.log_px_samples(x, z_flat, num_samples)
        log_pz = ops.reshape(self.prior.log_prob(z_flat), (-1, num_samples))
        return log_px + log_pz - log_posterior_density(z, mean, log_var, self.posterior)

    def log_px_samples(self, x, z, num_samples):
        """log p(x | z_s) [B, S] for S latents per image, z [B * S, d] image-major; the decoder's parameters
        broadcast against x instead of repeating the images."""
        params = [ops.reshape(p, (-1, num_samples, *self.image_shape)) for p in self.decoder_params(z)]
        return self.likelihood.log_prob(x[:, None], params)

    def decode(self, z, seed=None):
        return self.decoder_mean(z)

    def decoder_mean(self, z):
        return self.likelihood.mean(self.decoder_params(z))

    def reconstruct(self, x, seed=None):
        x = ops.convert_to_tensor(x)
        return self.decode(self.encode(x)[0], seed=seed)
