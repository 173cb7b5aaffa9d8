"""Exemplar prior (`layers/priors/exemplar.py`, `training/exemplar.py`): the three forms of the mixture
against NumPy / TFP oracles, leave-one-out, retrieval (kNN union), the cache lifecycle inside `fit`,
sampling moments, weight files without training data, per-batch index draws, and short training runs.

Prior-level tests attach a small deterministic encoder written with `keras.ops` and mirrored in NumPy.
"""

import json

import keras
import numpy as np
import pytest
import tensorflow_probability as tfp
from keras import ops
from scipy.special import logsumexp

from layers.priors import PRIORS
from layers.priors.exemplar import ExemplarPrior
from layers.priors.exemplar import iterative_generation
from tests.helpers import _f32, _np, _t
from tests.test_fit import history
from training import config as config_lib, data as data_lib, fit
from zoo.base import build_model

tfd = tfp.distributions
N_SAMPLES = 20_000


@pytest.fixture(autouse=True)
def _seed():
    keras.utils.set_random_seed(1234)


# --------------------------------------------------------------------------------------------------
# a tiny encoder with a NumPy mirror, and priors built around it
# --------------------------------------------------------------------------------------------------


class _Encoder:
    """images [n, H, W, C] -> (mean = tanh(x A + a) * 2, log_var = 0); the prior uses the mean only."""

    def __init__(self, image_shape, latent_dim, rng):
        self.size = int(np.prod(image_shape))
        self.A = _f32(rng.normal(size=(self.size, latent_dim)) / np.sqrt(self.size) * 2.0)
        self.a = _f32(rng.normal(size=latent_dim) * 0.5)

    def __call__(self, images):
        flat = ops.reshape(images, (-1, self.size))
        mean = 2.0 * ops.tanh(ops.matmul(flat, _t(self.A)) + _t(self.a))
        return mean, ops.zeros_like(mean)

    def numpy(self, images):
        return 2.0 * np.tanh(np.asarray(images, np.float64).reshape(-1, self.size) @ self.A + self.a)


def _prior(n, image_shape=(2, 2, 1), latent_dim=3, components=6, mode="exact", k=3, seed=0, log_variance=None,
           images=None, encoder=None, **kwargs):
    rng = np.random.default_rng(seed)
    encoder = encoder or _Encoder(image_shape, latent_dim, rng)
    images = rng.uniform(size=(n, *image_shape)).astype("float32") if images is None else images
    prior = ExemplarPrior(latent_dim, image_shape, n, components, mode=mode, k=k, **kwargs)
    prior.attach_encoder(encoder)
    prior.build((None, latent_dim))
    if log_variance is not None:
        prior.log_variance.assign(np.float32(log_variance))
    prior.attach_training_images(images)
    prior.refresh_cache(images)
    return prior, encoder, images


def _batch(images, index, candidates):
    return {"image": _t(images[index]), "index": ops.convert_to_tensor(np.asarray(index, "int64")),
            "exemplar_index": ops.convert_to_tensor(np.asarray(candidates, "int64"))}


def _log_kernel(z, means, log_var):
    """log N(z_b; means_j, e^log_var I): [B, J] in float64."""
    d = z.shape[-1]
    sq = ((z[:, None, :] - means[None, :, :]) ** 2).sum(-1)
    return -0.5 * (d * (np.log(2 * np.pi) + log_var) + sq / np.exp(log_var))


def _tfp_uniform_mixture(z_row, means, log_var):
    """TFP log-density of the uniform isotropic mixture over `means` at one point (float64)."""
    k, d = means.shape
    mix = tfd.MixtureSameFamily(
        tfd.Categorical(logits=np.zeros(k)),
        tfd.MultivariateNormalDiag(loc=means, scale_diag=np.full((k, d), np.exp(0.5 * log_var))),
    )
    return float(mix.log_prob(z_row[None])[0])


# --------------------------------------------------------------------------------------------------
# training forms: leave-one-out, exact mode, retrieval mode
# --------------------------------------------------------------------------------------------------


def test_leave_one_out_never_weights_the_examples_own_exemplar():
    """z sits on the example's own exemplar and far from the others: with the mask, log p(z) is exactly
    the mixture of the others (normaliser M_eff = M - #copies of the own index); without, it is ~0 nats."""
    means = np.array([[0.0, 0.0], [3.0, 0.0], [0.0, 3.0], [-3.0, -3.0]], np.float32)
    images = means.reshape(4, 1, 1, 2)

    class Identity:
        def __call__(self, x):
            mean = ops.reshape(x, (-1, 2))
            return mean, ops.zeros_like(mean)

    log_var = np.log(0.05)
    candidates = [0, 1, 0, 2, 3]  # the own index twice: M_eff = 3
    z = means[:1]
    masked, _, _ = _prior(4, (1, 1, 2), 2, 5, log_variance=log_var, images=images, encoder=Identity())
    unmasked, _, _ = _prior(4, (1, 1, 2), 2, 5, log_variance=log_var, images=images, encoder=Identity(),
                            leave_one_out=False)
    got = _np(masked.training_log_prob(_t(z), _batch(images, [0], candidates)))[0]
    lv = float(_f32(log_var))
    others = logsumexp(_log_kernel(_f32(z), _f32(means[[1, 2, 3]]), lv)) - np.log(3)
    assert got == pytest.approx(others, rel=1e-5)
    assert got == pytest.approx(_tfp_uniform_mixture(_f32(z[0]), _f32(means[[1, 2, 3]]), lv), rel=1e-5)
    everyone = _np(unmasked.training_log_prob(_t(z), _batch(images, [0], candidates)))[0]
    expected_all = logsumexp(_log_kernel(_f32(z), _f32(means[candidates]), lv)) - np.log(5)
    assert everyone == pytest.approx(expected_all, rel=1e-5)
    assert got < everyone - 50.0  # the own exemplar would dominate the mixture


def test_exact_mode_matches_tfp_mixture_with_masked_normaliser():
    n, m = 20, 15
    prior, encoder, images = _prior(n, components=m, log_variance=-0.7, seed=3)
    rng = np.random.default_rng(4)
    index = np.array([2, 5, 7, 11, 19])
    candidates = np.concatenate([[2, 2, 5, 7], rng.integers(0, n, size=m - 4)])  # duplicates and own indices
    z = rng.normal(size=(5, 3)).astype(np.float32)
    got = _np(prior.training_log_prob(_t(z), _batch(images, index, candidates)))
    means = encoder.numpy(images[candidates])
    lv = float(_np(prior.log_variance))
    for b, i in enumerate(index):
        kept = candidates != i
        expected = _tfp_uniform_mixture(_f32(z[b]), means[kept], lv)
        assert got[b] == pytest.approx(expected, rel=1e-5, abs=1e-5)


def test_exact_mode_gradients_reach_the_encoder_and_the_variance():
    """The exemplars are re-encoded with gradients: d log p / d A and d log p / d log sigma^2 are non-zero."""
    n = 10
    prior, encoder, images = _prior(n, components=8, log_variance=0.3, seed=5)
    A = keras.Variable(_t(encoder.A))

    def enc(x):
        mean = 2.0 * ops.tanh(ops.matmul(ops.reshape(x, (-1, encoder.size)), A) + _t(encoder.a))
        return mean, ops.zeros_like(mean)

    prior.attach_encoder(enc)
    batch = _batch(images, [0, 1, 2], [0, 3, 4, 5, 6, 7, 8, 9])
    z = _t(np.random.default_rng(0).normal(size=(3, 3)))
    from layers.autodiff import gradient_step

    class Recorder(keras.optimizers.SGD):
        def apply(self, grads, variables):
            self.grads = [_np(g) for g in grads]

    opt = Recorder()
    if keras.backend.backend() == "jax":
        from layers.autodiff import tracked_state

        variables = [A, prior.log_variance, prior.cache, prior.exemplar_images]
        with tracked_state(variables, [v.value for v in variables]):
            gradient_step(lambda: (-ops.sum(prior.training_log_prob(z, batch)), {}), [A, prior.log_variance], opt)
    else:
        gradient_step(lambda: (-ops.sum(prior.training_log_prob(z, batch)), {}), [A, prior.log_variance], opt)
    assert np.abs(opt.grads[0]).sum() > 1e-4 and abs(float(opt.grads[1])) > 1e-6


def test_retrieval_equals_exact_mode_when_k_covers_all_candidates():
    n, m = 16, 9
    candidates = np.random.default_rng(6).permutation(n)[:m]  # distinct: the union is every candidate
    index = np.array([int(candidates[0]), int(candidates[3]), 15 if 15 not in candidates else 14])
    exact, _, images = _prior(n, components=m, log_variance=-0.2, seed=7)
    retrieval, _, _ = _prior(n, components=m, mode="retrieval", k=m, log_variance=-0.2, seed=7)
    z = _t(np.random.default_rng(8).normal(size=(3, 3)))
    batch = _batch(images, index, candidates)
    np.testing.assert_allclose(_np(retrieval.training_log_prob(z, batch)), _np(exact.training_log_prob(z, batch)),
                               rtol=1e-5, atol=1e-5)


def test_retrieval_mixes_over_the_knn_union_and_updates_the_cache():
    """Oracle of supplement Algorithm 1 in NumPy: batch rows of the cache <- posterior means; k nearest
    candidates (own index excluded); union of dataset indices; mixture over the union minus the own
    index, normalised by its size; union rows of the cache <- fresh means."""
    n, m, k = 30, 12, 2
    prior, encoder, images = _prior(n, components=m, mode="retrieval", k=k, log_variance=-1.0, seed=9)
    rng = np.random.default_rng(10)
    stale = _np(prior.cache) + rng.normal(scale=0.05, size=(n, 3))
    prior.cache.assign(stale.astype(np.float32))
    stale = _f32(stale)
    index = np.array([0, 4, 9, 13])
    candidates = np.concatenate([[4, 9, 9], rng.integers(14, n, size=m - 3)])
    z = rng.normal(size=(4, 3)).astype(np.float32)
    got = _np(prior.training_log_prob(_t(z), _batch(images, index, candidates)))

    query = encoder.numpy(images[index])
    cache = stale.copy()
    cache[index] = query
    dist = ((query[:, None, :] - cache[candidates][None]) ** 2).sum(-1)
    dist[candidates[None, :] == index[:, None]] = np.inf
    union = np.unique(candidates[np.argsort(dist, axis=1)[:, :k]])
    means = encoder.numpy(images[union])
    lv = float(_np(prior.log_variance))
    for b, i in enumerate(index):
        kept = union != i
        expected = logsumexp(_log_kernel(_f32(z[b:b + 1]), means[kept], lv)) - np.log(kept.sum())
        assert got[b] == pytest.approx(expected, rel=1e-5, abs=1e-5)
    cache[union] = means
    np.testing.assert_allclose(_np(prior.cache), cache, rtol=1e-5, atol=1e-5)


def _brute_force_per_example(encoder, images, stale_cache, index, candidates, k, log_var, z, leave_one_out=True):
    """Supplement Algorithm 1 by loops: for example b, its k nearest candidates (Euclidean on the cache, with
    the batch rows replaced by the queries; own index excluded), m(z_b) = (1/M_eff) sum_j N(z_b; mu_j, s^2 I)
    with M_eff the candidates that are not b; then the cache rows of the batch and of every selection."""
    cache = stale_cache.copy()
    query = encoder.numpy(images[index])
    cache[index] = query
    expected, chosen = [], []
    for b, i in enumerate(index):
        pool = [(float(((query[b] - cache[j]) ** 2).sum()), pos, int(j)) for pos, j in enumerate(candidates)
                if not (leave_one_out and j == i)]
        mine = [j for _, _, j in sorted(pool)[:k]]
        chosen += mine
        m_eff = len(candidates) - (sum(int(j == i) for j in candidates) if leave_one_out else 0)
        terms = [_log_kernel(_f32(z[b:b + 1]), encoder.numpy(images[[j]]), log_var)[0, 0] for j in mine]
        expected.append(logsumexp(terms) - np.log(m_eff))
    for j in set(chosen):
        cache[j] = encoder.numpy(images[[j]])[0]
    return np.array(expected), cache


def test_per_example_retrieval_is_algorithm_1_by_brute_force():
    """retrieval_mixture=per_example: each example's own k neighbours with normaliser M_eff, against loops;
    the union form on the same batch differs (its normaliser is |union| - 1 and it mixes other rows' neighbours)."""
    n, m, k = 30, 12, 3
    prior, encoder, images = _prior(n, components=m, mode="retrieval", k=k, log_variance=-1.0, seed=9,
                                    retrieval_mixture="per_example")
    rng = np.random.default_rng(10)
    stale = _f32(_np(prior.cache) + rng.normal(scale=0.05, size=(n, 3)))
    prior.cache.assign(stale.astype(np.float32))
    index = np.array([0, 4, 9, 13])
    candidates = np.concatenate([[4, 9, 9, 0], rng.integers(14, n, size=m - 4)])  # own indices, a duplicate
    z = rng.normal(size=(4, 3)).astype(np.float32)
    got = _np(prior.training_log_prob(_t(z), _batch(images, index, candidates)))
    lv = float(_np(prior.log_variance))
    expected, cache = _brute_force_per_example(encoder, images, stale, index, candidates, k, lv, z)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(_np(prior.cache), cache, rtol=1e-5, atol=1e-5)
    union, _, _ = _prior(n, components=m, mode="retrieval", k=k, log_variance=-1.0, seed=9)
    union.cache.assign(stale.astype(np.float32))
    other = _np(union.training_log_prob(_t(z), _batch(images, index, candidates)))
    assert np.abs(other - got).max() > 0.1


def test_per_example_retrieval_equals_exact_mode_when_k_covers_all_candidates():
    """With k = M every example's neighbours are all candidates but its own copies: exact mode's mixture and
    normaliser, duplicates counted as often as drawn (with and without leave-one-out)."""
    n, m = 16, 9
    candidates = np.array([1, 1, 3, 5, 8, 8, 8, 12, 2])
    index = np.array([1, 8, 15])
    z = _t(np.random.default_rng(8).normal(size=(3, 3)))
    batch = None
    for leave_one_out in (True, False):
        exact, _, images = _prior(n, components=m, log_variance=-0.2, seed=7, leave_one_out=leave_one_out)
        k = m if not leave_one_out else m - 3  # the largest k every row can fill (index 8 has three copies)
        per_example, _, _ = _prior(n, components=m, mode="retrieval", k=k, log_variance=-0.2, seed=7,
                                   retrieval_mixture="per_example", leave_one_out=leave_one_out)
        batch = _batch(images, index, candidates)
        got, want = _np(per_example.training_log_prob(z, batch)), _np(exact.training_log_prob(z, batch))
        rows = [0, 1, 2] if not leave_one_out else [1]  # with k = M - 3 only row 1 (index 8) sees every other
        np.testing.assert_allclose(got[rows], want[rows], rtol=1e-5, atol=1e-5)


# --------------------------------------------------------------------------------------------------
# evaluation form, normalisation, sampling
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("eval_chunk", [5, 23, None])
def test_evaluation_log_prob_is_the_chunked_tfp_mixture_over_all_exemplars(eval_chunk):
    n = 23  # chunk 5: four full blocks in the loop plus a remainder of 3
    prior, encoder, images = _prior(n, log_variance=-0.5, seed=11, eval_chunk=eval_chunk)
    z = np.random.default_rng(12).normal(size=(40, 3)).astype(np.float32)
    means = encoder.numpy(images)
    np.testing.assert_allclose(_np(prior.cache), means, rtol=1e-5, atol=1e-6)
    lv = float(_np(prior.log_variance))
    mix = tfd.MixtureSameFamily(
        tfd.Categorical(logits=np.zeros(n)),
        tfd.MultivariateNormalDiag(loc=_f32(_np(prior.cache)), scale_diag=np.full((n, 3), np.exp(0.5 * lv))),
    )
    np.testing.assert_allclose(_np(prior.log_prob(_t(z))), mix.log_prob(_f32(z)).numpy(), rtol=1e-5, atol=1e-5)


def test_evaluation_chunk_bounds_the_block_size():
    prior, _, _ = _prior(50_000 // 1000, seed=0)
    assert prior._component_chunk(None) == 50  # min(N, 256)
    big = ExemplarPrior(40, (28, 28, 1), 50_000, 25_000)
    assert big._component_chunk(50_000) * 50_000 <= 2**24 and big._component_chunk(100) == 50_000


@pytest.mark.parametrize("latent_dim", [1, 2])
def test_density_normalises_on_a_grid(latent_dim):
    prior, _, _ = _prior(5, latent_dim=latent_dim, log_variance=-1.0, seed=13, eval_chunk=2)
    half, steps = 6.0, (4001 if latent_dim == 1 else 301)
    axis = np.linspace(-half, half, steps)
    grid = np.stack(np.meshgrid(*([axis] * latent_dim), indexing="ij"), -1).reshape(-1, latent_dim)
    density = np.exp(_np(prior.log_prob(_t(grid))))
    assert density.sum() * (axis[1] - axis[0]) ** latent_dim == pytest.approx(1.0, abs=2e-3)


def test_component_kernel_and_prior_sampling_moments():
    prior, encoder, images = _prior(8, log_variance=-0.4, seed=14)
    sigma2 = float(np.exp(_np(prior.log_variance)))
    tol = 5 * np.sqrt(sigma2 / N_SAMPLES)
    z = _np(prior.component_sample(3, N_SAMPLES, seed=1))
    np.testing.assert_allclose(z.mean(0), _np(prior.cache)[3], atol=tol)
    np.testing.assert_allclose(z.var(0), sigma2, rtol=0.05)
    z = _np(prior.kernel_sample(np.repeat(images[5:6], N_SAMPLES, 0), seed=2))
    np.testing.assert_allclose(z.mean(0), encoder.numpy(images[5:6])[0], atol=tol)
    np.testing.assert_allclose(z.var(0), sigma2, rtol=0.05)
    z = _np(prior.sample(N_SAMPLES, seed=3))
    means = _np(prior.cache)
    np.testing.assert_allclose(z.mean(0), means.mean(0), atol=5 * np.sqrt((sigma2 + means.var(0).max()) / N_SAMPLES))
    np.testing.assert_allclose(z.var(0), sigma2 + means.var(0), rtol=0.06)
    assert _np(prior.sample(4)).shape == (4, 3)  # the prior's own generator when no seed is given


# --------------------------------------------------------------------------------------------------
# errors, registry, weight files
# --------------------------------------------------------------------------------------------------


def test_errors_name_the_problem_and_the_fix():
    config = PRIORS.options("exemplar", components=10)
    with pytest.raises(ValueError, match="training-set size N"):
        PRIORS.build(config, latent_dim=3, image_shape=(2, 2, 1), num_train=None)
    with pytest.raises(ValueError, match="lower k or raise components"):
        PRIORS.build(PRIORS.options("exemplar", components=10, mode="retrieval", k=11), latent_dim=3,
                     image_shape=(2, 2, 1), num_train=50)
    with pytest.raises(config_lib.ConfigError, match="model.prior: k=11 nearest neighbours .*lower k or raise components"):
        config_lib.from_dict({"model": {"prior": {"name": "exemplar", "components": 10, "mode": "retrieval", "k": 11}}})
    prior = ExemplarPrior(3, (2, 2, 1), 6, 4)
    prior.attach_encoder(_Encoder((2, 2, 1), 3, np.random.default_rng(0)))
    prior.build((None, 3))
    assert np.isnan(_np(prior.cache)).all()  # a never-refreshed cache cannot pass for a prior
    images = np.zeros((6, 2, 2, 1), np.float32)
    batch = _batch(images, [0], [1, 2, 3, 4])
    with pytest.raises(ValueError, match="attach_training_images"):
        prior.training_log_prob(_t(np.zeros((1, 3))), batch)
    with pytest.raises(ValueError, match=r"expected the 6 training images \(6, 2, 2, 1\)"):
        prior.attach_training_images(np.zeros((5, 2, 2, 1)))
    prior.attach_training_images(images)
    with pytest.raises(ValueError, match="index_draws"):
        prior.training_log_prob(_t(np.zeros((1, 3))), {"image": batch["image"], "index": batch["index"]})


def _tiny_model(mode="exact", architecture="vae", n=40, image_shape=(4, 4, 1)):
    config = config_lib.from_dict({"model": {
        "architecture": architecture, "latent_dim": 3, "hidden_units": 8,
        "prior": {"name": "exemplar", "components": 7, "mode": mode, "k": 2, "chunk_size": 16}}})
    return build_model(config.model, image_shape, seed=0, num_train=n)


def test_weight_files_hold_the_prior_state_but_not_the_training_images(tmp_path):
    model = _tiny_model("retrieval", n=1000, image_shape=(8, 8, 1))
    images = np.random.default_rng(0).uniform(size=(1000, 8, 8, 1)).astype(np.float32)
    model.prior.attach_training_images(images)
    model.prior.refresh_cache(images)
    model.prior.log_variance.assign(np.float32(0.25))
    model.save_weights(tmp_path / "w.weights.h5")
    assert (tmp_path / "w.weights.h5").stat().st_size < images.nbytes / 2
    loaded = _tiny_model("retrieval", n=1000, image_shape=(8, 8, 1))  # from config and N alone, no data
    loaded.load_weights(tmp_path / "w.weights.h5")
    assert loaded.prior.exemplar_images is None
    np.testing.assert_array_equal(_np(loaded.prior.cache), _np(model.prior.cache))
    assert float(_np(loaded.prior.log_variance)) == 0.25
    z = _t(np.random.default_rng(1).normal(size=(5, 3)))
    np.testing.assert_allclose(_np(loaded.prior.log_prob(z)), _np(model.prior.log_prob(z)), rtol=1e-6)
    np.testing.assert_allclose(_np(loaded.sample(6, seed=4)), _np(model.sample(6, seed=4)), rtol=1e-5, atol=1e-6)


def test_iterative_generation_chain():
    model = _tiny_model()
    x0 = np.random.default_rng(2).uniform(size=(3, 4, 4, 1)).astype(np.float32)
    chain = iterative_generation(model, x0, steps=4, seed=5)
    assert chain.shape == (5, 3, 4, 4, 1)
    np.testing.assert_array_equal(chain[0], x0)
    assert np.all((chain >= 0) & (chain <= 1)) and not np.allclose(chain[1], chain[2])
    np.testing.assert_array_equal(iterative_generation(model, x0, steps=4, seed=5), chain)


# --------------------------------------------------------------------------------------------------
# per-batch exemplar indices from the data pipeline
# --------------------------------------------------------------------------------------------------


def test_train_dataset_index_draws_are_uniform_deterministic_and_leave_images_unchanged():
    splits = data_lib.load_splits(config_lib.DataConfig(name="digits"))
    n = len(splits.train)

    def batches(initial_epoch, draws):
        ds = data_lib.train_dataset(splits, 100, 3, initial_epoch, 2, index_draws=draws)
        return [{key: v.numpy() for key, v in b.items()} for b in ds]

    plain = batches(0, None)
    drawn = batches(0, {"exemplar_index": 500})
    resumed = batches(1, {"exemplar_index": 500})
    steps = len(plain) // 2
    for a, b in zip(plain, drawn):
        np.testing.assert_array_equal(a["image"], b["image"])
        np.testing.assert_array_equal(a["index"], b["index"])
    for a, b in zip(drawn[steps:], resumed):
        np.testing.assert_array_equal(a["exemplar_index"], b["exemplar_index"])
    draws = np.stack([b["exemplar_index"] for b in drawn])
    assert draws.dtype == np.int64 and draws.shape == (2 * steps, 500)
    assert draws.min() >= 0 and draws.max() < n and not np.array_equal(draws[0], draws[1])
    assert not np.array_equal(draws[0], draws[steps])  # another epoch, other candidates
    counts = np.bincount(draws.ravel(), minlength=n)  # uniform draws: Poisson counts, std ~ sqrt(mean)
    assert len(counts) == n and 0.85 < counts.std() / np.sqrt(draws.size / n) < 1.15
    with pytest.raises(ValueError, match="overwrite"):
        data_lib.train_dataset(splits, 100, 3, index_draws={"index": 5})


# --------------------------------------------------------------------------------------------------
# training inside fit
# --------------------------------------------------------------------------------------------------


def _digits_config(mode, epochs=3, architecture="vae", data=None, **train):
    return config_lib.from_dict({
        "name": "test", "seed": 1, "data": data or {"name": "digits"},
        "model": {"architecture": architecture, "latent_dim": 4, "hidden_units": 32,
                  "prior": {"name": "exemplar", "components": 60, "mode": mode, "k": 3}},
        "train": {"epochs": epochs, "warmup_epochs": 2, "early_stopping_patience": 5, "eval_batch_size": 250,
                  "verbose": "0", "learning_rate": 2e-3, **train},
        "evaluate": {"num_samples": 10},
    })


class _CacheWatch(keras.callbacks.Callback):
    """Records, per epoch, whether the cache held the current encoder's means when validation ended."""

    def __init__(self, images):
        super().__init__()
        self.images = images
        self.begin = None
        self.records = []

    def on_epoch_begin(self, epoch, logs=None):
        self.begin = self.model.prior.encode_means(self.images)

    def on_epoch_end(self, epoch, logs=None):
        current = self.model.prior.encode_means(self.images)
        cache = _np(self.model.prior.cache)
        self.records.append((np.abs(cache - current).max(), np.abs(self.begin - current).max()))


def _assert_learned_with_fresh_cache(run_dir, watch):
    rows = history(run_dir)
    assert float(rows[-1]["val_loss"]) < float(rows[0]["val_loss"]) - 1.0
    assert float(rows[-1]["loss"]) < float(rows[0]["loss"])
    assert len(watch.records) == len(rows)
    for stale_gap, moved in watch.records:  # validation saw the means of the weights that were validated
        assert stale_gap < 1e-5 and moved > 1e-3


def test_exact_training_lowers_the_loss_and_validation_uses_the_current_encoder(tmp_path):
    config = _digits_config("exact")
    watch = _CacheWatch(data_lib.load_splits(config.data).train)
    _, metrics = fit.train(config, tmp_path, extra_callbacks=[watch])
    _assert_learned_with_fresh_cache(tmp_path, watch)
    assert np.isfinite(metrics["nll"]) and metrics["nll"] < metrics["negative_elbo"] + 0.5


@pytest.mark.parametrize("architecture,mode", [
    ("hvae", "exact"),
    # ConvHVAE: ~13 s on TensorFlow, more on JAX; retrieval mode also trains in tests/test_exemplar.py's VAE runs
    pytest.param("conv_hvae", "retrieval", marks=pytest.mark.slow)])
def test_hierarchical_models_train_with_the_exemplar_prior_on_z2(tmp_path, architecture, mode):
    rng = np.random.default_rng(0)
    blobs = (rng.uniform(size=(150, 6, 6, 1)) < np.linspace(0.1, 0.9, 36).reshape(1, 6, 6, 1)) * 255
    np.savez(tmp_path / "d.npz", x_train=blobs[:120].astype(np.uint8), x_test=blobs[120:].astype(np.uint8))
    config = _digits_config(mode, epochs=2, architecture=architecture, batch_size=20,
                            data={"name": "npz", "path": str(tmp_path / "d.npz"), "validation_size": 20})
    config.model.prior.components = 30
    model, _ = fit.train(config, tmp_path / "run", run_evaluation=False)
    rows = history(tmp_path / "run")
    assert float(rows[-1]["loss"]) < float(rows[0]["loss"]) and np.isfinite(float(rows[-1]["val_loss"]))
    assert model.prior.cache.shape == (100, 4) and not np.isnan(_np(model.prior.cache)).any()


def test_retrieval_training_learns_and_resumes_exactly(tmp_path):
    """Retrieval mode lowers the loss with a fresh cache at every validation; 3 epochs in one go == 2 epochs,
    stop, resume to 3: weights (cache, log-variance), optimizer state and history."""
    straight, split = tmp_path / "straight", tmp_path / "split"
    config = _digits_config("retrieval", epochs=3)
    watch = _CacheWatch(data_lib.load_splits(config.data).train)
    model_a, _ = fit.train(config, straight, run_evaluation=False, extra_callbacks=[watch])
    _assert_learned_with_fresh_cache(straight, watch)
    fit.train(_digits_config("retrieval", epochs=2), split, run_evaluation=False)
    model_b, _ = fit.train(_digits_config("retrieval", epochs=3), split, resume=True, run_evaluation=False)
    for ra, rb in zip(history(straight), history(split), strict=True):
        np.testing.assert_allclose(float(ra["val_loss"]), float(rb["val_loss"]), rtol=1e-5)
        np.testing.assert_allclose(float(ra["loss"]), float(rb["loss"]), rtol=1e-5)
    names = [w.path for w in model_a.weights]
    assert any(p.endswith("prior/cache") for p in names) and any(p.endswith("prior/log_variance") for p in names)
    for wa, wb in zip(model_a.weights, model_b.weights, strict=True):
        np.testing.assert_allclose(_np(wa), _np(wb), rtol=1e-5, atol=1e-6, err_msg=wa.path)
    for va, vb in zip(model_a.optimizer.variables, model_b.optimizer.variables, strict=True):
        np.testing.assert_allclose(_np(va), _np(vb), rtol=1e-5, atol=1e-7)
    final_a = json.loads((straight / "checkpoint" / "state.json").read_text())
    assert final_a == json.loads((split / "checkpoint" / "state.json").read_text())


def test_per_example_retrieval_training_learns_with_a_fresh_cache(tmp_path):
    config = _digits_config("retrieval", epochs=2)
    config.model.prior.retrieval_mixture = "per_example"
    watch = _CacheWatch(data_lib.load_splits(config.data).train)
    model, _ = fit.train(config, tmp_path, run_evaluation=False, extra_callbacks=[watch])
    _assert_learned_with_fresh_cache(tmp_path, watch)
    assert model.prior.retrieval_mixture == "per_example"
    assert model.prior.get_config()["retrieval_mixture"] == "per_example"
