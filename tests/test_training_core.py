"""The training core on toy models with closed-form answers, under the active Keras backend.

These prove the three capabilities later training procedures need: gradients with respect to inputs
inside a loss (double backpropagation), several optimizers alternating in one train step, and an
inner gradient loop on per-example tensors.
"""

import keras
import numpy as np
from keras import ops

from layers.autodiff import gradient_step, input_gradient
from zoo.stepped_model import SteppedModel


def _fit_one_batch(model, x):
    model.fit(x, batch_size=len(x), epochs=1, shuffle=False, verbose=0)


class GradientPenaltyToy(SteppedModel):
    """Critic f(x) = sum_d w_d x_d^2 / 2, so grad_x f = w * x; loss = mean_b ||grad_x f(x_b)||^2."""

    def __init__(self, dim):
        super().__init__()
        self.w = self.add_weight(shape=(dim,), initializer=keras.initializers.Constant(0.7), name="w")
        self.loss_tracker = keras.metrics.Mean(name="penalty")
        self.built = True

    @property
    def metrics(self):
        return [self.loss_tracker]

    def objective(self, data, training):
        x = keras.utils.unpack_x_y_sample_weight(data)[0]
        grad = input_gradient(lambda xx: ops.sum(self.w * ops.square(xx), axis=-1) / 2.0, x)
        penalty = ops.mean(ops.sum(ops.square(grad), axis=-1))
        return penalty, {"penalty": penalty}


def test_gradient_penalty_double_backprop_matches_closed_form():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(8, 3)).astype("float32")
    model = GradientPenaltyToy(3)
    lr = 0.1
    model.compile(optimizer=keras.optimizers.SGD(lr))
    w0 = ops.convert_to_numpy(model.w).copy()
    _fit_one_batch(model, x)
    # P(w) = mean_b sum_d w_d^2 x_bd^2  =>  dP/dw_d = 2 w_d mean_b x_bd^2
    expected = w0 - lr * 2.0 * w0 * np.mean(x**2, axis=0)
    np.testing.assert_allclose(ops.convert_to_numpy(model.w), expected, rtol=1e-5)


class AlternatingToy(SteppedModel):
    """Critic b then generator a, each with its own optimizer, in one train step."""

    def __init__(self, gen_optimizer, critic_optimizer):
        super().__init__()
        self.a = self.add_weight(shape=(), initializer=keras.initializers.Constant(3.0), name="gen_a")
        self.b = self.add_weight(shape=(), initializer=keras.initializers.Constant(-1.0), name="critic_b")
        # Plain references (not tracked): the optimizers' state lives in the compiled MultiOptimizer.
        object.__setattr__(self, "sub_optimizers", (gen_optimizer, critic_optimizer))
        self.built = True

    def train_update(self, data):
        x = keras.utils.unpack_x_y_sample_weight(data)[0]
        gen_opt, critic_opt = self.sub_optimizers
        critic_loss, _ = gradient_step(lambda: (0.5 * ops.square(self.b - ops.mean(x)), {}), [self.b], critic_opt)
        gen_loss, _ = gradient_step(lambda: (0.5 * ops.square(self.a - self.b), {}), [self.a], gen_opt)
        return {"critic_loss": critic_loss, "gen_loss": gen_loss}


def test_two_optimizers_alternate_within_one_step():
    from keras.src.optimizers.multi_optimizer import OptimizerMap

    x = np.array([[1.0], [2.0], [6.0]], dtype="float32")
    gen_lr, critic_lr = 0.5, 0.25
    gen_opt, critic_opt = keras.optimizers.SGD(gen_lr), keras.optimizers.SGD(critic_lr)
    model = AlternatingToy(gen_opt, critic_opt)
    optimizer = keras.optimizers.MultiOptimizer(OptimizerMap(default_optimizer=gen_opt, optimizer_map={".*critic.*": critic_opt}))
    model.compile(optimizer=optimizer)
    _fit_one_batch(model, x)
    b1 = -1.0 - critic_lr * (-1.0 - 3.0)  # the critic moves first, towards mean(x) = 3
    a1 = 3.0 - gen_lr * (3.0 - b1)  # the generator then sees the *updated* critic
    np.testing.assert_allclose(float(ops.convert_to_numpy(model.b)), b1, rtol=1e-6)
    np.testing.assert_allclose(float(ops.convert_to_numpy(model.a)), a1, rtol=1e-6)
    iterations = [int(ops.convert_to_numpy(opt.iterations)) for opt in (gen_opt, critic_opt)]
    assert iterations == [1, 1]


class InnerLoopToy(SteppedModel):
    """Per-example lambda_b refined by T gradient steps on 0.5 (lambda - theta x_b)^2, then the outer loss
    0.5 (lambda_T - 2 x_b)^2 is backpropagated through the refinement to theta (semi-amortised SVI)."""

    steps, inner_lr = 4, 0.3

    def __init__(self):
        super().__init__()
        self.theta = self.add_weight(shape=(), initializer=keras.initializers.Constant(0.5), name="theta")
        self.built = True

    def objective(self, data, training):
        x = keras.utils.unpack_x_y_sample_weight(data)[0]
        lam = ops.zeros_like(x)
        for _ in range(self.steps):
            grad = input_gradient(lambda l: 0.5 * ops.square(l - self.theta * x), lam)
            lam = lam - self.inner_lr * grad
        loss = ops.mean(0.5 * ops.square(lam - 2.0 * x))
        return loss, {"outer_loss": loss}


def test_inner_gradient_loop_on_per_example_tensors():
    x = np.array([[1.0], [-2.0], [0.5], [3.0]], dtype="float32")
    model = InnerLoopToy()
    lr = 0.05
    model.compile(optimizer=keras.optimizers.SGD(lr))
    _fit_one_batch(model, x)
    c = 1.0 - (1.0 - InnerLoopToy.inner_lr) ** InnerLoopToy.steps  # lambda_T = c theta x
    grad = np.mean((c * 0.5 * x - 2.0 * x) * c * x)
    np.testing.assert_allclose(float(ops.convert_to_numpy(model.theta)), 0.5 - lr * grad, rtol=1e-5)
