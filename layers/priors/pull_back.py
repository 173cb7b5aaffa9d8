"""VAEPP's pull-back prior (Chen et al. 2020): the standard normal reshaped by a critic on data space.

    log p(z) = log N(z; 0, I) - beta D(G(z)) - log Z,        beta = w sigmoid(xi),

G is the model's decoder mean E[x | z] (`attach_decoder`), D a critic owned by the prior (small D = real),
xi a learned scalar that starts at 0 (beta = w / 2), and log Z = log E_N[exp(-beta D(G(eps)))] a
non-trainable estimate, so a saved or exported model carries the normaliser it was evaluated with. With
w = 0 the tilt is exactly 0 and the prior is the standard normal bit for bit.

Partition-function estimators (section 1.2 of the VAEPP reference), all in log space:
- N-proposal: log Z_N = logmeanexp_j(-beta D(G(eps_j))), eps_j ~ N(0, I); the code floors its code-form
  value (which adds (d/2) log 2 pi) at -20 (`normal_log_z_floor: code`);
- q-proposal: log Z_q = logmeanexp_i(log N(z_i) - beta D(G(z_i)) - log q(z_i | e_i)) + log M, z_i ~ q(z | e_i),
  e_i a training image: q(z) = (1/M) sum_n q(z | e_n) >= q(z | e_i) / M, so Z_q bounds Z from above and
  the NLL evaluated with it is an upper bound. M is the training-set size (`aggregate_size: paper`) or the
  code's 50000 (`code`);
- training mixture: log (Z_N + Z_q) / 2 (the code's and the paper's training estimate);
- aggregate posterior (this project's default outside the training loss): z ~ (1/N) sum_n q(z | e_n),
  weighted by f(z) over that exact mixture density: unbiased in Z and consistent, where the bound above
  is loose by up to log M when posteriors overlap (an untrained encoder: about log N nats).

The training estimator enters the loss through `training_log_normalizer`; `log_z` follows the model before
every validation pass (`follow_training_set`, the prior's callback in `fit`) and is frozen after training
with more draws (`finish_training`), from the `normalizer_proposal` (aggregate, or the code's bound).

Sampling (`sample`): chains start from sampling-importance-resampling draws of N(0, I) proposals weighted
by exp(-beta D(G(z))), then run `mala_steps` MALA transitions on U(z) = beta D(G(z)) + |z|^2 / 2
(`layers.mala`).
"""

import dataclasses
import math
from dataclasses import dataclass

import keras
import numpy as np
from keras import ops

from layers.distributions import LOG_2PI, log_standard_normal
from layers.latent_gan import GENERATOR_OUTPUTS, latent_critic, latent_generator
from layers.priors.base import PRIORS, Prior
from layers.priors.mixture import split_seed
from layers.registry import option
from layers.resnet import NETWORKS as RESNET_NETWORKS, resnet_critic

CODE_AGGREGATE_SIZE = 50000  # `len_train` of every MNIST / Fashion / Omniglot config of the official code
CODE_LOG_Z_FLOOR = -20.0  # the code's max(log Z_N, -20), on its code-form value (with (d/2) log 2 pi)
LOG_NORMALIZER_KEY = "pull_back_log_normalizer"
"""Key of a training batch that carries the step's estimate of log Z (set by the vaepp procedures, which
also log it); without it the prior estimates it from the batch images itself."""
CRITICS = ("mlp", *(f"resnet_{network}" for network in RESNET_NETWORKS))  # resnet_*: the code's (section 1.6)
ESTIMATORS = ("mixture", "normal", "posterior")
START_KINDS = ("latent_gan", "sir", "normal")


@dataclass
class LatentGANConfig:
    epochs: int = option(100, minimum=1)
    """Passes of the critic over the training set's encoder means. The official code trains the GAN in every
    epoch after the VAE's (`warm_up_start`: 1000 on MNIST) until the run ends."""
    batch_size: int = option(128, minimum=1)
    """Real codes per critic step (the code's 128)."""
    critic_steps: int = option(5, minimum=1)
    """Critic steps per generator step (the code's 5)."""
    learning_rate: float = option(1e-4, exclusive_minimum=0)
    """Adam step size of both nets (beta_1 0.5, beta_2 0.999), reset at the phase start as in the code."""
    units: int = option(40, minimum=1)
    """Width of every hidden layer: 5 in the generator, 6 in the critic (the MNIST code's)."""
    weight_norm: bool = True
    """Weight-normalised dense layers, as the code's (`layers.dense.WeightNormDense`)."""
    generator_output: str = option("code", choices=GENERATOR_OUTPUTS)
    """code: the generator's output layer also has the leaky ReLU (the code's arg_scope quirk); linear: none."""
    penalty_weight: float = option(2.0, minimum=0)
    """k of the WGAN-div penalty on z-space interpolates (not multiplied by w, as in the code)."""
    penalty_exponent: float = option(6.0, minimum=2)
    """p of that penalty: 6 in every latent-GAN file of the code."""


@dataclass
class PullBackConfig:
    energy_weight: float = option(10.0, minimum=0)
    """w: beta = w sigmoid(xi) stays in (0, w) and starts at w / 2. The code uses 10 for the Bernoulli MNIST,
    static MNIST and Omniglot models, 20 for Fashion, 1000 for CIFAR-10 and CelebA. 0: the standard normal."""
    critic: str = option("mlp", choices=CRITICS)
    """D on data space: mlp, a leaky-ReLU MLP (`critic_units` wide) | resnet_mnist, resnet_cifar10,
    resnet_celeba: the official code's pre-activation ResNet critics (section 1.6; `critic_width`)."""
    critic_units: int = option(64, minimum=1)
    """Width of the two hidden layers of the MLP critic."""
    critic_width: float = option(1.0, exclusive_minimum=0)
    """Channel multiplier of the ResNet critics (`layers.resnet`): max(1, round(channels * critic_width));
    1 is the code's."""
    normal_samples: int = option(128, minimum=1)
    """eps ~ N(0, I) per training step for the N-proposal (the code's train_n_pz)."""
    normalizer_proposal: str = option("aggregate", choices=("aggregate", "code"))
    """The proposal of the log Z used for validation and frozen after training, z ~ q(z | e) over the training
    set: aggregate, importance sampling from the exact aggregate posterior (1/N) sum_n q(z | e_n)
    (unbiased and consistent); code, the paper's and code's bound q(z | e) / M (an upper bound on Z in
    expectation, loose by up to log M where posteriors overlap, e.g. early in training)."""
    normalizer_support: str = option("full", choices=("full", "code"))
    """The q of that proposal: full, the Gaussian with the encoder's mean and variance whatever the model's q
    (its support is all of R^d, so the estimate is consistent) | code, the model's own q, as the code does: a
    truncated q covers the union of the mean +- 2 sigma boxes only and misses the mass of f outside them
    (biased low, so the NLL is optimistic: by tens of nats on the 40-d MLP of benchmarks/vaepp.py)."""
    validation_normalizer_draws: int = option(5000, minimum=1)
    """Draws of that estimate before every validation pass while training."""
    final_normalizer_draws: int = option(50000, minimum=1)
    """Draws of the log Z frozen after training (`finish_training`); the code's MNIST evaluation uses
    60000 x 1000 draws of its bound."""
    normalizer_samples: int = option(65536, minimum=1)
    """eps ~ N(0, I) when log Z is re-estimated outside training with the N-proposal (before training and
    after the prior's parameters moved: `refresh_normalizer`); the frozen value uses the q-proposal."""
    training_estimator: str = option("mixture", choices=ESTIMATORS)
    """log Z in the training loss: the (Z_N + Z_q) / 2 mixture of code and paper, or one proposal alone; the
    q-proposal draws one z ~ q(z | e) per batch image (`batch_log_normalizer`), under every procedure."""
    normal_log_z_floor: str = option("code", choices=("code", "paper"))
    """code: log Z_N floored at -20 in the code's form (log Z_N + (d/2) log 2 pi >= -20); paper: no floor."""
    aggregate_size: str = option("paper", choices=("paper", "code"))
    """M of the q-proposal: the real training-set size (paper), or the code's 50000 whatever the data,
    which lowers log Z by log(N / 50000) (about 0.18 nats below the true value on MNIST's 60000)."""
    sampler_start: str = option("latent_gan", choices=START_KINDS)
    """Where the MALA chains start: latent_gan, draws of a GAN trained on the encoder means after the VAE
    (paper and code, section 1.9; `latent_gan` section); sir, sampling-importance-resampling of N(0, I)
    proposals weighted by exp(-beta D(G(z))) (no extra training phase); normal, N(0, I) itself (with
    mala_steps 0: the paper's plain N(0, I) decoding, the third row of its FID comparison)."""
    latent_gan: LatentGANConfig = dataclasses.field(default_factory=LatentGANConfig)
    """The latent GAN of `sampler_start: latent_gan`, trained by `training.latent_gan` after the VAE."""
    sampler_proposals: int = option(32, minimum=1)
    """N(0, I) proposals per sample of the SIR start (`sampler_start: sir`)."""
    mala_steps: int = option(100, minimum=0)
    """MALA transitions per sample (the official sampler runs about 1920)."""
    mala_step_size: float = option(1e-5, exclusive_minimum=0)
    """Fixed MALA step alpha: 1e-5 MNIST, 5e-5 CIFAR / CelebA / static MNIST / Omniglot, 5e-6 Fashion."""

    def __post_init__(self):
        given = self.latent_gan if isinstance(self.latent_gan, dict) else dataclasses.asdict(self.latent_gan)
        if self.sampler_start != "latent_gan" and given != dataclasses.asdict(LatentGANConfig()):
            raise ValueError(f"latent_gan: the latent GAN is trained only with sampler_start: latent_gan (here "
                             f"{self.sampler_start}); set sampler_start: latent_gan or remove the latent_gan section")


def _dense(units, name, activation=None):
    return keras.layers.Dense(units, activation=activation, name=name)


def mlp_critic(units, name):
    """flatten -> 2 x Dense(units, leaky ReLU 0.2) -> Dense(1), for any image shape."""
    leaky = lambda t: ops.leaky_relu(t, 0.2)  # noqa: E731
    return keras.Sequential([keras.layers.Flatten(), _dense(units, "hidden_1", leaky), _dense(units, "hidden_2", leaky),
                             _dense(1, "energy")], name=name)


@PRIORS.register("pull_back", PullBackConfig)
class PullBackPrior(Prior):
    """p(z) proportional to N(z; 0, I) exp(-beta D(G(z))) (see the module docstring).

    Args:
        latent_dim: size of z.
        image_shape: shape of the critic's input (the decoder's images).
        num_train: N, the training-set size (M of the q-proposal in paper mode).
        Remaining arguments: the options of `PullBackConfig`.
    """

    needs_decoder_mean = True
    normalizer_is_estimated = True
    reports_standard_normal_nll = True
    # test-sized: fewer N-proposals, a one-epoch latent GAN; in 1-D a chain that mixes (step 0.3 over 40 steps)
    # forgets its start (an untrained GAN's draws), so the contract's KS check tests MALA as the exact sampler
    tiny_options = {"normal_samples": 16, "normalizer_samples": 4096, "validation_normalizer_draws": 500,
                    "final_normalizer_draws": 500, "sampler_proposals": 16, "mala_steps": 40,
                    "mala_step_size": 0.3, "latent_gan": {"epochs": 1, "batch_size": 8, "critic_steps": 1, "units": 8}}

    def __init__(self, latent_dim, image_shape, num_train=None, energy_weight=10.0, critic="mlp", critic_units=64,
                 critic_width=1.0, normal_samples=128, normalizer_samples=65536, normalizer_proposal="aggregate",
                 normalizer_support="full",
                 validation_normalizer_draws=5000, final_normalizer_draws=50000, training_estimator="mixture",
                 normal_log_z_floor="code", aggregate_size="paper", sampler_start="latent_gan", latent_gan=None,
                 sampler_proposals=32, mala_steps=100, mala_step_size=1e-5, seed=0, **kwargs):
        super().__init__(latent_dim, **kwargs)
        self.image_shape = tuple(image_shape)
        self.num_train = None if num_train is None else int(num_train)
        self.energy_weight = float(energy_weight)
        self.critic_kind = critic
        self.critic_units = int(critic_units)
        self.critic_width = float(critic_width)
        self.normal_samples = int(normal_samples)
        self.normalizer_samples = int(normalizer_samples)
        self.normalizer_proposal = normalizer_proposal
        self.normalizer_support = normalizer_support
        self.validation_normalizer_draws = int(validation_normalizer_draws)
        self.final_normalizer_draws = int(final_normalizer_draws)
        self.training_estimator = training_estimator
        self.normal_log_z_floor = normal_log_z_floor
        self.aggregate_size = aggregate_size
        self.sampler_start = sampler_start
        self.latent_gan_options = {**dataclasses.asdict(LatentGANConfig()), **(latent_gan or {})}
        self.sampler_proposals = int(sampler_proposals)
        self.mala_steps = int(mala_steps)
        self.mala_step_size = float(mala_step_size)
        self.seed = seed
        self._decode_mean = None
        self.seed_generator = keras.random.SeedGenerator(seed + 7919)
        if critic == "mlp":
            self.critic = mlp_critic(self.critic_units, name="critic")
        else:
            self.critic = resnet_critic(critic.removeprefix("resnet_"), self.critic_width, name="critic")
        if sampler_start == "latent_gan":
            gan = self.latent_gan_options
            self.gan_generator = latent_generator(latent_dim, gan["units"], weight_norm=gan["weight_norm"],
                                                  output=gan["generator_output"])
            self.gan_critic = latent_critic(gan["units"], weight_norm=gan["weight_norm"])
            for net in self.latent_gan:  # frozen in the VAE's steps; `training.latent_gan` unfreezes them
                net.trainable = False

    def build(self, input_shape=None):
        self.critic.build((None, *self.image_shape))
        if self.latent_gan is not None:
            for net in self.latent_gan:
                net.build((None, self.latent_dim))
        self.xi = self.add_weight(name="xi", shape=(), initializer="zeros")
        self.log_z = self.add_weight(name="log_z", shape=(), initializer="zeros", trainable=False)
        self.log_z_stderr = self.add_weight(name="log_z_stderr", shape=(), initializer="zeros", trainable=False)
        self.built = True

    # --- the parts -------------------------------------------------------------------------------------
    @property
    def latent_gan(self):
        """(generator, critic) of the latent GAN, trained after the VAE by `training.latent_gan`; None with
        `sampler_start: sir`."""
        if self.sampler_start != "latent_gan":
            return None
        return self.gan_generator, self.gan_critic

    def attach_decoder(self, decode_mean):
        """Give the prior G, the model's `z -> E[x | z]` (a plain reference: the model owns the weights)."""
        self._decode_mean = decode_mean

    def beta(self):
        return self.energy_weight * ops.sigmoid(self.xi)

    def energy(self, x):
        """D(x) per image, [B] (small D: real)."""
        return ops.reshape(self.critic(x), (-1,))

    def tilt(self, z):
        """beta D(G(z)) per row; exactly 0 when w = 0."""
        if self._decode_mean is None:
            raise RuntimeError("the pull_back prior needs the model's decoder mean (attach_decoder)")
        if self.energy_weight == 0.0:
            return ops.zeros_like(z[:, 0])
        return self.beta() * self.energy(self._decode_mean(z))

    def log_unnormalized(self, z):
        """log N(z; 0, I) - beta D(G(z))."""
        return log_standard_normal(z) - self.tilt(z)

    def potential(self, z):
        """U(z) = beta D(G(z)) + |z|^2 / 2, the MALA target's energy (-log p(z) up to a constant)."""
        return self.tilt(z) + 0.5 * ops.sum(ops.square(z), axis=-1)

    def log_prob(self, z):
        return self.log_unnormalized(z) - self.log_z

    # --- partition-function estimators ----------------------------------------------------------------
    def _floor(self, log_z):
        if self.normal_log_z_floor != "code":
            return log_z
        code_offset = 0.5 * self.latent_dim * LOG_2PI  # the code's Z includes (2 pi)^(d/2)
        return ops.maximum(log_z, CODE_LOG_Z_FLOOR - code_offset)

    def log_normalizer_normal(self, eps):
        """log Z_N from proposals eps [n, d] ~ N(0, I) (floored in code mode)."""
        n = ops.cast(ops.shape(eps)[0], "float32")
        return self._floor(ops.logsumexp(-self.tilt(eps)) - ops.log(n))

    def aggregate_count(self):
        """M of the q-proposal."""
        if self.aggregate_size == "code":
            return CODE_AGGREGATE_SIZE
        if self.num_train is None:
            raise ValueError("the pull_back prior's q-proposal needs the training-set size (build_model(..., num_train=N)) "
                             "or model.prior.aggregate_size=code")
        return self.num_train

    def log_normalizer_posterior(self, z, log_q):
        """log Z_q from z_i ~ q(z | e_i) [n, d] with their log q [n], one per training image e_i."""
        n = ops.cast(ops.shape(z)[0], "float32")
        return ops.logsumexp(self.log_unnormalized(z) - log_q) - ops.log(n) + math.log(self.aggregate_count())

    def training_log_normalizer(self, z=None, log_q=None, seed=None):
        """The training estimate of log Z: the mixture log (Z_N + Z_q) / 2, or one proposal, with fresh eps."""
        estimator = self.training_estimator if z is not None else "normal"
        parts = []
        if estimator in ("mixture", "normal"):
            eps = keras.random.normal((self.normal_samples, self.latent_dim), seed=seed or self.seed_generator)
            parts.append(self.log_normalizer_normal(eps))
        if estimator in ("mixture", "posterior"):
            parts.append(self.log_normalizer_posterior(z, log_q))
        if len(parts) == 1:
            return parts[0]
        return ops.logaddexp(parts[0], parts[1]) - math.log(2.0)

    def batch_log_normalizer(self, images):
        """The training estimate of log Z for one batch: the `training_estimator`, whose q-proposal draws one
        z ~ q(z | e) per batch image (its own draw: an unbiased estimate either way; the code reuses the
        ELBO's z)."""
        from layers.posteriors import log_posterior_density, sample_posterior

        if self.energy_weight == 0.0:  # the standard normal: Z = 1 exactly
            return 0.0
        if self.training_estimator == "normal":
            return self.training_log_normalizer()
        mean, log_var = self._encode(images)
        z = sample_posterior(mean, log_var, self.posterior_family, seed=self.seed_generator)
        return self.training_log_normalizer(z, log_posterior_density(z, mean, log_var, self.posterior_family))

    def density(self, batch=None):
        """Evaluation: log p with the stored log Z. Training: log Z-hat of the batch computed once (the step's
        estimate where the batch carries one, `LOG_NORMALIZER_KEY`), differentiable, for every z of the step."""
        if batch is None:
            return self.log_prob
        log_z = batch.get(LOG_NORMALIZER_KEY)
        if log_z is None:
            log_z = self.batch_log_normalizer(batch.get("image"))
        return lambda z: self.log_unnormalized(z) - log_z

    def training_log_prob(self, z, batch):
        return self.density(batch)(z)

    def set_log_normalizer(self, log_z, stderr=0.0):
        self.log_z.assign(float(log_z))
        self.log_z_stderr.assign(float(stderr))

    def estimate_log_normalizer(self, images=None, num_samples=1, batch_size=500, posterior=None, seed=0,
                                proposal=None):
        """(log Z, its standard error) in float64 NumPy, frozen into `log_z` by the caller.

        Without `images`: the N-proposal with `num_samples` eps. With `images` (the training set):
        `num_samples` draws e ~ uniform(images), z ~ q(z | e), weighted by f(z) / r(z) where r is the
        `proposal` (default: the `normalizer_proposal` option): `aggregate`, the exact aggregate posterior
        (1/N) sum_n q(z | e_n) (an unbiased, consistent estimate; N Gaussian terms per draw, in float64), or
        `code`, the paper's bound q(z | e) / M (Z-hat >= Z in expectation, loose by up to log M where the
        posteriors overlap). The standard error is the delta method's sd(w) / (sqrt(n) mean(w)). No floor: the
        code floors log Z_N in training only (its evaluation uses Z_q unfloored)."""
        from layers.posteriors import log_posterior_density, sample_posterior

        if self.energy_weight == 0.0:  # the standard normal: Z = 1 exactly
            return 0.0, 0.0
        proposal = proposal or self.normalizer_proposal
        if posterior is None:  # the model's q (attach_encoder), or its untruncated Gaussian
            posterior = self.posterior_family if self.normalizer_support == "code" else "gaussian"
        rng = np.random.default_rng(seed)
        terms = []
        if images is None:
            for start, size in _chunks(num_samples, batch_size):
                eps = keras.random.normal((size, self.latent_dim), seed=int(rng.integers(2**31 - 1)))
                terms.append(ops.convert_to_numpy(-self.tilt(eps)).astype("float64"))
        else:
            means, log_vars = (a.astype("float64") for a in self.encoded(images, batch_size))
            for start, size in _chunks(num_samples, batch_size):
                pick = rng.integers(len(images), size=size)
                mean, log_var = ops.convert_to_tensor(means[pick], "float32"), ops.convert_to_tensor(log_vars[pick], "float32")
                z = sample_posterior(mean, log_var, posterior, seed=int(rng.integers(2**31 - 1)))
                log_f = ops.convert_to_numpy(self.log_unnormalized(z)).astype("float64")
                if proposal == "aggregate":
                    log_r = _log_gaussian_mixture(ops.convert_to_numpy(z).astype("float64"), means, log_vars,
                                                  family=posterior)
                else:
                    log_r = (ops.convert_to_numpy(log_posterior_density(z, mean, log_var, posterior)).astype("float64")
                             - math.log(self.aggregate_count()))
                terms.append(log_f - log_r)
        log_w = np.concatenate(terms)
        log_mean = np.logaddexp.reduce(log_w) - math.log(len(log_w))
        relative = np.exp(log_w - log_mean)
        stderr = float(np.std(relative) / math.sqrt(len(log_w)))
        return float(log_mean), stderr

    def encoded(self, images, batch_size=500):
        """(means, log-variances) of q(z | e) for every image, float32 NumPy [N, d] each, in batches: the
        q-proposal's mixture and the latent GAN's data (`training.latent_gan`)."""
        images = np.asarray(images, dtype="float32")
        parts = [self._encode(ops.convert_to_tensor(images[i: i + batch_size])) for i in range(0, len(images), batch_size)]
        return tuple(np.concatenate([ops.convert_to_numpy(part[k]) for part in parts]) for k in (0, 1))

    def refresh_normalizer(self, seed=0):
        """Re-estimate log Z with `normalizer_samples` N-proposals after the prior's parameters changed;
        returns its standard error."""
        log_z, stderr = self.estimate_log_normalizer(num_samples=self.normalizer_samples, batch_size=4096, seed=seed)
        self.set_log_normalizer(log_z, stderr)
        return stderr

    def initialize_from_data(self, images, seed):
        """log Z of the initial model, with the estimator validation uses."""
        self.follow_training_set(images, seed=seed)

    def follow_training_set(self, images, seed=0):
        """log Z from `validation_normalizer_draws` draws over the training images (before validation passes)."""
        self.set_log_normalizer(*self.estimate_log_normalizer(images, self.validation_normalizer_draws, seed=seed))

    def finish_training(self, images, seed):
        log_z, stderr = self.estimate_log_normalizer(images, num_samples=self.final_normalizer_draws, seed=seed)
        self.set_log_normalizer(log_z, stderr)
        return (f"log Z frozen at {log_z:.4f} +- {stderr:.4f} ({self.normalizer_proposal} proposal, "
                f"{self.final_normalizer_draws} draws over {len(images)} training images), "
                f"beta {float(ops.convert_to_numpy(self.beta())):.4f}")

    # --- sampling -------------------------------------------------------------------------------------
    def sir_start(self, num_samples, seed):
        """Sampling-importance-resampling from `sampler_proposals` N(0, I) proposals per sample."""
        m = self.sampler_proposals
        noise_seed, pick_seed = split_seed(seed, 2)
        proposals = keras.random.normal((num_samples * m, self.latent_dim), seed=noise_seed)
        logits = ops.reshape(-self.tilt(proposals), (num_samples, m))
        index = ops.reshape(keras.random.categorical(logits, 1, seed=pick_seed), (-1,))
        rows = ops.arange(num_samples) * m + ops.cast(index, "int32")
        return ops.take(proposals, rows, axis=0)

    def latent_gan_start(self, num_samples, seed):
        """z0 = G_w(n), n ~ N(0, I): the latent GAN's draws ("GAN-VAEPP" when decoded without MALA)."""
        generator, _ = self.latent_gan
        return generator(keras.random.normal((num_samples, self.latent_dim), seed=seed))

    def start(self, num_samples, seed, kind=None):
        """The chains' starting points, `kind` (default `sampler_start`): the latent GAN's, SIR or N(0, I)
        draws (N(0, I) whenever w = 0)."""
        kind = kind or self.sampler_start
        if kind not in START_KINDS:
            raise ValueError(f"sampler start {kind!r}: choose one of {', '.join(START_KINDS)}")
        if self.energy_weight == 0.0 or kind == "normal":
            return keras.random.normal((num_samples, self.latent_dim), seed=seed)
        if kind == "latent_gan":
            if self.latent_gan is None:
                raise ValueError("this pull_back prior has no latent GAN (sampler_start: sir); start from sir or normal")
            return self.latent_gan_start(num_samples, seed)
        return self.sir_start(num_samples, seed)

    def sample_chain(self, num_samples, seed=None, mala_steps=None, start=None):
        """(z, MALA acceptance rate): `start` then `mala_steps` transitions (defaults: the configured ones).
        The paper's three sampling rows on one trained model: VAEPP (the defaults), GAN-VAEPP
        (`mala_steps=0`) and N(0, I) decoding (`mala_steps=0, start="normal"`)."""
        from layers.mala import mala

        seed = self.seed_generator if seed is None else seed
        start_seed, chain_seed = split_seed(seed, 2)
        z0 = self.start(num_samples, start_seed, start)
        steps = self.mala_steps if mala_steps is None else mala_steps
        if steps == 0 or self.energy_weight == 0.0:
            return z0, ops.ones(())
        return mala(self.potential, z0, self.mala_step_size, steps, chain_seed)

    def sample(self, num_samples, seed=None):
        return self.sample_chain(num_samples, seed)[0]

    def sampling_modes(self):
        """The paper's FID rows (section 1.9): vaepp (the configured start + MALA), gan_vaepp (the latent GAN's
        draws, no MALA; only with a latent GAN), normal (N(0, I) decoding)."""
        modes = {"vaepp": lambda n, seed: self.sample_chain(n, seed)}
        if self.latent_gan is not None:
            modes["gan_vaepp"] = lambda n, seed: (self.sample_chain(n, seed, mala_steps=0, start="latent_gan")[0], None)
        modes["normal"] = lambda n, seed: (self.sample_chain(n, seed, mala_steps=0, start="normal")[0], None)
        return modes

    # --- config ---------------------------------------------------------------------------------------
    def get_config(self):
        return {**super().get_config(), "image_shape": list(self.image_shape), "num_train": self.num_train,
                "energy_weight": self.energy_weight, "critic": self.critic_kind, "critic_units": self.critic_units,
                "critic_width": self.critic_width,
                "normal_samples": self.normal_samples, "normalizer_samples": self.normalizer_samples,
                "normalizer_proposal": self.normalizer_proposal, "normalizer_support": self.normalizer_support,
                "validation_normalizer_draws": self.validation_normalizer_draws,
                "final_normalizer_draws": self.final_normalizer_draws, "training_estimator": self.training_estimator,
                "normal_log_z_floor": self.normal_log_z_floor, "aggregate_size": self.aggregate_size,
                "sampler_start": self.sampler_start, "latent_gan": dict(self.latent_gan_options),
                "sampler_proposals": self.sampler_proposals, "mala_steps": self.mala_steps,
                "mala_step_size": self.mala_step_size, "seed": self.seed}


def _log_gaussian_mixture(z, means, log_vars, chunk=2048, family="gaussian"):
    """log (1/N) sum_n q(z; mean_n, diag exp(log_var_n)) per row of z [n, d] (float64, chunked over N), q a
    Gaussian or its +-2 sigma truncation (`family`): the squared distance expanded into matrix products, so
    the cost is that of an [n, N] matmul."""
    from layers.posteriors import LOG_TRUNCATED_MASS, TRUNCATION

    inv_var = np.exp(-log_vars)
    parts = []
    for start in range(0, len(means), chunk):
        m, iv, lv = means[start: start + chunk], inv_var[start: start + chunk], log_vars[start: start + chunk]
        quad = (z ** 2) @ iv.T - 2.0 * z @ (m * iv).T + np.sum(m ** 2 * iv, axis=1)
        log_q = -0.5 * (quad + np.sum(lv, axis=1) + z.shape[1] * LOG_2PI)
        if family == "truncated_normal":  # zero outside every component's box, renormalised inside
            reach = np.max(np.abs(z[:, None, :] - m[None]) * np.sqrt(iv)[None], axis=-1)
            log_q = np.where(reach <= TRUNCATION * (1.0 + 1e-6), log_q - z.shape[1] * LOG_TRUNCATED_MASS, -np.inf)
        parts.append(log_q)
    log_terms = np.concatenate(parts, axis=1)
    return np.logaddexp.reduce(log_terms, axis=1) - math.log(len(means))


def _chunks(total, size):
    for start in range(0, total, size):
        yield start, min(size, total - start)
