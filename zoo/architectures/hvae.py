"""Two-level hierarchical VAE (VampPrior paper, Eq. 10-15) with gated MLP networks.

Generative model p(x | z1, z2) p(z1 | z2) p(z2); inference q(z1 | x, z2) q(z2 | x). The prior layer is
the prior on the top latent z2.
"""

import keras
from keras import ops

from layers.distributions import log_normal_diag
from layers.gated import GatedDense
from layers.gaussian_head import GaussianHead
from layers.priors.mixture import split_seed
from zoo.base import ARCHITECTURES, LatentVariableModel, ModelConfig
from zoo.networks import gated_mlp


@ARCHITECTURES.register("hvae", ModelConfig)
class HVAE(LatentVariableModel):
    """Two stochastic layers with gated MLP networks; `ConvHVAE` swaps in the gated conv networks.

    Args:
        image_shape, latent_dim, likelihood, prior, seed: see `LatentVariableModel` (latent_dim is the
            size of both z1 and z2).
        hidden_units: width of the gated dense layers.
    """

    stochastic_layers = 2

    def __init__(self, image_shape, latent_dim, likelihood, prior, hidden_units=300, seed=0, num_train=None, **kwargs):
        super().__init__(image_shape, latent_dim, likelihood, prior, hidden_units=hidden_units, seed=seed,
                         num_train=num_train, **kwargs)
        h = hidden_units
        self.build_x_networks(h)
        self.q_z2_head = GaussianHead(latent_dim, name="q_z2_head")
        self.q_z1_joint = GatedDense(h, name="q_z1_joint")
        self.q_z1_head = GaussianHead(latent_dim, name="q_z1_head")
        self.p_z1_net = keras.Sequential([GatedDense(h), GatedDense(h)], name="p_z1_net")
        self.p_z1_head = GaussianHead(latent_dim, name="p_z1_head")
        self.build_decoder_inputs(h)
        self.finish_build()

    def build_decoder_inputs(self, h):
        """The maps from z1 and z2 into p(x | z1, z2) (`PixelHVAE`: image-sized conditioning maps)."""
        self.p_x_z1 = GatedDense(h, name="p_x_z1")
        self.p_x_z2 = GatedDense(h, name="p_x_z2")

    def build_x_networks(self, h):
        """The networks that read or produce images: gated MLPs here, gated convs in ConvHVAE."""
        self.q_z2_net = gated_mlp(h, 2, name="q_z2_net")
        self.q_z1_x_net = gated_mlp(h, 1, name="q_z1_x_net")
        self.q_z1_z2_net = GatedDense(h, name="q_z1_z2_net")
        self.p_x_net = GatedDense(h, name="p_x_net")

    # --- conditionals -------------------------------------------------------------------------------
    def encode(self, x):
        return self.q_z2_head(self.q_z2_net(x))

    def q_z1(self, x_features, z2):
        return self.q_z1_head(self.q_z1_joint(ops.concatenate([x_features, self.q_z1_z2_net(z2)], axis=-1)))

    def p_z1(self, z2):
        return self.p_z1_head(self.p_z1_net(z2))

    def decoder_params(self, z1, z2):
        return self.likelihood(self.p_x_net(ops.concatenate([self.p_x_z1(z1), self.p_x_z2(z2)], axis=-1)))

    # --- objectives ----------------------------------------------------------------------------------
    def elbo_terms(self, x, batch=None):
        x = ops.convert_to_tensor(x)
        mean2, log_var2 = self.encode(x)
        z2 = self.reparameterize(mean2, log_var2)
        mean1, log_var1 = self.q_z1(self.q_z1_x_net(x), z2)
        z1 = self.reparameterize(mean1, log_var1)
        p_mean1, p_log_var1 = self.p_z1(z2)
        log_px = self.log_px(x, z1, z2)
        kl = (
            log_normal_diag(z1, mean1, log_var1)
            + log_normal_diag(z2, mean2, log_var2)
            - log_normal_diag(z1, p_mean1, p_log_var1)
            - self.prior_log_prob(z2, batch)
        )
        return {"log_px": log_px, "kl": kl}

    @property
    def joint_latent_dim(self):
        return 2 * self.latent_dim

    def log_joint(self, x, z):
        """log p(x, z1, z2) = log p(x | z1, z2) + log p(z1 | z2) + log p(z2) for z = [z1, z2] concatenated."""
        z1, z2 = z[:, : self.latent_dim], z[:, self.latent_dim:]
        p_mean1, p_log_var1 = self.p_z1(z2)
        return (self.log_px(x, z1, z2) + log_normal_diag(z1, p_mean1, p_log_var1)
                + self.prior.log_prob(z2))

    def log_importance_weights(self, x, num_samples):
        x = ops.convert_to_tensor(x)
        # Everything that depends on x alone (q(z2|x), the x-branch of q(z1|x,z2)) runs once per image.
        s, d = num_samples, self.latent_dim
        mean2, log_var2 = self.encode(x)
        batch = ops.shape(x)[0]
        z2 = mean2[:, None] + ops.exp(0.5 * log_var2)[:, None] * keras.random.normal((batch, s, d), seed=self.seed_generator)
        z2_flat = ops.reshape(z2, (-1, d))
        x_features = ops.repeat(self.q_z1_x_net(x), s, axis=0)
        mean1, log_var1 = self.q_z1(x_features, z2_flat)
        z1 = self.reparameterize(mean1, log_var1)
        p_mean1, p_log_var1 = self.p_z1(z2_flat)
        log_px = self.log_px_samples(x, z1, z2_flat, s)
        log_z1 = log_normal_diag(z1, p_mean1, p_log_var1) - log_normal_diag(z1, mean1, log_var1)
        log_z2 = self.prior.log_prob(z2_flat) - ops.reshape(log_normal_diag(z2, mean2[:, None], log_var2[:, None]), (-1,))
        return log_px + ops.reshape(log_z1 + log_z2, (-1, s))

    def log_px(self, x, z1, z2):
        """log p(x | z1, z2) per row."""
        return self.likelihood.log_prob(x, self.decoder_params(z1, z2))

    def log_px_samples(self, x, z1, z2, num_samples):
        """log p(x | z1_s, z2_s) [B, S] for S latent pairs per image (image-major rows); the parameters
        broadcast against x."""
        params = [ops.reshape(p, (-1, num_samples, *self.image_shape)) for p in self.decoder_params(z1, z2)]
        return self.likelihood.log_prob(x[:, None], params)

    def generate(self, z1, z2, seed=None):
        """The image shown for latents (z1, z2): E[x | z1, z2] (`PixelHVAE` draws x)."""
        return self.likelihood.mean(self.decoder_params(z1, z2))

    # --- generation ----------------------------------------------------------------------------------
    def decode(self, z, seed=None):
        """Decode top latents z2: z1 ~ p(z1 | z2) (sampled, as the reference does), x = E[x | z1, z2]."""
        p_mean1, p_log_var1 = self.p_z1(z)
        z1 = self.reparameterize(p_mean1, p_log_var1, seed=seed)
        x_seed = split_seed(seed, 2)[1] if isinstance(seed, int) else seed  # a generator advances by itself
        return self.generate(z1, z, seed=x_seed)

    def decoder_mean(self, z):
        """E[x | z1 = E[z1 | z2], z2] for top latents z2 (deterministic: no z1 draw)."""
        return self.likelihood.mean(self.decoder_params(self.p_z1(z)[0], z))

    def reconstruct(self, x, seed=None):
        x = ops.convert_to_tensor(x)
        mean2, _ = self.encode(x)
        mean1, _ = self.q_z1(self.q_z1_x_net(x), mean2)
        return self.generate(mean1, mean2, seed=seed)
