"""The VAEPP code's pre-activation ResNet networks (`layers.resnet`), the `resnet_vae` architecture and the
pull-back prior's ResNet critics: shapes on the code's and on odd image sizes, the block against a NumPy
convolution with its own weights, the encoder's log-sigma clip, and every likelihood on the conv head."""

import keras
import numpy as np
import pytest
from keras import ops

from layers.likelihoods import LIKELIHOODS
from layers.resnet import (DECODER_BLOCKS, NETWORKS, PreActResidualBlock, PreActResidualDeconvBlock,
                           resnet_critic, resnet_decoder_trunk, resnet_encoder_trunk, scaled)
from training import config as config_lib
from zoo.base import build_model

NATIVE = {"mnist": (28, 28, 1), "cifar10": (32, 32, 3), "celeba": (64, 64, 3)}
ODD = [(28, 20, 1), (5, 5, 1)]
SHAPE_CASES = [(n, NATIVE[n]) for n in NETWORKS] + [(n, s) for n in NETWORKS for s in ODD]


def _np(x):
    return np.asarray(ops.convert_to_numpy(x), dtype=np.float64)


def _images(n, shape, seed=0):
    return np.random.default_rng(seed).uniform(-1.0, 1.0, (n, *shape)).astype("float32")


@pytest.mark.parametrize("network,shape", SHAPE_CASES, ids=[f"{n}-{'x'.join(map(str, s))}" for n, s in SHAPE_CASES])
def test_networks_keep_the_image_resolution(network, shape):
    """Encoder: flat features; decoder: maps at exactly H x W (cropped where 2^k does not divide them);
    critic: one energy per image, [B, 1]."""
    if keras.backend.backend() == "jax" and (network, shape) != ("mnist", (5, 5, 1)):
        pytest.skip("budget: JAX compiles every operation and initializer per shape (6-20 s per case here); on "
                    "JAX the mnist networks run at 5x5 only, where every stride-2 'same' convolution and transposed "
                    "convolution meets an odd size and the decoder crops (the same blocks as the other networks)")
    x = _images(2, shape)
    features = resnet_encoder_trunk(network, width=0.25)(x)
    assert len(features.shape) == 2 and features.shape[0] == 2
    maps = resnet_decoder_trunk(network, shape, width=0.25)(np.zeros((2, 5), "float32"))
    assert tuple(maps.shape) == (2, shape[0], shape[1], scaled(DECODER_BLOCKS[network][-1][0], 0.25))
    assert tuple(resnet_critic(network, width=0.25)(x).shape) == (2, 1)


def leaky(x):
    return np.where(x > 0, x, 0.2 * x)


def numpy_conv_same(x, kernel, bias, stride):
    """'same' cross-correlation by the definition: ceil(n / stride) outputs, the padding split with the extra
    row / column at the end, each output the sum over its k x k window."""
    k = kernel.shape[0]

    def pads(n):
        out = -(-n // stride)
        total = max((out - 1) * stride + k - n, 0)
        return out, (total // 2, total - total // 2)

    (rows, pad_rows), (cols, pad_cols) = pads(x.shape[1]), pads(x.shape[2])
    padded = np.pad(x, ((0, 0), pad_rows, pad_cols, (0, 0)))
    y = np.zeros((x.shape[0], rows, cols, kernel.shape[-1]))
    for i in range(rows):
        for j in range(cols):
            window = padded[:, i * stride: i * stride + k, j * stride: j * stride + k, :]
            y[:, i, j] = np.einsum("bhwc,hwco->bo", window, kernel)
    return y + bias


@pytest.mark.parametrize("filters,strides", [(3, 1), (5, 2)], ids=["identity_shortcut", "projection_shortcut"])
def test_block_is_preactivation_residual(filters, strides):
    """act -> conv (input channels) -> act -> conv (stride, filters) + shortcut, recomputed in NumPy from the
    block's own weights (random biases, so a bias in the wrong place shows)."""
    x = _images(2, (5, 6, 3), seed=1)
    block = PreActResidualBlock(filters, strides=strides)
    block.build(x.shape)
    rng = np.random.default_rng(2)
    for v in block.weights:
        v.assign(rng.normal(size=tuple(v.shape)).astype("float32") * 0.5)
    w = {v.path.split("/")[-2] + "/" + v.name: _np(v) for v in block.weights}
    hidden = numpy_conv_same(leaky(x), w["conv/kernel"], w["conv/bias"], 1)
    assert hidden.shape[-1] == 3  # the first convolution keeps the input's channels
    residual = numpy_conv_same(leaky(hidden), w["conv_1/kernel"], w["conv_1/bias"], strides)
    if strides == 1 and filters == 3:
        assert block.shortcut is None
        shortcut = x
    else:
        shortcut = numpy_conv_same(x, w["shortcut/kernel"], w["shortcut/bias"], strides)
    np.testing.assert_allclose(_np(block(x)), residual + shortcut, rtol=1e-4, atol=1e-4)


def test_deconv_block_resizes_in_its_first_convolution():
    x = _images(2, (3, 4, 6))
    block = PreActResidualDeconvBlock(4, strides=2)
    assert tuple(block(x).shape) == (2, 6, 8, 4) == block.compute_output_shape((2, 3, 4, 6))
    assert block.conv.filters == 4 and block.conv.strides == (2, 2) and block.conv_1.strides == (1, 1)
    assert block.shortcut.kernel_size == (1, 1) and block.shortcut.strides == (2, 2)
    assert PreActResidualDeconvBlock(6).compute_output_shape((2, 3, 4, 6)) == (2, 3, 4, 6)


def resnet_vae(image_shape=(8, 8, 1), likelihood="bernoulli", prior="standard_normal", **options):
    """A resnet_vae from a YAML-like model section, as `fit` builds it."""
    raw = {"architecture": "resnet_vae", "latent_dim": 3, "likelihood": likelihood, "prior": prior,
           "width": 0.125, **options}
    return build_model(config_lib.from_dict({"model": raw}).model, image_shape, seed=0, num_train=10)


def test_resnet_vae_defaults_and_log_std_clip():
    """The section's defaults are the code's MNIST-NLL model; the encoder's log sigma is clipped from below at
    `log_std_min` (log_var = 2 log_std_min), and its zero kernels make q the same for every image at init."""
    defaults = config_lib.from_dict({"model": {"architecture": "resnet_vae"}}).model
    assert (defaults.network, defaults.latent_dim, defaults.width, defaults.log_std_min) == ("mnist", 13, 1.0, -5.0)
    model = resnet_vae(log_std_min=-3.0)
    assert model.likelihood.head == "conv" and model.get_config()["log_std_min"] == -3.0
    x = _images(4, (8, 8, 1))
    mean, log_var = (_np(t) for t in model.encode(x))
    np.testing.assert_allclose(mean, 0.0)
    np.testing.assert_allclose(log_var, 0.0)
    head = model.encoder_head.log_std_head
    head.bias.assign(np.full(tuple(head.bias.shape), -50.0, "float32"))
    head.kernel.assign(np.random.default_rng(0).normal(size=tuple(head.kernel.shape)).astype("float32"))
    np.testing.assert_allclose(_np(model.encode(x)[1]), -6.0)


@pytest.mark.parametrize("likelihood", LIKELIHOODS.names())
def test_every_likelihood_reads_the_decoder_maps(likelihood):
    """The decoder's maps at image resolution feed the likelihood's 1x1 head: parameters of the image's shape
    and a finite ELBO, here on a non-square colour image the decoder crops to."""
    shape = (6, 5, 3)
    model = resnet_vae(shape, likelihood=likelihood)
    x = (np.random.default_rng(3).random((2, *shape)) < 0.5).astype("float32")
    params = model.decoder_params(ops.zeros((2, 3)))
    assert all(tuple(p.shape) == (2, *shape) for p in params)
    terms = model.elbo_terms(x)
    assert np.all(np.isfinite(_np(terms["log_px"]))) and np.all(np.isfinite(_np(terms["kl"])))


def test_pull_back_prior_with_a_resnet_critic():
    """critic: resnet_mnist builds the code's critic at `critic_width` on the model's images; log p is finite."""
    prior = {"name": "pull_back", "critic": "resnet_mnist", "critic_width": 0.25, "sampler_start": "sir",
             "normalizer_samples": 256}
    model = resnet_vae(prior=prior)
    critic = model.prior.critic
    assert isinstance(critic.layers[0], PreActResidualBlock) and critic.layers[0].filters == 4
    assert model.prior.get_config()["critic_width"] == 0.25
    x = _images(3, (8, 8, 1))
    assert tuple(critic(x).shape) == (3, 1)
    z = np.random.default_rng(4).normal(size=(3, 3)).astype("float32")
    model.prior.refresh_normalizer()
    assert np.all(np.isfinite(_np(model.prior.log_prob(ops.convert_to_tensor(z)))))
