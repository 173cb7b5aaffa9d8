"""Model behaviour under the active backend: shapes for every architecture and image size, the ELBO and
IWAE code paths agree, the IWAE bound tightens with S, and the optimizer normalises gradients."""

import math

import keras
import numpy as np
import pytest
from keras import ops

from training import config as config_lib
from zoo.compiled import backend_function
from training.optimizers import AdamNormGrad
from layers.priors import PRIORS
from zoo.base import LatentVariableModel, build_model

SHAPES = [(28, 28, 1), (28, 20, 1), (32, 32, 3), (8, 8, 1)]


def small_model(architecture, prior="vampprior", image_shape=(8, 8, 1), likelihood="bernoulli", seed=0):
    config = config_lib.from_dict({"model": {
        "architecture": architecture, "latent_dim": 4, "hidden_units": 32, "likelihood": likelihood,
        "prior": {"name": prior, **({"components": 5} if prior in PRIORS.owners("components") else {})}}})
    return build_model(config.model, image_shape, seed=seed)


def binary_images(n, shape, seed=0):
    return (np.random.default_rng(seed).random((n, *shape)) < 0.3).astype("float32")


@pytest.mark.parametrize("architecture", ["vae", "hvae", "conv_hvae"])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_every_architecture_handles_every_image_size(architecture, shape):
    """ELBO terms, importance weights, reconstructions, samples and encodings have the image's shape."""
    if keras.backend.backend() == "jax" and architecture == "conv_hvae" and shape != (28, 20, 1):
        pytest.skip("budget: eager JAX compiles ConvHVAE per image shape (~20 s each); the shape arithmetic is "
                    "backend-independent keras.ops, checked at every size on TensorFlow and PyTorch and at the "
                    "non-square size on JAX")
    model = small_model(architecture, image_shape=shape)
    x = ops.convert_to_tensor(binary_images(3, shape))
    terms = model.elbo_terms(x)
    assert tuple(terms["log_px"].shape) == (3,) and tuple(terms["kl"].shape) == (3,)
    assert tuple(model.log_importance_weights(x, 4).shape) == (3, 4)
    assert tuple(model.reconstruct(x).shape) == (3, *shape)
    samples = ops.convert_to_numpy(model.sample(2, seed=1))
    assert samples.shape == (2, *shape) and samples.min() >= 0.0 and samples.max() <= 1.0
    mean, log_var = model.encode(x)
    assert tuple(mean.shape) == (3, 4) and float(ops.max(log_var)) <= 2.0 and float(ops.min(log_var)) >= -6.0


def test_reference_vae_parameter_count():
    """784-300-300-40 gated MLP encoder and decoder (reference table 1.1): 1,116,864 parameters."""
    config = config_lib.load(config_lib.Path(__file__).resolve().parents[1] / "zoo" / "standard_vae.yaml")
    model = build_model(config.model, (28, 28, 1))
    gated = lambda i, o: i * 2 * o + 2 * o
    dense = lambda i, o: i * o + o
    expected = (gated(784, 300) + gated(300, 300) + 2 * dense(300, 40)
                + gated(40, 300) + gated(300, 300) + dense(300, 784))
    trainable = sum(math.prod(v.shape) for v in model.trainable_weights)
    assert trainable == expected == 1_116_864


# S per architecture: the conv decoder costs ~10x a dense one per sample (63 s for S = 2000 on JAX), so it
# checks k up to 100 on 500 samples
IWAE_SAMPLES = {"vae": (2000, (1, 10, 100, 1000)), "hvae": (2000, (1, 10, 100, 1000)), "conv_hvae": (500, (1, 10, 100))}


@pytest.mark.parametrize("architecture", list(IWAE_SAMPLES))
def test_iwae_paths_agree_and_bound_tightens_with_samples(architecture):
    """S=1 importance weights average to the ELBO; E[IWAE_k] grows with k (Burda et al., Theorem 1)."""
    model = small_model(architecture, seed=3)
    samples, ks = IWAE_SAMPLES[architecture]
    x = ops.convert_to_tensor(binary_images(20, (8, 8, 1), seed=1))
    weights_fn = backend_function(model, model.log_importance_weights, static_argnums=(1,))
    log_w = ops.convert_to_numpy(weights_fn(x, samples)).astype("float64")  # [20, S]
    elbos = np.stack([ops.convert_to_numpy(model.elbo_terms(x)["log_px"] - model.elbo_terms(x)["kl"]) for _ in range(10)])
    # Two independent code paths estimate the same ELBO: within 5 standard errors.
    per_image_sd = log_w.std(axis=1)
    np.testing.assert_allclose(elbos.mean(), log_w.mean(), atol=5 * per_image_sd.mean() / math.sqrt(200) + 0.05)
    iwae = []
    for k in ks:
        groups = log_w[:, : (samples // k) * k].reshape(20, -1, k)
        iwae.append(np.mean(np.logaddexp.reduce(groups, axis=2) - math.log(k)))
    assert all(a < b for a, b in zip(iwae, iwae[1:])), iwae


class KnownWeights:
    """Stands in for a model: log w[b, j] = sum(x_b) + log(j + 1) for the j-th sample of a call; the IWAE
    estimate and its chunking are the model base class's own."""

    variables = []
    log_likelihood_estimate = LatentVariableModel.log_likelihood_estimate
    log_likelihood = LatentVariableModel.log_likelihood

    def log_importance_weights(self, x, num_samples):
        j = ops.cast(ops.arange(num_samples), "float32")
        return ops.sum(ops.reshape(x, (ops.shape(x)[0], -1)), axis=1)[:, None] + ops.log(j + 1.0)[None, :]


@pytest.mark.parametrize("max_batch,chunks", [(150, [150, 150, 100]), (10_000, [400]), (400, [400])])
def test_log_likelihood_merges_sample_chunks_exactly(max_batch, chunks):
    """Chunks of samples are merged with a running logsumexp and normalised by the total S once."""
    x = binary_images(6, (8, 8, 1), seed=2)
    result = KnownWeights().log_likelihood(x, num_samples=400, max_batch=max_batch)
    per_sample = np.concatenate([np.log(np.arange(1, c + 1)) for c in chunks])
    expected = x.reshape(6, -1).sum(1) + np.logaddexp.reduce(per_sample) - math.log(400)
    np.testing.assert_allclose(result, expected, rtol=1e-6)


def test_adam_norm_grad_normalises_each_tensor():
    """With AdamNormGrad the first step is independent of the gradient's scale (per tensor)."""
    def first_step(scale):
        v = keras.Variable(np.ones((3,), "float32"))
        w = keras.Variable(np.ones((2,), "float32"))
        opt = AdamNormGrad(learning_rate=0.1)
        opt.build([v, w])
        opt.apply([ops.convert_to_tensor(np.array([3.0, 0.0, 4.0], "float32") * scale),
                   ops.convert_to_tensor(np.array([1.0, 1.0], "float32"))], [v, w])
        return ops.convert_to_numpy(v), ops.convert_to_numpy(w)

    small, large = first_step(1e-3), first_step(1e3)
    np.testing.assert_allclose(small[0], large[0], rtol=1e-5)
    # Adam's first step moves every coordinate with a non-zero gradient by lr (sign of the gradient)
    np.testing.assert_allclose(small[0], [0.9, 1.0, 0.9], atol=1e-4)
    assert float(AdamNormGrad().epsilon) == 1e-8


BSVI_LIKELIHOOD = {"name": "discretized_logistic", "scale": "global", "min_scale": 0.001}


@pytest.mark.parametrize("architecture", ["vae", "conv_hvae"])
def test_global_scale_discretized_logistic_model_builds_and_round_trips(architecture, tmp_path):
    """model.likelihood: {name: discretized_logistic, scale: global, min_scale: 0.001} (BSVI, Appendix D): one
    trainable log-scale and no log-scale head; the ELBO and IWAE paths run, the loss reaches the log-scale,
    and the model survives get_config / from_config and a .keras save / load with the same outputs."""
    from layers.autodiff import gradients, tracked_state

    model = small_model(architecture, likelihood=dict(BSVI_LIKELIHOOD), seed=4)
    lik = model.likelihood
    assert (lik.scale, lik.min_scale, lik.parameters) == ("global", 0.001, ("mean",))
    assert [layer.name for layer in lik.heads] == ["mean_head"]
    log_scale_paths = [v.path for v in model.trainable_weights if "log_scale" in v.path]
    assert len(log_scale_paths) == 1 and "head" not in log_scale_paths[0]
    lik.log_scale.assign(-1.2)
    x = ops.convert_to_tensor(((np.random.default_rng(5).integers(0, 256, (3, 8, 8, 1)) + 0.5) / 256).astype("float32"))
    assert tuple(model.log_importance_weights(x, 4).shape) == (3, 4)
    assert tuple(model.reconstruct(x).shape) == (3, 8, 8, 1)

    def loss():
        terms = model.elbo_terms(x)
        return -ops.mean(terms["log_px"]), None

    if keras.backend.backend() == "jax":  # as a train step runs it: inside tracked_state over every variable
        state = list(model.variables)
        with tracked_state(state, [v.value for v in state]) as scope:
            _, _, (grad,) = gradients(loss, [lik.log_scale])
        for v in state:
            v.assign(scope.get_current_value(v))
    else:
        _, _, (grad,) = gradients(loss, [lik.log_scale])
    assert float(ops.convert_to_numpy(grad)) != 0.0

    z = ops.convert_to_tensor(np.random.default_rng(6).normal(size=(3, model.joint_latent_dim)).astype("float32"))

    def outputs(m):  # deterministic: the encoder, the decoder's mean and log p(x, z) at fixed z
        return [ops.convert_to_numpy(t) for t in (*m.encode(x), m.reconstruct(x), m.log_joint(x, z))]

    clone = type(model).from_config(model.get_config())
    assert clone.get_config() == model.get_config()
    assert clone.likelihood.get_config() == lik.get_config()
    clone.set_weights(model.get_weights())
    for a, b in zip(outputs(clone), outputs(model), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)

    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert loaded.get_config() == model.get_config() and loaded.likelihood.scale == "global"
    assert float(ops.convert_to_numpy(loaded.likelihood.log_scale)) == pytest.approx(-1.2)
    for a, b in zip(loaded.get_weights(), model.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(outputs(loaded), outputs(model), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
