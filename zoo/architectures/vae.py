"""VAE with one stochastic layer and gated MLP encoder/decoder (VampPrior paper's "VAE")."""

import keras
from keras import ops

from layers.distributions import log_normal_diag
from layers.gated import GatedDense
from layers.gaussian_head import GaussianHead
from zoo.base import ARCHITECTURES, LatentVariableModel, ModelConfig
from zoo.networks import gated_mlp


@ARCHITECTURES.register("vae", ModelConfig)
class VAE(LatentVariableModel):
    """q(z|x): 2 x GatedDense(h) -> (mean, clipped log_var); p(x|z): 2 x GatedDense(h) -> likelihood head."""

    def __init__(self, image_shape, latent_dim, likelihood, prior, hidden_units=300, seed=0, num_train=None, **kwargs):
        super().__init__(image_shape, latent_dim, likelihood, prior, hidden_units=hidden_units, seed=seed,
                         num_train=num_train, **kwargs)
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

    def elbo_terms(self, x, batch=None):
        x = ops.convert_to_tensor(x)
        mean, log_var = self.encode(x)
        z = self.reparameterize(mean, log_var)
        log_px = self.conditional_log_prob(x, z)
        kl = log_normal_diag(z, mean, log_var) - self.prior_log_prob(z, batch)
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

    def log_importance_weights(self, x, num_samples):
        x = ops.convert_to_tensor(x)
        mean, log_var = self.encode(x)  # the encoder runs once per image, not once per sample
        mean, log_var = mean[:, None, :], log_var[:, None, :]
        eps_shape = (ops.shape(x)[0], num_samples, self.latent_dim)
        z = mean + ops.exp(0.5 * log_var) * keras.random.normal(eps_shape, seed=self.seed_generator)
        z_flat = ops.reshape(z, (-1, self.latent_dim))
        log_px = self.log_px_samples(x, z_flat, num_samples)
        log_pz = ops.reshape(self.prior.log_prob(z_flat), (-1, num_samples))
        return log_px + log_pz - log_normal_diag(z, mean, log_var)

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
