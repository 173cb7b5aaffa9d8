"""Layers: gated blocks, He-initialised dense, likelihood heads and the Gaussian head.

Outputs are recomputed in float64 NumPy from each layer's own weights; initialisers are checked
statistically against the reference PyTorch code's distributions (non-truncated He normal for dense
kernels, U(+-1/sqrt(fan_in)) for dense biases and all conv weights).
"""

import math

import keras
import numpy as np
import pytest
import tensorflow_probability as tfp
from keras import ops
from scipy import stats

from layers.dense import HeDense
from layers.gated import GatedConv2D, GatedDense
from layers.gaussian_head import GaussianHead
from layers.likelihoods import LIKELIHOODS, MEAN_CLAMP
from layers.likelihoods.discretized_logistic import DiscretizedLogistic
from layers.likelihoods.gaussian import Gaussian
from layers.likelihoods.squared_error import SquaredError
from tests.helpers import build_likelihood
from tests.helpers import _f32, _np, _t

tfd = tfp.distributions


@pytest.fixture(autouse=True)
def _seed():
    keras.utils.set_random_seed(4321)


def _sigmoid(a):
    return 0.5 * (1.0 + np.tanh(0.5 * a))


# --------------------------------------------------------------------------------------------------
# initialiser statistics
# --------------------------------------------------------------------------------------------------


def _assert_untruncated_he_normal(kernel, fan_in):
    w = kernel.reshape(-1)
    std = math.sqrt(2.0 / fan_in)
    n = w.size
    assert abs(w.mean()) < 5 * std / math.sqrt(n)
    assert abs(w.std() / std - 1.0) < 0.02
    # a plain normal puts 4.55% of its mass beyond 2 sd; Keras's truncated HeNormal puts ~1% there and
    # nothing beyond 2.27 sd
    beyond = np.mean(np.abs(w) > 2 * std)
    assert 0.0455 - 5 * math.sqrt(0.0455 * 0.9545 / n) < beyond < 0.0455 + 5 * math.sqrt(0.0455 * 0.9545 / n)
    assert np.abs(w).max() > 3.5 * std
    assert abs(stats.kurtosis(w, fisher=False) - 3.0) < 0.15


def _assert_torch_uniform(values, fan_in, strict_max=0.95):
    v = values.reshape(-1)
    bound = 1.0 / math.sqrt(fan_in)
    assert np.abs(v).max() <= bound * (1 + 1e-6)
    assert np.abs(v).max() > strict_max * bound  # fills the interval (not a narrower one)
    assert stats.kstest(v, stats.uniform(loc=-bound, scale=2 * bound).cdf).pvalue > 1e-3


def test_gated_dense_initialisation():
    layer = GatedDense(256)
    layer.build((None, 400))
    kernel, bias = _np(layer.kernel), _np(layer.bias)
    assert kernel.shape == (400, 512) and bias.shape == (512,)
    _assert_untruncated_he_normal(kernel, 400)
    # value and gate halves are each N(0, 2 / fan_in) (two nn.Linear layers in the reference)
    for half in (kernel[:, :256], kernel[:, 256:]):
        assert abs(half.std() / math.sqrt(2 / 400) - 1.0) < 0.03
    _assert_torch_uniform(bias, 400)


def test_he_dense_initialisation_uses_input_fan_in_for_bias():
    layer = HeDense(300)
    layer.build((None, 200))
    kernel, bias = _np(layer.kernel), _np(layer.bias)
    assert kernel.shape == (200, 300) and bias.shape == (300,)
    _assert_untruncated_he_normal(kernel, 200)
    _assert_torch_uniform(bias, 200)  # bound 1/sqrt(200) = 0.0707, not 1/sqrt(units) = 0.0577
    assert np.abs(bias).max() > 1.05 / math.sqrt(300)


def test_keras_truncated_he_normal_fails_the_untruncated_check():
    # The statistical check above can tell the two apart (guards against a vacuous test).
    w = _np(keras.initializers.HeNormal(seed=0)((400, 512)))
    with pytest.raises(AssertionError):
        _assert_untruncated_he_normal(w, 400)


@pytest.mark.parametrize("c_in,k", [(16, 3), (1, 7), (3, 5)])
def test_gated_conv_initialisation(c_in, k):
    layer = GatedConv2D(32, k, strides=1, padding=k // 2)
    layer.build((None, 12, 12, c_in))
    kernel, bias = _np(layer.conv.kernel), _np(layer.conv.bias)
    assert kernel.shape == (k, k, c_in, 64) and bias.shape == (64,)
    fan_in = c_in * k * k
    _assert_torch_uniform(kernel, fan_in)
    _assert_torch_uniform(bias, fan_in, strict_max=0.85)  # only 64 draws


# --------------------------------------------------------------------------------------------------
# GatedDense forward
# --------------------------------------------------------------------------------------------------


def test_gated_dense_forward_matches_numpy():
    rng = np.random.default_rng(0)
    layer = GatedDense(3)
    x = rng.normal(size=(6, 5)) * 2
    out = _np(layer(_t(x)))
    kernel, bias = _np(layer.kernel), _np(layer.bias)
    h = x.astype(np.float32).astype(np.float64) @ kernel + bias
    want = h[:, :3] * _sigmoid(h[:, 3:])
    assert out.shape == (6, 3)
    np.testing.assert_allclose(out, want, rtol=1e-5, atol=1e-5)
    # the first `units` columns are the (linear) value, the last ones the gate, not the other way round
    assert not np.allclose(out, h[:, 3:] * _sigmoid(h[:, :3]), atol=1e-3)


def test_gated_dense_on_sequences_and_output_shape():
    rng = np.random.default_rng(1)
    layer = GatedDense(4)
    x = rng.normal(size=(2, 3, 7))
    out = _np(layer(_t(x)))
    kernel, bias = _np(layer.kernel), _np(layer.bias)
    h = x.astype(np.float32) @ kernel + bias
    np.testing.assert_allclose(out, h[..., :4] * _sigmoid(h[..., 4:]), rtol=1e-5, atol=1e-5)
    assert tuple(layer.compute_output_shape((None, 3, 7))) == (None, 3, 4)


# --------------------------------------------------------------------------------------------------
# GatedConv2D forward
# --------------------------------------------------------------------------------------------------


def _torch_out(n, k, s, p):
    return (n + 2 * p - k) // s + 1


@pytest.mark.parametrize("image_shape", [(28, 28, 1), (28, 20, 1), (32, 32, 3), (8, 8, 2)])
def test_gated_conv_output_shapes_follow_pytorch_formula(image_shape):
    h, w, c = image_shape
    x = _t(np.random.default_rng(2).uniform(size=(1, *image_shape)))
    for k, s, p in [(3, 1, 1), (3, 2, 1)]:  # stride 1 and stride 2, run for real
        layer = GatedConv2D(5, k, strides=s, padding=p)
        want = (1, _torch_out(h, k, s, p), _torch_out(w, k, s, p), 5)
        assert tuple(layer(x).shape) == want, (image_shape, k, s, p)
        assert tuple(layer.compute_output_shape((None, h, w, c))) == (None, *want[1:])
    # the other reference ConvHVAE blocks and odd/even stride-2 cases: the declared shape (the real
    # convolution is the same code path as above, checked against a direct convolution below)
    for k, s, p in [(7, 1, 3), (5, 1, 2), (5, 2, 2), (4, 2, 1), (3, 2, 0)]:
        layer = GatedConv2D(5, k, strides=s, padding=p)
        want = (None, _torch_out(h, k, s, p), _torch_out(w, k, s, p), 5)
        assert tuple(layer.compute_output_shape((None, h, w, c))) == want


def _direct_gated_conv(x, kernel, bias, stride, pad, filters):
    """Float64 cross-correlation with `pad` zeros on every side, then the gate."""
    x = np.pad(x, [(0, 0), (pad, pad), (pad, pad), (0, 0)])
    k = kernel.shape[0]
    b, h, w, _ = x.shape
    oh, ow = (h - k) // stride + 1, (w - k) // stride + 1
    out = np.zeros((b, oh, ow, kernel.shape[-1]))
    for i in range(oh):
        for j in range(ow):
            patch = x[:, i * stride : i * stride + k, j * stride : j * stride + k, :]
            out[:, i, j, :] = np.tensordot(patch, kernel, axes=([1, 2, 3], [0, 1, 2]))
    out += bias
    return out[..., :filters] * _sigmoid(out[..., filters:])


def test_gated_conv_symmetric_padding_matches_direct_convolution():
    rng = np.random.default_rng(3)
    x = rng.uniform(-1, 1, size=(2, 6, 7, 2)).astype(np.float32).astype(np.float64)  # even height, odd width
    layer = GatedConv2D(3, 3, strides=2, padding=1)
    out = _np(layer(_t(x)))
    kernel, bias = _np(layer.conv.kernel), _np(layer.conv.bias)
    want = _direct_gated_conv(x, kernel, bias, stride=2, pad=1, filters=3)
    assert out.shape == want.shape
    np.testing.assert_allclose(out, want, rtol=1e-5, atol=1e-5)
    # Keras padding="same" at stride 2 on even sizes pads (0, 1), not (1, 1): a different result
    same = _np(ops.conv(_t(x), _t(kernel), strides=2, padding="same")) + bias
    same = same[..., :3] * _sigmoid(same[..., 3:])
    assert same.shape == want.shape
    assert np.abs(same - want).max() > 1e-2


def test_gated_conv_stride_one_matches_direct_convolution():
    rng = np.random.default_rng(4)
    x = rng.uniform(0, 1, size=(2, 6, 7, 2)).astype(np.float32).astype(np.float64)
    layer = GatedConv2D(4, 5, strides=1, padding=2)
    out = _np(layer(_t(x)))
    want = _direct_gated_conv(x, _np(layer.conv.kernel), _np(layer.conv.bias), stride=1, pad=2, filters=4)
    np.testing.assert_allclose(out, want, rtol=1e-5, atol=1e-5)


def test_gated_conv_config_round_trip():
    layer = GatedConv2D(7, 3, strides=2, padding=1)
    clone = GatedConv2D.from_config(layer.get_config())
    assert (clone.filters, clone.kernel_size, clone.strides, clone.padding) == (7, 3, 2, 1)


# --------------------------------------------------------------------------------------------------
# likelihood heads
# --------------------------------------------------------------------------------------------------

IMAGE = (4, 4, 3)
BATCH = 5


def _features(head, rng, scale=1.0):
    shape = (BATCH, 20) if head == "dense" else (BATCH, *IMAGE[:2], 8)
    return _t(rng.normal(size=shape) * scale)


def _images(rng):
    return rng.integers(0, 256, size=(BATCH, *IMAGE)).astype(np.float32) / 255.0


@pytest.mark.parametrize("head", ["dense", "conv"])
@pytest.mark.parametrize("name", LIKELIHOODS.names())
def test_likelihood_heads_shapes(name, head):
    rng = np.random.default_rng(5)
    lik = build_likelihood(name, IMAGE, head, **({"variance": 0.1} if name == "gaussian" else {}))
    assert isinstance(lik, LIKELIHOODS[name])
    params = lik(_features(head, rng))
    assert len(params) == len(lik.parameters)
    for p in params:
        assert tuple(p.shape) == (BATCH, *IMAGE)
    x = _images(rng)
    if name == "bernoulli":
        x = (x > 0.5).astype(np.float32)
    log_p = _np(lik.log_prob(_t(x), params))
    assert log_p.shape == (BATCH,)
    assert np.all(np.isfinite(log_p))
    assert tuple(lik.mean(params).shape) == (BATCH, *IMAGE)


@pytest.mark.parametrize("head", ["dense", "conv"])
def test_likelihood_head_initialisation(head):
    lik = build_likelihood("discretized_logistic", IMAGE, head)
    lik(_features(head, np.random.default_rng(6)))
    assert len(lik.heads) == 2
    for layer in lik.heads:
        kernel, bias = _np(layer.kernel), _np(layer.bias)
        if head == "dense":
            assert kernel.shape == (20, 48)
            assert abs(kernel.std() / math.sqrt(2 / 20) - 1) < 0.1
            assert np.abs(bias).max() <= 1 / math.sqrt(20) + 1e-7
        else:  # 1x1 conv: kernel and bias U(+-1/sqrt(c_in))
            assert kernel.shape == (1, 1, 8, 3)
            assert np.abs(kernel).max() <= 1 / math.sqrt(8) + 1e-7
            assert np.abs(bias).max() <= 1 / math.sqrt(8) + 1e-7


@pytest.mark.parametrize("head", ["dense", "conv"])
def test_bernoulli_likelihood_values(head):
    rng = np.random.default_rng(7)
    lik = build_likelihood("bernoulli", IMAGE, head)
    (logits,) = lik(_features(head, rng, scale=3.0))
    x = (rng.uniform(size=(BATCH, *IMAGE)) > 0.5).astype(np.float64)
    got = _np(lik.log_prob(_t(x), (logits,)))
    want = tfd.Bernoulli(logits=_np(logits), dtype=np.float64).log_prob(x).numpy().sum(axis=(1, 2, 3))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(_np(lik.mean((logits,))), _sigmoid(_np(logits)), atol=1e-6)
    assert lik.is_discrete and lik.log_normalizer_offset() == 0.0


def test_discretized_logistic_transform_clamps_mean_and_log_scale():
    lik = DiscretizedLogistic(IMAGE)
    raw = np.array([-30.0, -8.0, -1.0, 0.0, 0.5, 3.0, 8.0, 30.0])
    mean, log_scale = lik.transform(_t(raw), _t(raw))
    np.testing.assert_allclose(_np(mean), np.clip(_sigmoid(raw), *MEAN_CLAMP), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(_np(log_scale), np.clip(raw, -4.5, 0.0), atol=1e-7)
    assert _np(mean).min() == pytest.approx(1 / 512, rel=1e-6)
    assert _np(mean).max() == pytest.approx(1 - 1 / 512, rel=1e-6)


@pytest.mark.parametrize("head", ["dense", "conv"])
def test_discretized_logistic_head_outputs_are_clamped(head):
    rng = np.random.default_rng(8)
    lik = build_likelihood("discretized_logistic", IMAGE, head)
    mean, log_scale = (_np(p) for p in lik(_features(head, rng, scale=200.0)))
    assert mean.min() >= 1 / 512 - 1e-7 and mean.max() <= 1 - 1 / 512 + 1e-7
    assert log_scale.min() >= -4.5 and log_scale.max() <= 0.0
    # the large features drive both ends of both clamps
    assert np.isclose(mean, 1 / 512, rtol=1e-5).any() and np.isclose(mean, 1 - 1 / 512, rtol=1e-6).any()
    assert (log_scale == -4.5).any() and (log_scale == 0.0).any()


def test_discretized_logistic_log_prob_matches_reference_formula():
    rng = np.random.default_rng(9)
    lik = build_likelihood("discretized_logistic", IMAGE, "conv")
    params = lik(_features("conv", rng, scale=2.0))
    mean, log_scale = (_np(p) for p in params)
    x = _images(rng).astype(np.float64)
    x0 = np.floor(x.astype(np.float32) * 256) / 256
    s = np.exp(log_scale)
    p = _sigmoid((x0 + 1 / 256 - mean) / s) - _sigmoid((x0 - mean) / s)
    want = np.log(p + 1e-7).sum(axis=(1, 2, 3))
    np.testing.assert_allclose(_np(lik.log_prob(_t(x), params)), want, rtol=1e-5, atol=2e-3)
    np.testing.assert_allclose(_np(lik.mean(params)), mean)


def _reference_pixel_log_probs(x, mean, s):
    """log p per pixel of the reference's 256-bin discretised logistic, float64 (s broadcasts)."""
    x0 = np.floor(x.astype(np.float32) * 256) / 256
    return np.log(_sigmoid((x0 + 1 / 256 - mean) / s) - _sigmoid((x0 - mean) / s) + 1e-7)


def test_discretized_logistic_per_pixel_min_scale_moves_the_lower_clamp():
    lik = DiscretizedLogistic(IMAGE, min_scale=0.001)
    raw = np.array([-30.0, -8.0, -4.5, -1.0, 0.0, 3.0])
    _, log_scale = lik.transform(_t(raw), _t(raw))
    np.testing.assert_allclose(_np(log_scale), np.clip(raw, math.log(0.001), 0.0), atol=1e-6)
    with pytest.raises(ValueError, match="min_scale"):
        DiscretizedLogistic(IMAGE, min_scale=2.0)
    with pytest.raises(ValueError, match="scale"):
        DiscretizedLogistic(IMAGE, scale="per_image")


@pytest.mark.parametrize("head", ["dense", "conv"])
def test_discretized_logistic_global_scale_has_one_head_and_one_weight(head):
    rng = np.random.default_rng(20)
    lik = build_likelihood("discretized_logistic", IMAGE, head, scale="global", min_scale=0.001)
    params = lik(_features(head, rng, scale=200.0))
    assert len(params) == len(lik.parameters) == 1 and lik.parameters == ("mean",)
    assert [layer.name for layer in lik.heads] == ["mean_head"]
    assert not any("log_scale_head" in v.path for v in lik.weights)
    assert id(lik.log_scale) in {id(v) for v in lik.trainable_weights}
    assert tuple(lik.log_scale.shape) == () and float(_np(lik.log_scale)) == 0.0  # initialised at scale 1
    mean = _np(params[0])
    assert mean.shape == (BATCH, *IMAGE) and mean.min() >= 1 / 512 - 1e-7 and mean.max() <= 1 - 1 / 512 + 1e-7
    np.testing.assert_allclose(_np(lik.mean(params)), mean)
    # the default per-pixel likelihood keeps its two heads and has no global weight
    per_pixel = build_likelihood("discretized_logistic", IMAGE, head)
    per_pixel(_features(head, rng))
    assert len(per_pixel.heads) == 2 and not any(v.path.endswith("/log_scale") for v in per_pixel.weights)


@pytest.mark.parametrize("log_scale", [0.0, -2.0, math.log(0.02), -4.0])
def test_discretized_logistic_global_scale_normalises(log_scale):
    """One pixel: sum over its 256 bins of exp(log_prob) is sigma((1 - mu)/s) - sigma(-mu/s) + 256e-7 (the
    bins telescope), which is 1 when the logistic mass lies inside [0, 1]."""
    lik = build_likelihood("discretized_logistic", (1, 1, 1), "dense", scale="global", min_scale=0.001)
    lik(_t(np.zeros((1, 3))))
    lik.log_scale.assign(log_scale)
    s = math.exp(log_scale)
    for mean in (0.3, 0.5, 0.71):
        x = _f32((np.arange(256) + 0.5) / 256.0).reshape(256, 1, 1, 1)
        log_p = _np(lik.log_prob(_t(x), (_t(np.full_like(x, mean)),)))
        assert log_p.shape == (256,)
        total = float(np.exp(log_p).sum())
        telescoped = _sigmoid((1.0 - mean) / s) - _sigmoid(-mean / s) + 256e-7
        np.testing.assert_allclose(total, telescoped, atol=1e-5)
        if s <= 0.05:
            assert abs(total - 1.0) < 2e-4


@pytest.mark.parametrize("head", ["dense", "conv"])
def test_discretized_logistic_global_scale_log_prob_is_the_sum_over_pixels(head):
    rng = np.random.default_rng(21)
    lik = build_likelihood("discretized_logistic", IMAGE, head, scale="global", min_scale=0.001)
    params = lik(_features(head, rng, scale=2.0))
    lik.log_scale.assign(-2.3)
    mean = _np(params[0])
    x = _images(rng).astype(np.float64)
    per_pixel = _reference_pixel_log_probs(x, mean, math.exp(-2.3))
    np.testing.assert_allclose(_np(lik.log_prob(_t(x), params)), per_pixel.sum(axis=(1, 2, 3)), rtol=1e-5, atol=2e-3)
    # the sample axis of the IWAE path ([B, S, H, W, C] against x[:, None]) broadcasts the scalar scale too
    stacked = _t(np.stack([mean, mean[::-1]], axis=1))
    log_p = _np(lik.log_prob(_t(x)[:, None], (stacked,)))
    assert log_p.shape == (BATCH, 2)
    np.testing.assert_allclose(log_p[:, 0], per_pixel.sum(axis=(1, 2, 3)), rtol=1e-5, atol=2e-3)


@pytest.mark.parametrize("min_scale", [0.001, 0.05])
def test_discretized_logistic_global_scale_lower_bound(min_scale):
    rng = np.random.default_rng(22)
    lik = build_likelihood("discretized_logistic", IMAGE, "dense", scale="global", min_scale=min_scale)
    params = lik(_features("dense", rng))
    x = _images(rng).astype(np.float64)
    mean = _np(params[0])
    lik.log_scale.assign(math.log(min_scale) - 15.0)  # far below the bound: the scale is exactly min_scale
    assert math.exp(float(_np(lik.global_log_scale()))) == pytest.approx(min_scale, rel=1e-6)
    want = _reference_pixel_log_probs(x, mean, min_scale).sum(axis=(1, 2, 3))
    np.testing.assert_allclose(_np(lik.log_prob(_t(x), params)), want, rtol=1e-5, atol=2e-2)
    lik.log_scale.assign(math.log(min_scale) + 1.0)  # above it: the weight's own scale, no upper bound
    assert float(_np(lik.global_log_scale())) == pytest.approx(math.log(min_scale) + 1.0, abs=1e-6)
    lik.log_scale.assign(0.7)
    assert float(_np(lik.global_log_scale())) == pytest.approx(0.7, abs=1e-6)


def test_discretized_logistic_global_scale_default_bound_is_the_per_pixel_clamp():
    lik = DiscretizedLogistic(IMAGE, scale="global")
    lik(_features("dense", np.random.default_rng(23)))
    lik.log_scale.assign(-30.0)
    assert float(_np(lik.global_log_scale())) == pytest.approx(-4.5, abs=1e-6)


def test_discretized_logistic_config_round_trip():
    for options in ({}, {"scale": "global", "min_scale": 0.001}, {"scale": "per_pixel", "min_scale": 0.01}):
        lik = build_likelihood("discretized_logistic", IMAGE, "conv", **options)
        config = lik.get_config()
        assert config["scale"] == options.get("scale", "per_pixel") and config["min_scale"] == options.get("min_scale")
        clone = DiscretizedLogistic.from_config(config)
        assert clone.get_config() == config and clone.parameters == lik.parameters


@pytest.mark.parametrize("head", ["dense", "conv"])
def test_gaussian_fixed_variance_matches_tfp(head):
    rng = np.random.default_rng(10)
    lik = build_likelihood("gaussian", IMAGE, head, variance=0.1)
    params = lik(_features(head, rng, scale=3.0))
    mean = _np(params[0])
    assert mean.min() >= 1 / 512 - 1e-7 and mean.max() <= 1 - 1 / 512 + 1e-7  # linear mean, clamped
    x = _images(rng).astype(np.float64)
    got = _np(lik.log_prob(_t(x), params))
    want = tfd.Normal(mean, math.sqrt(0.1)).log_prob(x).numpy().sum(axis=(1, 2, 3))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=2e-3)
    assert not any("log_variance" in v.path for v in lik.weights)


def test_gaussian_learned_variance_matches_tfp():
    rng = np.random.default_rng(11)
    lik = Gaussian(IMAGE, "dense", variance=None)
    params = lik(_features("dense", rng))
    assert id(lik.log_variance) in {id(v) for v in lik.trainable_weights}
    assert float(_np(lik.log_variance)) == 0.0  # initialised at variance 1
    lik.log_variance.assign(-1.3)
    x = _images(rng).astype(np.float64)
    mean = _np(params[0])
    got = _np(lik.log_prob(_t(x), params))
    want = tfd.Normal(mean, math.exp(-0.65)).log_prob(x).numpy().sum(axis=(1, 2, 3))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=2e-3)


def test_gaussian_mean_transform_is_linear_then_clamped():
    lik = Gaussian(IMAGE, variance=0.5)
    raw = np.array([-1.0, 0.0, 0.3, 0.7, 1.0, 2.0])
    (mean,) = lik.transform(_t(raw))
    np.testing.assert_allclose(_np(mean), np.clip(raw, *MEAN_CLAMP), atol=1e-7)


@pytest.mark.parametrize("head", ["dense", "conv"])
def test_squared_error_log_prob_and_normaliser(head):
    rng = np.random.default_rng(12)
    lik = build_likelihood("squared_error", IMAGE, head)
    params = lik(_features(head, rng))
    mean = _np(params[0])
    x = _images(rng).astype(np.float64)
    got = _np(lik.log_prob(_t(x), params))
    np.testing.assert_allclose(got, -((x - mean) ** 2).sum(axis=(1, 2, 3)), rtol=1e-5, atol=1e-5)
    d = math.prod(IMAGE)
    assert lik.log_normalizer_offset() == pytest.approx(-0.5 * d * math.log(math.pi), rel=1e-12)
    # log_prob + offset is the normalised Gaussian with variance 1/2
    gauss = tfd.Normal(mean, math.sqrt(0.5)).log_prob(x).numpy().sum(axis=(1, 2, 3))
    np.testing.assert_allclose(got + lik.log_normalizer_offset(), gauss, rtol=1e-6, atol=1e-4)


def test_squared_error_normaliser_for_mnist():
    # the reference's un-included constant: (D/2) log(pi) ~ 448.7 nats for D = 784
    assert SquaredError((28, 28, 1)).log_normalizer_offset() == pytest.approx(-448.73, abs=0.01)


# --------------------------------------------------------------------------------------------------
# Gaussian head
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("log_var_range", [(-6.0, 2.0), (-3.0, 1.0)])
def test_gaussian_head_clips_log_variance(log_var_range):
    rng = np.random.default_rng(13)
    kwargs = {} if log_var_range == (-6.0, 2.0) else {"log_var_range": log_var_range}
    layer = GaussianHead(6, **kwargs)
    h = rng.normal(size=(40, 10)) * 30.0
    mean, log_var = (_np(t) for t in layer(_t(h)))
    h32 = h.astype(np.float32).astype(np.float64)
    want_mean = h32 @ _np(layer.mean_head.kernel) + _np(layer.mean_head.bias)
    raw = h32 @ _np(layer.log_var_head.kernel) + _np(layer.log_var_head.bias)
    np.testing.assert_allclose(mean, want_mean, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(log_var, np.clip(raw, *log_var_range), rtol=1e-5, atol=1e-4)
    assert log_var.min() == log_var_range[0] and log_var.max() == log_var_range[1]  # both ends hit
    assert mean.shape == (40, 6) and log_var.shape == (40, 6)
    assert abs(_np(layer.mean_head.kernel).std() / math.sqrt(2 / 10) - 1) < 0.35
