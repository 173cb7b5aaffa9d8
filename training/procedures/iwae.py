"""IWAE training (Burda et al. 2016): every weight on the k-sample importance-weighted bound."""

from dataclasses import dataclass

from keras import ops

from layers.autodiff import gradient_step
from layers.registry import option
from training.procedures.base import PROCEDURES, Procedure
from zoo.svi import check_single_latent, draw_noise, score


@dataclass
class IWAEConfig:
    samples: int = option(10, minimum=1)
    """k' importance samples per image (the BSVI paper's baseline uses k' = 10)."""


@PROCEDURES.register("iwae", IWAEConfig)
class IWAE(Procedure):
    """Maximise log (1/k') sum_s p(x, z_s) / q(z_s | x) over encoder and decoder alike; the KL warm-up
    weight multiplies log p(z_s) - log q(z_s | x) inside every weight."""

    metric_names = ("iwae_bound",)
    single_latent = True

    def check_model(self, model):
        check_single_latent(model, "the iwae procedure")

    def train_update(self, model, data):
        x = data["image"]
        k = self.options["samples"]

        def loss_fn():
            mean, log_var = model.encode(x)
            noise = draw_noise(model, k, ops.shape(mean))
            means, log_vars = ops.repeat(mean[None], k, axis=0), ops.repeat(log_var[None], k, axis=0)
            density = model.prior.density(data)
            log_px, log_ratio = score(model, x, means, log_vars, noise, density)
            log_w = log_px + model.kl_weight * log_ratio
            bound = ops.logsumexp(log_w, axis=0) - ops.log(float(k))
            loss = -ops.mean(bound)
            exact = ops.logsumexp(log_px + log_ratio, axis=0) - ops.log(float(k))
            return loss, {"loss": loss, "reconstruction": -ops.mean(log_px), "kl": -ops.mean(log_ratio),
                          "iwae_bound": ops.mean(ops.stop_gradient(exact))}

        _, logs = gradient_step(loss_fn, model.trainable_variables, model.optimizer)
        return model.update_trackers(logs)
