"""SVI and Buffered SVI training (BSVI paper Algorithm 1; Section 4.1 learned pi; Section 4.2 double
sampling; Section 5 SIR), registered as `svi`, `bsvi`, `bsvi_pi`, `bsvi_ds` and `bsvi_sir`.

One train step: lambda_0 = f_phi(x); k SVI steps inside the compiled step (`zoo.svi.refine`, no gradient
through them); then two gradients with one optimizer (so gradient clipping is global over both groups):
- phi (the encoder, `model.inference_variables()`) on the amortised ELBO at lambda_0, l_0 (line 12);
- theta (every other trainable weight: decoder, likelihood, prior, the buffer weights pi) on l_k (SVI,
  line 14) or on log sum_i pi_i w_i over the whole trajectory (BSVI, line 16); BSVI-SIR replaces the latter
  by log p(x, z) at m indices resampled with probabilities pi_i w_i / sum_j pi_j w_j (Eq. 24), whose
  theta-gradient has the same expectation (Lemma 1) at SVI's cost.
The KL warm-up weight beta multiplies log p(z) - log q in every weight (the SVI steps included), as
SA-VAE's code anneals its SVI objective. Every step also logs the Section 6.5 health check at beta = 1:
the SVI-0, SVI-k and BSVI-k bounds of the minibatch (BSVI-k >= SVI-k >= SVI-0 is expected).
"""

from dataclasses import dataclass

import keras
from keras import ops

from layers.autodiff import gradients
from layers.buffer_weights import BufferWeights
from layers.registry import option
from training.procedures.base import PROCEDURES, Procedure
from zoo.svi import (SVIOptions, bsvi_bound, check_single_latent, draw_noise, log_buffer_weights,
                     log_weight_terms, refine, score)


@dataclass
class SVIConfig(SVIOptions):
    steps: int = option(10, minimum=1)
    """k SVI steps per training example (k' = 10 in the paper's SVI baseline)."""


@dataclass
class BSVIConfig(SVIOptions):
    steps: int = option(9, minimum=1)
    """k SVI steps: the buffer holds k + 1 importance weights (k = 9, so that BSVI and the k' = 10 baselines
    have 10 weights each)."""
    learn_weights: bool = False
    """Learn one global pi on the simplex (softmax of k + 1 logits, trained with theta; Section 4.1);
    false keeps pi uniform, 1 / (k + 1)."""
    double_sampling: bool = False
    """Score each w_i on a second, independent z_i ~ q(z; lambda_i) instead of the z_i of the SVI step
    (BSVI-DS, Section 4.2: the weights become independent given the trajectory)."""


@dataclass
class BSVIPiConfig(BSVIConfig):
    learn_weights: bool = True
    """As in `bsvi`; on by default here."""


@dataclass
class BSVIDSConfig(BSVIConfig):
    double_sampling: bool = True
    """As in `bsvi`; on by default here."""


@dataclass
class BSVISIRConfig(BSVIConfig):
    resamples: int = option(1, minimum=1)
    """m indices resampled per image for theta's gradient (Eq. 24); m = 1 has SVI's cost."""


class Refinement(Procedure):
    """What SVI and BSVI share: the trajectory, phi's update on l_0, and the health-check logs."""

    metric_names = ("svi_0_bound", "svi_k_bound", "bsvi_k_bound")
    single_latent = True

    def check_model(self, model):
        check_single_latent(model, f"the {self.registered_name} procedure")

    @property
    def svi_options(self):
        return SVIOptions(**{k: self.options[k] for k in ("learning_rate", "momentum", "clip_norm", "gradient", "estimator")})

    def log_pi(self, model):
        return log_buffer_weights(self.options["steps"] + 1)

    def theta_loss(self, model, data, trajectory, noise):
        """(loss, logs) for theta from the constant trajectory; logs hold `log_w` [k + 1, B] at beta = 1."""
        raise NotImplementedError("abstract: SVI and BSVI define theta's objective")

    def train_update(self, model, data):
        x = data["image"]
        k = self.options["steps"]
        phi = model.inference_variables()
        phi_ids = {id(v) for v in phi}
        theta = [v for v in model.trainable_variables if id(v) not in phi_ids]
        mean0, log_var0 = model.encode(x)
        noise = draw_noise(model, k + 1, ops.shape(mean0))
        trajectory = refine(model, x, mean0, log_var0, noise[:k], model.prior.density(data), self.svi_options,
                            kl_weight=model.kl_weight)

        def encoder_loss():  # Algorithm 1 line 12: phi on l_0, the amortised ELBO at lambda_0(phi)
            mean, log_var = model.encode(x)
            z = mean + ops.exp(0.5 * log_var) * noise[0]
            log_px, log_ratio = log_weight_terms(model, x, z, mean, log_var, model.prior.density(data))
            loss = -ops.mean(log_px + model.kl_weight * log_ratio)
            return loss, {"reconstruction": -ops.mean(log_px), "kl": -ops.mean(log_ratio)}

        _, encoder_logs, phi_grads = gradients(encoder_loss, phi)
        loss, logs, theta_grads = gradients(lambda: self.theta_loss(model, data, trajectory, noise), theta)
        model.optimizer.apply(phi_grads + theta_grads, phi + theta)
        log_w = logs.pop("log_w")
        logs.update(encoder_logs)
        logs.update({"loss": loss, "svi_0_bound": ops.mean(log_w[0]), "svi_k_bound": ops.mean(log_w[-1]),
                     "bsvi_k_bound": ops.mean(bsvi_bound(log_w, ops.stop_gradient(self.log_pi(model))))})
        return model.update_trackers(logs)


@PROCEDURES.register("svi", SVIConfig)
class SVI(Refinement):
    """Algorithm 1 "train with SVI": theta on the single-sample ELBO at lambda_k (Krishnan et al. 2018)."""

    def theta_loss(self, model, data, trajectory, noise):
        x, k = data["image"], self.options["steps"]
        log_px, log_ratio = score(model, x, trajectory.means[k:], trajectory.log_vars[k:], noise[k:],
                                  model.prior.density(data))
        loss = -ops.mean(log_px[0] + model.kl_weight * log_ratio[0])
        exact = ops.stop_gradient(log_px + log_ratio)
        return loss, {"log_w": ops.concatenate([trajectory.log_px + trajectory.log_ratio, exact], axis=0)}


@PROCEDURES.register("bsvi", BSVIConfig)
class BSVI(Refinement):
    """Algorithm 1 "train with BSVI": theta on log sum_i pi_i w_i over the k + 1 weights of the trajectory."""

    def state_layer(self):
        if self.options["learn_weights"]:
            return BufferWeights(self.options["steps"] + 1, name="bsvi_buffer_weights")
        return None

    def log_pi(self, model):
        if self.options["learn_weights"]:
            return model.procedure_state.log_pi()
        return super().log_pi(model)

    def weight_noise(self, model, noise):
        """The noise of the weights: the SVI steps' own (dependent samples) or a fresh draw (BSVI-DS)."""
        if self.options["double_sampling"]:
            return draw_noise(model, ops.shape(noise)[0], ops.shape(noise)[1:])
        return noise

    def theta_loss(self, model, data, trajectory, noise):
        x = data["image"]
        log_px, log_ratio = score(model, x, trajectory.means, trajectory.log_vars, self.weight_noise(model, noise),
                                  model.prior.density(data))
        bound = bsvi_bound(log_px + model.kl_weight * log_ratio, self.log_pi(model))
        return -ops.mean(bound), {"log_w": ops.stop_gradient(log_px + log_ratio)}


@PROCEDURES.register("bsvi_pi", BSVIPiConfig)
class BSVIPi(BSVI):
    """BSVI with one learned global pi (BSVI-k-pi)."""


@PROCEDURES.register("bsvi_ds", BSVIDSConfig)
class BSVIDS(BSVI):
    """BSVI with double sampling (BSVI-k-DS)."""


@PROCEDURES.register("bsvi_sir", BSVISIRConfig)
class BSVISIR(BSVI):
    """BSVI-SIR (Eq. 24): theta's gradient is the mean of grad log p(x, z) over m indices resampled from
    Cat(pi_i w_i / sum_j pi_j w_j); the weights are scored without gradient, the m points with it. The
    logged loss is the BSVI bound itself; with learned pi, pi is trained on that bound (its gradient is
    exact and cheap: the weights are constants)."""

    def theta_loss(self, model, data, trajectory, noise):
        x, m = data["image"], self.options["resamples"]
        density = model.prior.density(data)
        weight_noise = self.weight_noise(model, noise)
        if self.options["double_sampling"]:
            log_px, log_ratio = score(model, x, trajectory.means, trajectory.log_vars, weight_noise, density)
        else:  # l_0..l_{k-1} were scored by the SVI steps themselves: only l_k is new
            last_px, last_ratio = score(model, x, trajectory.means[-1:], trajectory.log_vars[-1:], noise[-1:], density)
            log_px = ops.concatenate([trajectory.log_px, last_px], axis=0)
            log_ratio = ops.concatenate([trajectory.log_ratio, last_ratio], axis=0)
        log_px, log_ratio = ops.stop_gradient(log_px), ops.stop_gradient(log_ratio)
        log_w = log_px + model.kl_weight * log_ratio  # [k + 1, B]
        log_pi = self.log_pi(model)
        logits = ops.transpose(log_w + ops.stop_gradient(log_pi)[:, None])  # [B, k + 1]
        index = keras.random.categorical(logits, m, seed=model.seed_generator)  # [B, m]
        pick = ops.transpose(ops.one_hot(index, ops.shape(log_w)[0]), (1, 0, 2))  # [m, B, k + 1]
        means, log_vars, eps = (ops.einsum("mbi,ibd->mbd", pick, t)
                                for t in (trajectory.means, trajectory.log_vars, weight_noise))
        z = means + ops.exp(0.5 * log_vars) * eps  # [m, B, d]
        d = ops.shape(z)[2]
        x_rep = ops.reshape(ops.repeat(x[None], m, axis=0), (-1, *ops.shape(x)[1:]))
        log_px_z = ops.reshape(model.conditional_log_prob(x_rep, ops.reshape(z, (-1, d))), (m, -1))
        log_pz = ops.stack([density(z[j]) for j in range(m)])
        surrogate = -ops.mean(log_px_z + model.kl_weight * log_pz)
        negative_bound = -ops.mean(bsvi_bound(log_w, log_pi))
        # value: the negative BSVI bound; gradient: SIR's estimate for the model, the exact one for pi
        return surrogate - ops.stop_gradient(surrogate) + negative_bound, {"log_w": log_px + log_ratio}
