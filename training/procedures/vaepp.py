"""VAEPP training (Chen et al. 2020): the pull-back prior's critic trained with the VAE, registered as `vaepp`
(paper Algorithm 2, one step) and `vaepp_naive` (Algorithm 1, a VAE step then a critic step).

`vaepp`, one Adam step on every trainable weight (encoder, decoder, the prior's critic D and xi) of

    loss = -mean log p(x | z) + KL + c * zeta + l2 * sum |kernel|^2,

where the KL uses log p(z) = log N(z) - beta D(G(z)) - log Z-hat with the training estimate of log Z (the
(Z_N + Z_q) / 2 mixture of the prior's `training_estimator`, from 128 fresh eps and one z ~ q(z | x) per
image), zeta the registered gradient penalty (`penalty`, WGAN-div-1 by default) of D between the batch and
decodes G(eps), and c = w (`penalty_weight: code`, the official code) or beta (`paper`, Algorithm 2). D sees
the same objective: max_D [-E_q beta D(G(z)) - log Z] is bounded by beta W1 (the paper's argument for the
penalty). The code clamps the batch-mean KL at 0 (`kl_clamp: code`).

`vaepp_naive` alternates 1:1 within one train step: the VAE step on the same loss without the penalty (every
weight except D's), then the critic step on mean D(x) - mean D(G(eps)) + w zeta with its own Adam
(1e-4, 0.5, 0.999), through a Keras MultiOptimizer so both optimizers' slots are checkpointed.

Both use the prior's batch estimate of log Z (`PullBackPrior.batch_log_normalizer`), as every procedure
that trains the pull-back prior does.
"""

import re
from dataclasses import dataclass

import keras
from keras import ops

from layers.autodiff import gradient_step
from layers.penalties import PENALTIES
from layers.priors.pull_back import LOG_NORMALIZER_KEY, PullBackPrior
from layers.registry import choice, option
from training.procedures.base import PROCEDURES, Procedure


@dataclass
class VAEPPConfig:
    penalty: object = choice(PENALTIES, "wgan_div_1")
    """The gradient penalty zeta on the critic (wgan_div_1: k = 2, p = 6; the MNIST code's effective p is 3)."""
    penalty_weight: str = option("code", choices=("code", "paper"))
    """c in front of zeta: code, the constant w (the prior's energy_weight); paper, beta = w sigmoid(xi)."""
    kl_clamp: str = option("code", choices=("code", "paper"))
    """code: the batch-mean KL is clamped at max(KL, 0); paper: no clamp."""
    l2: float = option(2e-4, minimum=0)
    """Weight of the L2 penalty on every kernel (the code's l2_reg; 0 turns it off)."""


@dataclass
class VAEPPNaiveConfig(VAEPPConfig):
    critic_learning_rate: float = option(1e-4, exclusive_minimum=0)
    """The critic step's Adam step size (beta_1 0.5, beta_2 0.999, as the code's)."""


def _kernels(variables):
    return [v for v in variables if v.path.endswith("kernel")]


class PullBackTraining(Procedure):
    """What both VAEPP procedures share: the checks, the estimate of log Z, the loss terms."""

    requires_prior = "pull_back"
    metric_names = ("beta", "log_z_train", "penalty")

    def __init__(self, **options):
        super().__init__(**options)
        section = dict(options["penalty"])
        self.penalty = PENALTIES[section.pop("name")](**section)

    def check_model(self, model):
        if not isinstance(model.prior, PullBackPrior):
            raise ValueError(f"the {self.registered_name} procedure trains the pull_back prior's critic; "
                             "set model.prior.name: pull_back")

    def critic_variables(self, model):
        return model.prior.critic.trainable_variables

    def elbo_loss(self, model, data):
        """(-mean log p(x | z) + weighted KL, logs) with the training estimate of log Z in log p(z)."""
        x = data["image"]
        log_z = model.prior.batch_log_normalizer(self.real_images(model, data))
        terms = model.elbo_terms(x, batch={**data, LOG_NORMALIZER_KEY: log_z})
        reconstruction = -ops.mean(terms["log_px"])
        kl = ops.mean(terms["kl"])
        if self.options["kl_clamp"] == "code":
            kl = ops.maximum(kl, 0.0)
        logs = {"reconstruction": reconstruction, "kl": kl, "beta": ops.stop_gradient(model.prior.beta()),
                "log_z_train": ops.stop_gradient(log_z)}
        return reconstruction + model.kl_weight * kl, logs

    def real_images(self, model, data):
        """The critic's real data: the batch's x, or e with the q(z | e) trick (the code's critic reads e)."""
        return model.training_view(data["image"], data, "encoder_input")

    def decoded_noise(self, model, batch_size):
        eps = keras.random.normal((batch_size, model.latent_dim), seed=model.prior.seed_generator)
        return model.decoder_mean(eps)

    def critic_penalty(self, model, real, fake):
        return self.penalty(model.prior.energy, real, fake, seed=model.prior.seed_generator)

    def l2_penalty(self, variables):
        if not self.options["l2"]:
            return 0.0
        return self.options["l2"] * sum(ops.sum(ops.square(v)) for v in _kernels(variables))


@PROCEDURES.register("vaepp", VAEPPConfig)
class VAEPP(PullBackTraining):
    """Algorithm 2: one step on the VAE loss plus the weighted gradient penalty, critic included."""

    def train_update(self, model, data):
        x = self.real_images(model, data)
        variables = model.trainable_variables  # the prior's critic and xi included

        def loss_fn():
            loss, logs = self.elbo_loss(model, data)
            zeta = self.critic_penalty(model, x, self.decoded_noise(model, ops.shape(x)[0]))
            weight = model.prior.energy_weight if self.options["penalty_weight"] == "code" else model.prior.beta()
            loss = loss + weight * zeta + self.l2_penalty(variables)
            return loss, {**logs, "loss": loss, "penalty": zeta}

        _, logs = gradient_step(loss_fn, variables, model.optimizer)
        return model.update_trackers(logs)


@PROCEDURES.register("vaepp_naive", VAEPPNaiveConfig)
class VAEPPNaive(PullBackTraining):
    """Algorithm 1: a VAE step (D fixed, no penalty), then a critic step with its own Adam."""

    def optimizer(self, model, base):
        """A MultiOptimizer: the critic's weights to Adam(critic_learning_rate, 0.5, 0.999), the rest to `base`."""
        from keras.src.optimizers.multi_optimizer import OptimizerMap

        self.vae_optimizer = base
        self.critic_optimizer = keras.optimizers.Adam(self.options["critic_learning_rate"], beta_1=0.5,
                                                      beta_2=0.999, name="critic_adam")
        paths = {re.escape(v.path): self.critic_optimizer for v in self.critic_variables(model)}
        return keras.optimizers.MultiOptimizer(OptimizerMap(default_optimizer=base, optimizer_map=paths))

    def train_update(self, model, data):
        x = self.real_images(model, data)
        critic = {id(v) for v in self.critic_variables(model)}
        vae_variables = [v for v in model.trainable_variables if id(v) not in critic]

        def vae_loss():
            loss, logs = self.elbo_loss(model, data)
            loss = loss + self.l2_penalty(vae_variables)
            return loss, {**logs, "loss": loss}

        _, logs = gradient_step(vae_loss, vae_variables, self.vae_optimizer)

        def critic_loss():
            fake = ops.stop_gradient(self.decoded_noise(model, ops.shape(x)[0]))
            zeta = self.critic_penalty(model, x, fake)
            energy = model.prior.energy
            loss = (ops.mean(energy(x)) - ops.mean(energy(fake)) + model.prior.energy_weight * zeta
                    + self.l2_penalty(self.critic_variables(model)))
            return loss, {"penalty": zeta}

        _, critic_logs = gradient_step(critic_loss, self.critic_variables(model), self.critic_optimizer)
        model.optimizer.iterations.assign_add(1)  # the sub-optimizers count their own steps
        return model.update_trackers({**logs, **critic_logs})
