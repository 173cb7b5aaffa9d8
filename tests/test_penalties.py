"""The gradient penalties of `layers.penalties` (WGAN-GP, WGAN-div-1, WGAN-div-2) under the active backend.

The oracle is a toy critic whose input gradient is closed form: D(x) = sum(a * x) + b sum(x^2) over the
non-batch axes [2, 3], so g(x) = a + 2 b x per example. Each penalty's value is the reference formula
(section 3 of the VAEPP reference) evaluated in float64 NumPy on that closed-form g at the same points
(the interpolation coefficients passed explicitly as `alpha`). Its double-backprop gradient w.r.t. a, b
and `fake` is checked against the derivative worked out by hand: every penalty is sum_i phi(g_i) with
d phi / d g_i = c_i g_i for a scalar c_i, so dP/da = sum_i c_i g_i, dP/db = sum_i c_i <g_i, 2 x_i> and
dP/dx_i = 2 b c_i g_i, times dx_i/dfake (alpha, 1 - alpha or 1).

Gradients go through `layers.autodiff.gradients`, on JAX inside `tracked_state` (`grads_of`). Budget: a few
seconds per backend on 2 CPU cores."""

import keras
import numpy as np
import pytest
from keras import ops

from layers.autodiff import BACKEND, gradients, tracked_state
from layers.penalties import PENALTIES, GradientPenalty
from layers.penalties.base import interpolation_coefficients
from tests.helpers import _f32, _np, _t

SHAPE = (2, 3)  # the non-batch axes: the norm must be over both
BATCH = 5
RNG = np.random.default_rng(0)
A_INIT = (0.4 * RNG.normal(size=SHAPE)).astype(np.float32)
B_INIT = 0.2
REAL = (0.5 * RNG.normal(size=(BATCH,) + SHAPE)).astype(np.float32)
FAKE = (0.5 * RNG.normal(size=(BATCH,) + SHAPE) + 0.3).astype(np.float32)
ALPHA = np.array([0.0, 0.25, 0.5, 0.9, 1.0], np.float32)


class ToyCritic(keras.layers.Layer):
    """D(x) = sum(a * x) + b sum(x^2), one value per example ([B], or [B, 1] with `keepdims`)."""

    def __init__(self, a=A_INIT, b=B_INIT, keepdims=False, **kwargs):
        super().__init__(**kwargs)
        self.a = self.add_weight(name="a", shape=SHAPE, initializer=keras.initializers.Constant(a))
        self.b = self.add_weight(name="b", shape=(), initializer=keras.initializers.Constant(b))
        self.keepdims = keepdims
        self.built = True

    def call(self, x):
        energy = ops.sum(self.a * x, axis=(1, 2)) + self.b * ops.sum(ops.square(x), axis=(1, 2))
        return energy[:, None] if self.keepdims else energy


def grads_of(state, loss_fn, variables):
    """`layers.autodiff.gradients` as a train step calls it (on JAX inside `tracked_state` over `state`)."""
    if BACKEND != "jax":
        return gradients(loss_fn, variables)
    state = list(state)
    with tracked_state(state, [v.value for v in state]) as scope:
        out = gradients(loss_fn, variables)
    for v in state:
        v.assign(scope.get_current_value(v))
    return out


def closed_g(a, b, x):
    return a + 2.0 * b * x


def sq(g):
    return np.sum(g**2, axis=(1, 2))


def oracle(kind, options, a, b, real, fake, alpha):
    """(value, dP/da, dP/db, dP/dfake) in float64 from the closed-form g (see the module docstring)."""
    al = alpha[:, None, None]
    # (points, dx/dfake, c_i as a function of g) per set of points; P = sum over the sets
    if kind == "wgan_gp":
        lam, target = options.get("weight", 10.0), options.get("target", 1.0)
        x = real + al * (fake - real)
        n = np.sqrt(sq(closed_g(a, b, x)) + 1e-12)
        value = lam * np.mean((n - target) ** 2)
        sets = [(x, al, 2.0 * lam * (n - target) / (n * len(x)))]
    else:
        k, p = options.get("weight", 2.0), options.get("exponent", 6.0)
        if kind == "wgan_div_1":
            x = fake + al * (real - fake)
            s = sq(closed_g(a, b, x))
            value = k * np.mean(s ** (p / 2))
            sets = [(x, 1.0 - al, k * p * s ** (p / 2 - 1) / len(x))]
        else:
            s_r, s_f = sq(closed_g(a, b, real)), sq(closed_g(a, b, fake))
            value = 0.5 * k * (np.mean(s_r ** (p / 2)) + np.mean(s_f ** (p / 2)))
            c = lambda s: 0.5 * k * p * s ** (p / 2 - 1) / len(s)  # noqa: E731
            sets = [(real, 0.0, c(s_r)), (fake, 1.0, c(s_f))]
    d_a, d_b, d_fake = np.zeros_like(a), 0.0, np.zeros_like(fake)
    for x, dx_dfake, c in sets:
        g = closed_g(a, b, x)
        cg = c[:, None, None] * g
        d_a = d_a + cg.sum(0)
        d_b = d_b + np.sum(cg * 2.0 * x)
        d_fake = d_fake + 2.0 * b * cg * dx_dfake
    return value, d_a, d_b, d_fake


def penalty_and_grads(penalty, critic, real, fake, **kwargs):
    """The penalty and its gradients w.r.t. (a, b, fake), `fake` a variable read inside the loss."""
    fake_var = keras.Variable(fake, name="fake")
    variables = [critic.a, critic.b, fake_var]
    loss, _, grads = grads_of(variables, lambda: (penalty(critic, _t(real), fake_var.value, **kwargs), {}), variables)
    return float(_np(loss)), [_np(g) for g in grads]


def test_the_registry_names_the_three_penalties_with_the_papers_defaults():
    assert PENALTIES.names() == ["wgan_div_1", "wgan_div_2", "wgan_gp"]
    assert PENALTIES.option_names("wgan_gp") == ["weight", "target"]
    assert (PENALTIES.options("wgan_gp").weight, PENALTIES.options("wgan_gp").target) == (10.0, 1.0)
    for kind in ("wgan_div_1", "wgan_div_2"):
        options = PENALTIES.options(kind)
        assert (options.weight, options.exponent) == (2.0, 6.0)
    built = PENALTIES.build(PENALTIES.options("wgan_div_1", exponent=3.0))
    assert isinstance(built, GradientPenalty) and built.exponent == 3.0
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(built))
    assert type(restored) is type(built) and restored.get_config() == built.get_config()


CASES = [("wgan_gp", {}), ("wgan_gp", {"weight": 3.0, "target": 0.5}), ("wgan_div_1", {}),
         ("wgan_div_1", {"exponent": 3.0}), ("wgan_div_2", {}), ("wgan_div_2", {"weight": 1.0, "exponent": 4.0})]


@pytest.mark.parametrize("kind,options", CASES, ids=lambda c: str(c))
@pytest.mark.parametrize("keepdims", [False, True], ids=["critic[B]", "critic[B,1]"])
def test_value_and_double_backprop_gradient_match_the_closed_form(kind, options, keepdims):
    penalty = PENALTIES.build(PENALTIES.options(kind, **options))
    critic = ToyCritic(keepdims=keepdims)
    value, (g_a, g_b, g_fake) = penalty_and_grads(penalty, critic, REAL, FAKE, alpha=_t(ALPHA))
    ref_value, ref_a, ref_b, ref_fake = oracle(kind, options, _f32(A_INIT), _f32(B_INIT), _f32(REAL), _f32(FAKE),
                                                _f32(ALPHA))
    np.testing.assert_allclose(value, ref_value, rtol=2e-5)
    np.testing.assert_allclose(g_a, ref_a, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(g_b, ref_b, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(g_fake, ref_fake, rtol=1e-4, atol=1e-6)
    # the decoder is trained through the penalty: fake gets gradient (interpolates keep fake's share)
    assert np.abs(g_fake).max() > 1e-3


def test_wgan_div_1_exponent_3_is_the_vaepp_mnist_code_cubed_norm():
    """The Bernoulli MNIST files' 2 mean (sqrt(sum g^2))^3 is `exponent: 3`."""
    penalty = PENALTIES.build(PENALTIES.options("wgan_div_1", exponent=3.0))
    value = float(_np(penalty(ToyCritic(), _t(REAL), _t(FAKE), alpha=_t(ALPHA))))
    x = _f32(FAKE) + _f32(ALPHA)[:, None, None] * (_f32(REAL) - _f32(FAKE))
    norms = np.sqrt(sq(closed_g(_f32(A_INIT), _f32(B_INIT), x)))
    np.testing.assert_allclose(value, 2.0 * np.mean(norms**3), rtol=2e-5)


def test_wgan_gp_gradient_is_finite_where_the_critic_gradient_vanishes():
    """a = 0, b = 0: g = 0 at every point; sqrt(sum g^2) alone would give 0 * inf = NaN (keras-io #910)."""
    penalty = PENALTIES.build(PENALTIES.options("wgan_gp"))
    value, grads = penalty_and_grads(penalty, ToyCritic(a=0.0, b=0.0), REAL, FAKE, alpha=_t(ALPHA))
    np.testing.assert_allclose(value, 10.0 * (1e-6 - 1.0) ** 2, rtol=1e-5)
    for g in grads:
        assert np.all(np.isfinite(g))
        np.testing.assert_allclose(g, 0.0, atol=1e-6)  # the closed form: c_i g_i = 0


@pytest.mark.parametrize("kind", ["wgan_gp", "wgan_div_1"])
def test_the_seed_draws_one_uniform_coefficient_per_example(kind):
    penalty = PENALTIES.build(PENALTIES.options(kind))
    critic = ToyCritic()
    drawn = penalty(critic, _t(REAL), _t(FAKE), seed=11)
    # the draw from the seed is `interpolation_coefficients`: alpha [B] in [0, 1], the same for the same int
    alpha = interpolation_coefficients(BATCH, 11)
    np.testing.assert_allclose(_np(drawn), _np(penalty(critic, _t(REAL), _t(FAKE), alpha=alpha)), rtol=1e-6)
    np.testing.assert_array_equal(_np(alpha), _np(interpolation_coefficients(BATCH, 11)))
    np.testing.assert_allclose(_np(penalty(critic, _t(REAL), _t(FAKE), seed=11)), _np(drawn), rtol=1e-6)
    many = _np(interpolation_coefficients(4000, 3))
    assert many.shape == (4000,) and many.min() >= 0.0 and many.max() <= 1.0
    assert abs(many.mean() - 0.5) < 0.03 and abs(many.var() - 1 / 12) < 0.01
    # a SeedGenerator advances: two calls use two draws
    generator = keras.random.SeedGenerator(5)
    first, second = (float(_np(penalty(critic, _t(REAL), _t(FAKE), seed=generator))) for _ in range(2))
    assert first != second


def test_wgan_div_2_draws_nothing():
    penalty = PENALTIES.build(PENALTIES.options("wgan_div_2"))
    critic = ToyCritic()
    values = [_np(penalty(critic, _t(REAL), _t(FAKE), seed=s)) for s in (1, 2)]
    np.testing.assert_array_equal(values[0], values[1])
