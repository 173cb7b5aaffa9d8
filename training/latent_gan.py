"""VAEPP's latent-GAN phase (section 1.9 of the VAEPP reference), run by `training.fit` after the VAE.

The VAE is frozen; a WGAN-div GAN learns the distribution of the training set's encoder means mu(e), so the
pull-back prior's MALA chains start from z0 = G_w(n), n ~ N(0, I), near the aggregate posterior instead of
N(0, I). One train step of `LatentGANTrainer` takes critic_steps x B real codes and runs, as the code does,

    critic_steps x  (critic)     min_k  mean D_k(real) - mean D_k(G_w(n)) + k mean ||grad D_k(z~)||^p,
    once            (generator)  min_w  mean D_k(G_w(n)),

with z~ on the line between the real and the generated codes (WGAN-div-1 in z-space, not multiplied by w)
and each net on its own Adam(learning_rate, 0.5, 0.999), created fresh for the phase. The nets are the
prior's layers, so the trained GAN is saved, exported and served with the model. Shuffling, noise and
penalty draws all derive from the run's seed: rerunning the phase (a resumed run that stopped inside it)
gives the same GAN.
"""

import contextlib
import re

import keras
import numpy as np
from keras import ops

from layers.autodiff import gradient_step
from layers.penalties.wgan_div_1 import WGANDivInterpolates
from zoo.stepped_model import SteppedModel

LOG_NAMES = ("critic_loss", "generator_loss", "penalty")


class LatentGANTrainer(SteppedModel):
    """The two nets of a prior's latent GAN as one Keras model, trained with `fit` on batches of real codes.

    Args:
        generator, critic: the prior's networks (shared layers: training them trains the prior).
        latent_dim: size of z and of the generator's noise.
        critic_steps: critic steps per generator step; a batch holds critic_steps equal chunks.
        penalty_weight, penalty_exponent: k and p of the z-space WGAN-div penalty.
        seed: seed of the noise and of the interpolation coefficients.
    """

    def __init__(self, generator, critic, latent_dim, critic_steps=5, penalty_weight=2.0, penalty_exponent=6.0,
                 seed=0, **kwargs):
        super().__init__(**kwargs)
        self.generator = generator
        self.critic = critic
        self.latent_dim = int(latent_dim)
        self.critic_steps = int(critic_steps)
        self.penalty = WGANDivInterpolates(penalty_weight, penalty_exponent)
        self.seed_generator = keras.random.SeedGenerator(seed)
        self.trackers = [keras.metrics.Mean(name=n) for n in LOG_NAMES]
        self.built = True  # the nets are the prior's, already built; nothing else has weights

    @property
    def metrics(self):
        return self.trackers

    def optimizers(self, learning_rate):
        """(generator Adam, critic Adam) and the MultiOptimizer that holds both (so `fit` can compile)."""
        from keras.src.optimizers.multi_optimizer import OptimizerMap

        self.generator_optimizer = keras.optimizers.Adam(learning_rate, beta_1=0.5, beta_2=0.999, name="generator_adam")
        self.critic_optimizer = keras.optimizers.Adam(learning_rate, beta_1=0.5, beta_2=0.999, name="critic_adam")
        paths = {re.escape(v.path): self.generator_optimizer for v in self.generator.trainable_variables}
        return keras.optimizers.MultiOptimizer(OptimizerMap(default_optimizer=self.critic_optimizer, optimizer_map=paths))

    def score(self, z):
        return ops.reshape(self.critic(z), (-1,))

    def generate(self, size):
        return self.generator(keras.random.normal((size, self.latent_dim), seed=self.seed_generator))

    def train_update(self, data):
        real_codes, _, _ = keras.utils.unpack_x_y_sample_weight(data)
        chunks = ops.split(real_codes, self.critic_steps, axis=0)
        size = ops.shape(chunks[0])[0]
        logs = {}
        for real in chunks:
            def critic_loss(real=real):
                fake = ops.stop_gradient(self.generate(size))
                zeta = self.penalty(self.score, real, fake, seed=self.seed_generator)
                loss = ops.mean(self.score(real)) - ops.mean(self.score(fake)) + zeta
                return loss, {"critic_loss": loss, "penalty": zeta}

            _, logs = gradient_step(critic_loss, self.critic.trainable_variables, self.critic_optimizer)

        def generator_loss():
            loss = ops.mean(self.score(self.generate(size)))
            return loss, {"generator_loss": loss}

        _, generator_logs = gradient_step(generator_loss, self.generator.trainable_variables, self.generator_optimizer)
        self.optimizer.iterations.assign_add(1)  # the sub-optimizers count their own steps
        return self.update_trackers({**logs, **generator_logs})


def train(prior, images, seed):
    """Train `prior.latent_gan` on the encoder means of `images` with the prior's `latent_gan` options; returns
    (the trainer, its last epoch's logs). Raises ValueError when one step needs more codes than there are."""
    options = prior.latent_gan_options
    per_step = options["critic_steps"] * options["batch_size"]
    codes = prior.encoded(images)[0]
    steps = len(codes) // per_step
    if steps == 0:
        raise ValueError(f"the latent GAN's step takes critic_steps x batch_size = {per_step} codes but the training "
                         f"set has {len(codes)} images; lower model.prior.latent_gan.batch_size")
    generator, critic = prior.latent_gan
    with trainable(generator, critic):
        trainer = LatentGANTrainer(generator, critic, prior.latent_dim, options["critic_steps"],
                                   options["penalty_weight"], options["penalty_exponent"], seed=seed,
                                   name="latent_gan_trainer")
        trainer.compile(optimizer=trainer.optimizers(options["learning_rate"]))
        rng = np.random.default_rng(seed)
        logs = {}
        for epoch in range(options["epochs"]):
            order = rng.permutation(len(codes))[: steps * per_step]
            history = trainer.fit(codes[order], batch_size=per_step, epochs=1, shuffle=False, verbose=0)
            logs = {k: float(v[-1]) for k, v in history.history.items()}
            if not all(np.isfinite(v) for v in logs.values()):
                raise FloatingPointError(f"latent GAN epoch {epoch + 1}: non-finite loss {logs}; lower "
                                         "model.prior.latent_gan.learning_rate")
    return trainer, logs


@contextlib.contextmanager
def trainable(*nets):
    """The GAN's nets are frozen in the prior (the VAE's steps and optimizer never see them) but in this phase."""
    for net in nets:
        net.trainable = True
    try:
        yield
    finally:
        for net in nets:
            net.trainable = False


def run_phase(model, images, seed):
    """The phase `training.fit` runs after the VAE when the prior has a latent GAN; returns a line for the log."""
    _, logs = train(model.prior, images, seed)
    options = model.prior.latent_gan_options
    return (f"latent GAN trained for {options['epochs']} epochs on {len(images)} encoder means: "
            + ", ".join(f"{k} {v:.4f}" for k, v in logs.items()))
