"""`LatentVariableModel`: what every VAE of the zoo shares (objective, trackers, generation, the IWAE
log-likelihood, Keras serialization, presets).

Architectures subclass it, register with `ARCHITECTURES`, and implement `encode`, `elbo_terms`,
`log_importance_weights`, `decode` and `reconstruct`; the prior is a separate layer with `log_prob` /
`sample`, attached to the top encoder; the likelihood is the decoder's output head.
"""

import dataclasses
import math
from dataclasses import dataclass

import keras
import numpy as np
from keras import ops

import layers.buffer_weights  # noqa: F401  (registers a procedure_state layer for deserialization)
from layers.likelihoods import LIKELIHOODS
from layers.priors import PRIORS
from layers.priors.mixture import split_seed
from layers.registry import Registry, choice, option
from zoo.compiled import model_function
from zoo.stepped_model import SteppedModel

ARCHITECTURES = Registry("architecture", package="zoo.architectures", key="architecture", section="model")


@dataclass
class ModelConfig:
    """The `model` section every architecture shares; an architecture with more options subclasses it."""

    latent_dim: int = option(40, minimum=1)
    """Size of z (vae) and of both z1 and z2 (hvae, conv_hvae)."""
    hidden_units: int = option(300, minimum=1)
    """Width of the gated dense layers."""
    likelihood: object = choice(LIKELIHOODS, "bernoulli")
    """p(x | z): a section {name: ..., options} or just the name."""
    prior: object = choice(PRIORS, "standard_normal")
    """p(z) of the top latent: a section {name: ..., options} or just the name."""


NESTED_LAYERS = ("likelihood", "prior")
DEFAULT_IWAE_MAX_BATCH = 5000


class LatentVariableModel(SteppedModel):
    """Base of every architecture.

    Args:
        image_shape: (H, W, C).
        latent_dim: size of the (top) latent.
        likelihood: a `layers.likelihoods.Likelihood`.
        prior: a `layers.priors.Prior` over the top latent.
        hidden_units: width of the gated dense layers.
        seed: seed of the model's `SeedGenerator` (reparameterisation noise).
        num_train: size of the training set the model was built for (recorded; priors over the training
            set also take it).

    Example:
        model = LatentVariableModel.from_preset("vamp_vae_mnist10k")
        log_px = model.log_likelihood(images, num_samples=5000)
    """

    likelihood_head = "dense"  # "conv": the likelihood reads feature maps (ConvHVAE)
    posterior = "gaussian"  # the family of q(z | x) (layers.posteriors; VAE's `posterior` option)
    reads_grey = False  # True: training batches must carry "grey", the greyscale image before binarisation
    stochastic_layers = 1
    autoregressive = False
    tiny_options = {}
    """Section options of a small but complete model of this architecture (the contract tests build it on 4x4
    images with every prior; `hidden_units` and `latent_dim` are set by the tests themselves)."""
    """True: p(x | z) is a PixelCNN, so decode / sample / reconstruct draw x pixel by pixel (zoo.autoregressive)."""
    """Number of stochastic layers; procedures that refine a single Gaussian q(z | x) (SVI, BSVI) need 1."""

    def __init__(self, image_shape, latent_dim, likelihood, prior, hidden_units=300, seed=0, num_train=None,
                 procedure_state=None, **kwargs):
        super().__init__(**kwargs)
        self.image_shape = tuple(image_shape)
        self.latent_dim = latent_dim
        self.hidden_units = hidden_units
        self.seed = seed
        self.num_train = num_train
        self.likelihood = likelihood
        self.prior = prior
        self.seed_generator = keras.random.SeedGenerator(seed)
        self.kl_weight = self.add_weight(name="kl_weight", shape=(), initializer="ones", trainable=False)
        self.trackers = [keras.metrics.Mean(name=n) for n in ("loss", "reconstruction", "kl")]
        self.procedure_state = procedure_state  # weights a training procedure owns (BSVI-pi's buffer weights)
        self.kl_warmup_iterations = 0  # set by training.fit: beta rises per step instead of per epoch
        self.kl_warmup_start = 0.0

    def add_trackers(self, names):
        """Epoch-mean metrics for more train-step logs (a procedure's), before compiling."""
        known = {m.name for m in self.trackers}
        self.trackers = self.trackers + [keras.metrics.Mean(name=n) for n in names if n not in known]

    def finish_build(self):
        """Attach the prior to the top encoder and create every weight with one dummy forward pass."""
        self.prior.attach_encoder(self.encode, self.posterior)
        if self.prior.needs_decoder_mean:
            self.prior.attach_decoder(self.decoder_mean)
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

    @property
    def joint_latent_dim(self):
        """Size of all latents together (z for a VAE, [z1, z2] for the hierarchical models)."""
        raise NotImplementedError("abstract: architectures define joint_latent_dim")

    def log_joint(self, x, z):
        """log p(x, z) for all latents z [B, joint_latent_dim] (the model's prior on the top latent)."""
        raise NotImplementedError("abstract: architectures define log_joint")

    def conditional_log_prob(self, x, z):
        """log p(x | z) per row, for single-latent architectures (SVI refinement scores z it chose itself)."""
        raise NotImplementedError(f"{type(self).__name__} has {self.stochastic_layers} stochastic layers: "
                                  "log p(x | z) of one latent is defined for single-latent architectures")

    def inference_variables(self):
        """The trainable variables of q(z | x) (phi); every other trainable variable is generative (theta)."""
        raise NotImplementedError(f"abstract: {type(self).__name__} does not split its variables into phi and theta")

    def decode(self, z, seed=None):
        """Mean image of p(x | z) for top latents z (lower latents drawn from their conditional prior);
        autoregressive decoders draw x ~ p(x | z) instead (their mean needs every pixel's past)."""
        raise NotImplementedError("abstract: architectures define decode")

    def decoder_mean(self, z):
        """G(z) = E[x | z] as a deterministic, differentiable function of the top latent (the pull-back prior's
        generator; the hierarchical models put z1 at its conditional mean). Autoregressive decoders have none."""
        raise NotImplementedError(f"{type(self).__name__} has no decoder mean E[x | z]")

    def reconstruct(self, x, seed=None):
        """Image decoded from the posterior means (`seed`: the draw of an autoregressive decoder)."""
        raise NotImplementedError("abstract: architectures define reconstruct")

    # --- shared ---------------------------------------------------------------------------------------
    def reparameterize(self, mean, log_var, seed=None):
        eps = keras.random.normal(ops.shape(mean), seed=self.seed_generator if seed is None else seed)
        return mean + ops.exp(0.5 * log_var) * eps

    def training_view(self, x, batch, option):
        """What the encoder (option "encoder_input") or the likelihood ("training_target") reads: x, or in a
        training step with that option at grey (VAE's options), the batch's greyscale image e."""
        if batch is None or getattr(self, option, "image") != "grey":
            return x
        if "grey" not in batch:
            raise ValueError(f"{option}: grey needs training batches with a 'grey' image "
                             "(training.data.train_dataset(..., keep_grey=True))")
        return ops.convert_to_tensor(batch["grey"])

    def prior_log_prob(self, z, batch=None):
        """log p(z): the prior's training form inside a training step, its evaluation form otherwise."""
        if batch is None:
            return self.prior.log_prob(z)
        if "image" in batch:  # a prior that encodes the batch reads what the encoder reads
            batch = {**batch, "image": self.training_view(batch["image"], batch, "encoder_input")}
        return self.prior.training_log_prob(z, batch)

    def sample(self, num_samples, seed=None):
        """Images from the generative model: z ~ p(z), x = E[x | z]."""
        prior_seed, decode_seed = split_seed(self.seed_generator if seed is None else seed, 2)
        return self.decode(self.prior.sample(num_samples, seed=prior_seed), seed=decode_seed)

    def train_update(self, data):
        if self.kl_warmup_iterations:  # beta = start + (1 - start) t / T at step t (0-based), then 1
            t = ops.cast(self.optimizer.iterations, "float32")
            start = self.kl_warmup_start
            self.kl_weight.assign(ops.minimum(1.0, start + (1.0 - start) * t / self.kl_warmup_iterations))
        return super().train_update(data)

    def objective(self, data, training):
        x = data["image"]
        terms = self.elbo_terms(x, batch=data if training else None)
        reconstruction = -terms["log_px"]
        kl_weight = self.kl_weight if training else 1.0
        loss = ops.mean(reconstruction + kl_weight * terms["kl"])
        return loss, {"loss": loss, "reconstruction": ops.mean(reconstruction), "kl": ops.mean(terms["kl"])}

    def call(self, x):
        return self.reconstruct(x)

    # --- the importance-sampled log-likelihood (the one IWAE estimator) ----------------------------------
    def log_likelihood_estimate(self, x, num_samples, encoder_x=None):
        """In-graph IWAE estimate log (1/S) sum_s p(x, z_s) / q(z_s | x) per image (Burda et al.; VampPrior
        paper Eq. 19). `num_samples` may be symbolic (SavedModel signatures): S is counted from the weights.
        `encoder_x`: the proposal q(z | e) reads these images instead of x (VAEPP's grey test images)."""
        if encoder_x is None:
            log_w = self.log_importance_weights(x, num_samples)
        else:
            log_w = self.log_importance_weights(x, num_samples, encoder_x=encoder_x)
        log_s = ops.log(ops.sum(ops.ones_like(log_w[:1]), axis=1))
        return ops.logsumexp(log_w, axis=1) - log_s

    def log_likelihood(self, images, num_samples, max_batch=DEFAULT_IWAE_MAX_BATCH, progress=None, encoder_images=None):
        """Per-image IWAE log p(x) (float64 NumPy) with `num_samples` samples, at most `max_batch` (image,
        sample) pairs per compiled call, merged in log space, so memory is bounded for any S.

        `progress` is called with the number of images finished after each group (a progress bar).
        `encoder_images` (one per image): the proposal's input, e.g. the grey e behind a binarised x."""
        if encoder_images is None:
            estimate = model_function(self, "log_likelihood_estimate", self.log_likelihood_estimate, static_argnums=(1,))
        else:
            encoded = model_function(self, "log_likelihood_estimate_encoded", self.log_likelihood_estimate,
                                     static_argnums=(1,))
            estimate = None
        sample_chunk = min(num_samples, max_batch)
        images_per_call = max(1, max_batch // num_samples)
        result = np.empty(len(images), dtype="float64")
        for start in range(0, len(images), images_per_call):
            x = images[start: start + images_per_call]
            log_sum = np.full(len(x), -np.inf)
            for done in range(0, num_samples, sample_chunk):
                s = min(sample_chunk, num_samples - done)
                if estimate is not None:
                    value = estimate(x, s)
                else:
                    value = encoded(x, s, encoder_images[start: start + images_per_call])
                chunk = ops.convert_to_numpy(value).astype("float64") + math.log(s)
                log_sum = np.logaddexp(log_sum, chunk)
            result[start: start + len(x)] = log_sum - math.log(num_samples)
            if progress is not None:
                progress(len(x))
        if not np.all(np.isfinite(result)):
            bad = int(np.sum(~np.isfinite(result)))
            raise FloatingPointError(f"log-likelihood is not finite for {bad} of {len(result)} images")
        return result

    # --- building from a config section, Keras serialization, presets --------------------------------
    @classmethod
    def options_fields(cls):
        """The architecture's own options (its config section without the nested likelihood and prior)."""
        return [f.name for f in dataclasses.fields(cls.Config) if f.name not in NESTED_LAYERS]

    def get_config(self):
        config = {"name": self.name, "trainable": self.trainable, "image_shape": list(self.image_shape),
                  "seed": self.seed, "num_train": self.num_train}
        config.update({key: getattr(self, key) for key in self.options_fields()})
        config.update({key: keras.saving.serialize_keras_object(getattr(self, key)) for key in NESTED_LAYERS})
        if self.procedure_state is not None:
            config["procedure_state"] = keras.saving.serialize_keras_object(self.procedure_state)
        return config

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        for key in (*NESTED_LAYERS, "procedure_state"):
            if isinstance(config.get(key), dict):  # built by the model's own first pass, as when built from YAML
                layer_config = {k: v for k, v in config[key].items() if k != "build_config"}
                config[key] = keras.saving.deserialize_keras_object(layer_config, custom_objects=custom_objects)
        config.pop("dtype", None)
        return cls(**config)

    @classmethod
    def from_preset(cls, name_or_path, sha256=None, cache_dir=None):
        """The ready model of a preset (a registered name, a preset folder, or a URL with `sha256`).

        Called on a subclass, the preset must hold that architecture."""
        from zoo.presets import load_preset

        model = load_preset(name_or_path, sha256=sha256, cache_dir=cache_dir).model
        if not isinstance(model, cls):
            raise TypeError(f"preset '{name_or_path}' holds a {type(model).__name__}, not a {cls.__name__}; "
                            f"load it with LatentVariableModel.from_preset or {type(model).__name__}.from_preset")
        return model


def build_model(options, image_shape, seed=0, num_train=None):
    """The Keras model a validated `model` section describes (architecture x likelihood x prior).

    `num_train` (the training-set size N) is needed by priors defined over the training set (exemplar,
    bype); a run's `fit` passes it, and the model records it."""
    cls = ARCHITECTURES[options.architecture]
    likelihood = LIKELIHOODS.build(options.likelihood, image_shape=image_shape, head=cls.likelihood_head,
                                   name="likelihood")
    prior = PRIORS.build(options.prior, latent_dim=options.latent_dim, image_shape=image_shape,
                         num_train=num_train, seed=seed, name="prior")
    return ARCHITECTURES.build(options, image_shape=image_shape, likelihood=likelihood, prior=prior, seed=seed,
                               num_train=num_train, name=options.architecture)
