"""The prior interface every prior layer implements.

A prior is a Keras layer over the top latent with `log_prob(z)` (one value per row) and
`sample(num_samples, seed)`. Priors that are mixtures also expose their components, so generic code
(sample plates, exports, augmentation) can use them without knowing which prior it has.
"""

import math

import keras
from keras import ops

from layers.registry import Registry, layer_from_config

PRIORS = Registry("prior", package="layers.priors", section="model.prior")


class Prior(keras.layers.Layer):
    """Base class of p(z). Subclasses implement `log_prob` and `sample`.

    Args:
        latent_dim: dimensionality of z.
    """

    num_components = 0  # mixtures override this and `component_sample`
    tiny_options = {}
    """Options that make a test-sized prior (fewer Monte-Carlo draws, shorter chains), which the contract
    tests merge into the prior section, as architectures' `tiny_options` shrink their networks."""
    needs_decoder_mean = False
    """True: the density reads the model's decoder mean G(z) (`attach_decoder`; the pull-back prior), which
    autoregressive decoders do not have (refused at config validation)."""
    reports_standard_normal_nll = False
    """True: evaluation also reports `nll_standard_normal_prior`, the same encoder and decoder under N(0, I)
    (the pull-back prior, whose paper reports both)."""
    latent_gan = None
    """(generator, critic) of a GAN on z that `training.fit` trains after the VAE on the encoder means
    (`training.latent_gan`; the pull-back prior's `sampler_start: latent_gan`); None: no such phase."""
    normalizer_is_estimated = False
    """True: log p(z) uses a stored estimate of log Z, re-estimated by `refresh_normalizer` after the
    prior's parameters change (the pull-back prior); exact priors are normalised by construction."""

    def __init__(self, latent_dim, **kwargs):
        super().__init__(**kwargs)
        self.latent_dim = latent_dim
        self._encode = None
        self.posterior_family = "gaussian"

    def attach_encoder(self, encode, posterior_family="gaussian"):
        """Give the prior the model's top encoder, `images -> (mean, log_var)`, and the family of q
        (`layers.posteriors.FAMILIES`) its draws follow.

        Priors built from encoded inputs (VampPrior, exemplar, pseudocoreset) need it; a plain function
        reference keeps the encoder's weights owned by the model only.
        """
        self._encode = encode
        self.posterior_family = posterior_family

    def attach_decoder(self, decode_mean):
        """Give the prior the model's decoder mean `z -> E[x | z]` (priors with `needs_decoder_mean`)."""

    def refresh_normalizer(self, seed=0):
        """Re-estimate an estimated normaliser; return its standard error (0.0: exact, nothing to do)."""
        return 0.0

    def initialize_from_data(self, images, seed):
        """Data-dependent initialisation before training (no-op unless a prior needs it)."""

    def finish_training(self, images, seed):
        """After training, before the final weights are saved: freeze what the prior estimates from the
        training `images` (the pull-back prior's log Z); returns a line for the log, or None (nothing to do)."""
        return None

    def log_prob(self, z):
        raise NotImplementedError("abstract: each prior defines log p(z)")

    def training_log_prob(self, z, batch):
        """log p(z) inside a training step, given the training `batch` dict ({"image", "index", ...}).

        The same as `log_prob` unless the prior trains differently from how it evaluates (the exemplar
        prior's subsampled, leave-one-out mixture).
        """
        return self.log_prob(z)

    def density(self, batch=None):
        """`z -> log p(z)` for many z of one batch (inner loops such as SVI refinement): the evaluation
        form, or the training form for the training `batch`. Priors whose log density has a part that does
        not depend on z (the VampPrior's encoded pseudo-inputs) compute it once here."""
        if batch is None:
            return self.log_prob
        return lambda z: self.training_log_prob(z, batch)

    def batch_index_draws(self):
        """{name: count}: training-set indices the data pipeline adds to every training batch, drawn
        uniformly with replacement per (seed, epoch, step) (the exemplar prior's candidates); none by default."""
        return {}

    def sample(self, num_samples, seed=None):
        raise NotImplementedError("abstract: each prior defines its sampler")

    def sampling_modes(self):
        """{name: function (num_samples, seed) -> (z, MALA acceptance rate or None)}: the ways of sampling this
        prior that the evaluation compares by Frechet distance (VAEPP's three rows); {} for one sampler."""
        return {}

    def component_sample(self, index, num_samples, seed=None):
        """Samples from mixture component `index` (only for priors with components)."""
        raise NotImplementedError(f"abstract: {type(self).__name__} has no mixture components")

    def component_log_weights(self):
        """log mixture weights [num_components] (uniform unless a prior learns them)."""
        if not self.num_components:
            raise NotImplementedError(f"abstract: {type(self).__name__} has no mixture components")
        return ops.full((self.num_components,), -math.log(self.num_components))

    def component_inputs(self):
        """Image-shaped inputs that define the components (pseudo-inputs, pseudocoreset points), or None.

        Evaluation shows them as images; priors whose components are not images return None.
        """
        return None

    def kernel_sample(self, images, seed=None):
        """z ~ r(z | x) for each image: the prior's component kernel centred on an arbitrary input.

        Priors built from encoded inputs define it (exemplar-conditioned and iterative generation,
        augmentation from the prior component of an example); the others raise.
        """
        raise NotImplementedError(f"{type(self).__name__} has no input-conditioned kernel")

    def call(self, z):
        return self.log_prob(z)

    def get_config(self):
        return {**super().get_config(), "latent_dim": self.latent_dim}

    @classmethod
    def from_config(cls, config):
        return layer_from_config(cls, config)
