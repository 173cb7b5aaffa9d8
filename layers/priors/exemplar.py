"""Exemplar prior (Exemplar VAE, Norouzi et al. 2020): a uniform mixture of isotropic Gaussian kernels
centred on the encoder means of the N training images, with one learned shared variance.

    r(z | x_n) = N(z; mu(x_n), sigma^2 I),    p(z) = (1/N) sum_n r(z | x_n)

mu is the mean head of the model's top encoder (q(z | x), or q(z2 | x) for the hierarchical models); its
log-variance head is not used. The prior has three forms:

* evaluation (`log_prob`): all N exemplars, no mask, normaliser N, from `cache`, a non-trainable [N, d]
  weight holding the means of every training image. It is saved with the model, so a loaded model
  samples and evaluates without the training data; training refreshes it before every validation pass.
* exact training (`training_log_prob`, mode "exact"): the batch carries M exemplar indices drawn
  uniformly with replacement; those exemplars are re-encoded with gradients and each example's own
  index is masked (leave-one-out), the normaliser M_eff = M - #masked per row.
* retrieval-augmented training (mode "retrieval", supplement Algorithm 1): the k nearest cached means
  of each example's posterior mean among the M candidates, re-encoded with gradients; the cache rows of
  the batch and of the selections are updated. `retrieval_mixture` chooses the mixture: "union" (official
  code) mixes every example over the union of all selections of the batch, normalised by the union's size
  minus the own index; "per_example" (Algorithm 1) mixes each example over its own k neighbours with the
  exact-mode normaliser, the M candidates minus copies of the own index (1/M in Algorithm 1, whose
  candidates never hold it).

Training needs the training images on the device (`attach_training_images`, called by the prior's
training callback in `fit`): a non-trainable variable that is part of the jitted state but never
written to weight files, so checkpoints, presets and exports stay free of training data.
"""

import contextlib
import math
from dataclasses import dataclass

import keras
import numpy as np
from keras import ops

from layers.distributions import LOG_2PI, log_mixture_isotropic, pairwise_squared_distances
from layers.priors.base import PRIORS, Prior
from layers.priors.mixture import split_seed
from layers.registry import option

MODES = ("exact", "retrieval")
RETRIEVAL_MIXTURES = ("union", "per_example")
# Largest [rows x components] block the evaluation mixture materialises at once (2^24 floats = 64 MB).
EVAL_BLOCK_ELEMENTS = 2**24
EVAL_CHUNK_UNKNOWN_ROWS = 256  # component chunk when the number of rows is not static


class ExactNearestNeighbours:
    """k nearest keys of each query by squared Euclidean distance: one distance matrix, then top-k.

    Exact at the sizes of the papers (B = 100 queries x M = 25,000 candidates). The exemplar prior only
    calls `search`, so an approximate index with the same signature can replace it.
    """

    def search(self, queries, keys, k, excluded=None):
        """Indices [B, k] into `keys` [M, d] of the k nearest keys of each query [B, d], nearest first;
        `excluded` [B, M] (bool) removes pairs from the search."""
        sq_dist = pairwise_squared_distances(queries, keys)
        if excluded is not None:
            sq_dist = ops.where(excluded, math.inf, sq_dist)
        return ops.top_k(-sq_dist, k)[1]


def _no_grad():
    """A context without autograd on PyTorch (cache refreshes need no graph); a no-op elsewhere."""
    if keras.backend.backend() == "torch":
        import torch

        return torch.no_grad()
    return contextlib.nullcontext()


@dataclass
class ExemplarPriorConfig:
    """How the mixture over training exemplars is formed while training (evaluation always uses all N)."""

    components: int = option(500, minimum=1)
    """M: exemplars re-encoded per training step (exact) or kNN candidates per step (retrieval)."""
    mode: str = option("exact", choices=MODES)
    """exact (M random exemplars re-encoded every step) | retrieval (kNN among the M candidates against a
    per-epoch cache of all exemplar means, supplement Algorithm 1)."""
    k: int = option(10, minimum=1)
    """retrieval mode: nearest neighbours per example among the candidates."""
    leave_one_out: bool = True
    """Mask each training example's own exemplar (and correct the normaliser) during training."""
    retrieval_mixture: str = option("union", choices=RETRIEVAL_MIXTURES)
    """retrieval mode: union (official code: every example mixes over the batch-wide union of the kNN selections,
    normalised by the union's size minus the own index) | per_example (supplement Algorithm 1: each example
    mixes over its own k neighbours, normalised by the M candidates minus copies of its own index)."""
    chunk_size: int = option(10000, minimum=1)
    """Exemplars encoded at once when the cache of all N exemplar means is refreshed."""

    def __post_init__(self):
        if self.mode == "retrieval" and self.k > self.components:
            raise ValueError(f"k={self.k} nearest neighbours cannot be chosen among components={self.components} "
                             "candidates; lower k or raise components")


@PRIORS.register("exemplar", ExemplarPriorConfig)
class ExemplarPrior(Prior):
    """p(z) = (1/N) sum_n N(z; mu(x_n), sigma^2 I) over the N training exemplars.

    Args:
        latent_dim: dimensionality of z.
        image_shape: (H, W, C) of a training image.
        num_train: N, the training-set size (the number of components and rows of the cache).
        components: M, exemplars per training step (exact) or kNN candidates per step (retrieval).
        mode: "exact" or "retrieval".
        k: nearest neighbours per example (retrieval).
        leave_one_out: mask each training example's own exemplar during training.
        retrieval_mixture: "union" (official code) or "per_example" (supplement Algorithm 1), retrieval mode.
        chunk_size: training images encoded at once when the cache is refreshed.
        eval_chunk: components per block of the evaluation mixture; None picks the largest block of at
            most 2^24 (rows x components) elements.
        seed: seed of the prior's own generator (log-variance init, sampling without an explicit seed).
    """

    def __init__(self, latent_dim, image_shape, num_train, components=25000, mode="exact", k=10,
                 leave_one_out=True, chunk_size=10000, eval_chunk=None, seed=0, retrieval_mixture="union", **kwargs):
        super().__init__(latent_dim, **kwargs)
        if mode not in MODES:
            raise ValueError(f"exemplar prior mode '{mode}' is not one of {list(MODES)}")
        if retrieval_mixture not in RETRIEVAL_MIXTURES:
            raise ValueError(f"exemplar prior retrieval_mixture '{retrieval_mixture}' is not one of "
                             f"{list(RETRIEVAL_MIXTURES)}")
        if num_train is None or num_train < 1:
            raise ValueError(
                "the exemplar prior needs the training-set size N (build_model(..., num_train=len(train)))"
            )
        if mode == "retrieval" and k > components:
            raise ValueError(
                f"model.prior.k={k} nearest neighbours cannot be chosen among model.prior.components="
                f"{components} candidates; lower k or raise components"
            )
        self.image_shape = tuple(image_shape)
        self.num_train = int(num_train)
        self.num_components = self.num_train
        self.components = int(components)
        self.mode = mode
        self.k = int(k)
        self.leave_one_out = leave_one_out
        self.retrieval_mixture = retrieval_mixture
        self.chunk_size = int(chunk_size)
        self.eval_chunk = eval_chunk
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)
        self.neighbours = ExactNearestNeighbours()
        self.exemplar_images = None

    def build(self, input_shape=None):
        # log sigma^2: one N(0, 1) draw (reference init), seeded
        log_var0 = float(np.random.default_rng(self.seed).normal())
        self.log_variance = self.add_weight(
            name="log_variance", shape=(), initializer=keras.initializers.Constant(log_var0)
        )
        # NaN until the first refresh: a never-filled cache fails loudly instead of acting as N(0, sigma^2 I)
        self.cache = self.add_weight(
            name="cache", shape=(self.num_train, self.latent_dim),
            initializer=keras.initializers.Constant(float("nan")), trainable=False,
        )

    # --- training data on the device -------------------------------------------------------------------
    def _check_images(self, images, what):
        shape = tuple(np.shape(images))
        expected = (self.num_train, *self.image_shape)
        if shape != expected:
            raise ValueError(
                f"{what}: got images of shape {shape}, expected the {self.num_train} training images "
                f"{expected} this exemplar prior was built for (num_train and image_shape must match the data)"
            )

    def attach_training_images(self, images):
        """Put the N training images (as stored: greyscale for dynamically binarised data, like the paper's
        exemplars) on the device for the training steps.

        The variable is created on first use, after the model is built (hence the tracker unlock, as Keras
        does for `_untrack_variable`), and is left out of weight files by `save_own_variables`.
        """
        self._check_images(images, "attach_training_images")
        images = np.asarray(images, dtype="float32")
        if self.exemplar_images is None:
            locked = self._tracker.locked
            self._tracker.unlock()
            try:
                self.exemplar_images = self.add_weight(
                    name="exemplar_images", shape=images.shape, initializer="zeros", trainable=False
                )
            finally:
                if locked:
                    self._tracker.lock()
        self.exemplar_images.assign(images)

    def _saved_variables(self):
        return [self.log_variance, self.cache]

    def save_own_variables(self, store):
        for i, v in enumerate(self._saved_variables()):
            store[f"{i}"] = v

    def load_own_variables(self, store):
        saved = self._saved_variables()
        if len(store.keys()) != len(saved):
            raise ValueError(
                f"exemplar prior: the weights file holds {len(store.keys())} variables for the prior, expected "
                f"{len(saved)} ({[v.name for v in saved]}); was it saved from a different prior?"
            )
        for i, v in enumerate(saved):
            v.assign(store[f"{i}"])

    # --- the cache of all N exemplar means ----------------------------------------------------------
    def encode_means(self, images):
        """Encoder means of `images` in chunks of `chunk_size`, without gradients: NumPy [n, d]."""
        out = []
        with _no_grad():
            for start in range(0, len(images), self.chunk_size):
                chunk = ops.convert_to_tensor(np.asarray(images[start: start + self.chunk_size], dtype="float32"))
                out.append(ops.convert_to_numpy(self._encode(chunk)[0]))
        return np.concatenate(out).astype("float32")

    def initialize_from_data(self, images, seed):
        """Fill the cache with the initial encoder's means, so the prior is usable before training."""
        self.refresh_cache(images)

    def refresh_cache(self, images):
        """Re-encode all N training images with the current encoder (before validation, each epoch)."""
        self._check_images(images, "refresh_cache")
        self.cache.assign(self.encode_means(images))

    # --- evaluation form ----------------------------------------------------------------------------
    def _component_chunk(self, rows):
        if self.eval_chunk is not None:
            return max(1, min(self.num_train, int(self.eval_chunk)))
        if not isinstance(rows, int):  # unknown, or symbolic (jax2tf export)
            return min(self.num_train, EVAL_CHUNK_UNKNOWN_ROWS)
        return max(1, min(self.num_train, EVAL_BLOCK_ELEMENTS // max(rows, 1)))

    def log_prob(self, z):
        """log (1/N) sum_n N(z; cache_n, sigma^2 I): a running logsumexp over blocks of components, so
        memory is O(rows x block) for any N (50,000 exemplars x 50,000 IWAE samples)."""
        z = ops.convert_to_tensor(z)
        n, d = self.num_train, self.latent_dim
        chunk = self._component_chunk(z.shape[0])
        log_var = ops.convert_to_tensor(self.log_variance)
        cache = ops.convert_to_tensor(self.cache)

        def block_lse(means):
            return log_mixture_isotropic(z, means, log_var, ops.zeros((ops.shape(means)[0],)))

        full = n // chunk
        total = block_lse(cache[:chunk])
        if full > 1:
            def body(i, acc):
                return ops.logaddexp(acc, block_lse(ops.slice(cache, (i * chunk, 0), (chunk, d))))

            total = ops.fori_loop(1, full, body, total)
        if n % chunk:
            total = ops.logaddexp(total, block_lse(cache[full * chunk:]))
        return total - math.log(n)

    # --- training forms -----------------------------------------------------------------------------
    def batch_index_draws(self):
        """Per-batch training-set indices the data pipeline must add: M candidates, uniform with replacement."""
        return {"exemplar_index": self.components}

    def _training_inputs(self, batch):
        if self.exemplar_images is None:
            raise ValueError(
                "the exemplar prior trains on its training images: call prior.attach_training_images(splits.train) "
                "before training (training.fit does it through model.training_callbacks)"
            )
        if "exemplar_index" not in batch:
            raise ValueError(
                "the training batch has no 'exemplar_index': build the training stream with "
                "training.data.train_dataset(..., index_draws=prior.batch_index_draws()) as training.fit does"
            )
        index = ops.cast(batch["index"], "int32")
        candidates = ops.cast(batch["exemplar_index"], "int32")
        return index, candidates

    def _exemplar_means(self, index):
        """Encoder means of training exemplars `index`, with gradients to the encoder."""
        return self._encode(ops.take(self.exemplar_images, index, axis=0))[0]

    def training_log_prob(self, z, batch):
        index, candidates = self._training_inputs(batch)
        if self.mode == "exact":
            return self._exact_log_prob(z, index, candidates)
        if self.retrieval_mixture == "per_example":
            return self._per_example_log_prob(z, batch["image"], index, candidates)
        return self._retrieval_log_prob(z, batch["image"], index, candidates)

    def _masked_mixture(self, z, means, index, members, keep=None):
        """log (1/M_eff) sum_j N(z_b; means_j, sigma^2 I) over the members j kept for row b: `keep` [M]
        (None: all), minus the row's own index under leave-one-out; M_eff counts the kept members."""
        valid = ops.ones((ops.shape(z)[0], ops.shape(members)[0]), dtype="bool")
        if keep is not None:
            valid = ops.logical_and(valid, keep[None, :])
        if self.leave_one_out:
            valid = ops.logical_and(valid, ops.not_equal(members[None, :], index[:, None]))
        count = ops.sum(ops.cast(valid, "float32"), axis=1)
        log_weights = ops.where(valid, -ops.log(count)[:, None], -math.inf)
        return log_mixture_isotropic(z, means, self.log_variance, log_weights)

    def _exact_log_prob(self, z, index, candidates):
        return self._masked_mixture(z, self._exemplar_means(candidates), index, candidates)

    def _retrieval_log_prob(self, z, images, index, candidates):
        """Supplement Algorithm 1 with fixed shapes: the union of the B x k selections is kept as B*k sorted
        indices in which only the first copy of each exemplar counts (later copies are masked), so every
        exemplar of the union enters the mixture and its normaliser once."""
        n = self.num_train
        # 1. the batch's current posterior means are the queries and replace their cache rows
        query = ops.stop_gradient(self._encode(images)[0])
        cache = ops.scatter_update(ops.convert_to_tensor(self.cache), index[:, None], query)
        # 2. k nearest candidates of each query (never the example itself under leave-one-out)
        excluded = ops.equal(candidates[None, :], index[:, None]) if self.leave_one_out else None
        nearest = self.neighbours.search(query, ops.take(cache, candidates, axis=0), self.k, excluded)
        # 3. the union, re-encoded with gradients
        selected = ops.sort(ops.reshape(ops.take(candidates, nearest), (-1,)))
        first = ops.concatenate([ops.ones((1,), dtype="bool"), ops.not_equal(selected[1:], selected[:-1])])
        means = self._exemplar_means(selected)
        log_p = self._masked_mixture(z, means, index, selected, keep=first)
        # 4. cache rows of the union get the fresh means; repeated copies write to a scratch row n
        target = ops.where(first, selected, n)
        extended = ops.concatenate([cache, ops.zeros((1, self.latent_dim))], axis=0)
        extended = ops.scatter_update(extended, target[:, None], ops.stop_gradient(means))
        self.cache.assign(extended[:n])
        return log_p

    def _per_example_log_prob(self, z, images, index, candidates):
        """Supplement Algorithm 1 as written: m(z_b) = (1/M_eff) sum over example b's own k nearest candidates of
        N(z_b; mu_j, sigma^2 I), M_eff = M minus the copies of b's own index among the candidates (exact mode's
        normaliser; Algorithm 1 draws M candidates without the own index). With k = M it is exact mode."""
        n, d, k = self.num_train, self.latent_dim, self.k
        query = ops.stop_gradient(self._encode(images)[0])
        cache = ops.scatter_update(ops.convert_to_tensor(self.cache), index[:, None], query)
        own = ops.equal(candidates[None, :], index[:, None])  # [B, M]
        excluded = own if self.leave_one_out else None
        nearest = self.neighbours.search(query, ops.take(cache, candidates, axis=0), k, excluded)
        selected = ops.take(candidates, nearest)  # [B, k] training-set indices, each row its own neighbours
        flat = ops.reshape(selected, (-1,))
        means = self._exemplar_means(flat)  # [B * k, d], with gradients
        per_row = ops.reshape(means, (-1, k, d))
        sq_dist = ops.sum(ops.square(z[:, None, :] - per_row), axis=-1)  # [B, k]
        log_kernel = -0.5 * (d * (LOG_2PI + self.log_variance) + sq_dist * ops.exp(-self.log_variance))
        count = ops.full((ops.shape(z)[0],), float(ops.shape(candidates)[0]))
        if self.leave_one_out:  # fewer than k other candidates: the own index never counts
            log_kernel = ops.where(ops.equal(selected, index[:, None]), -math.inf, log_kernel)
            count = count - ops.sum(ops.cast(own, "float32"), axis=1)
        log_p = ops.logsumexp(log_kernel, axis=-1) - ops.log(count)
        # the selections' cache rows get the fresh means (sorted, repeated copies to a scratch row n)
        order = ops.argsort(flat)
        rows = ops.take(flat, order)
        first = ops.concatenate([ops.ones((1,), dtype="bool"), ops.not_equal(rows[1:], rows[:-1])])
        extended = ops.concatenate([cache, ops.zeros((1, d))], axis=0)
        extended = ops.scatter_update(extended, ops.where(first, rows, n)[:, None],
                                      ops.stop_gradient(ops.take(means, order, axis=0)))
        self.cache.assign(extended[:n])
        return log_p

    # --- sampling -----------------------------------------------------------------------------------
    def _kernel(self, means, seed):
        eps = keras.random.normal(ops.shape(means), seed=self.seed_generator if seed is None else seed)
        return means + ops.exp(0.5 * self.log_variance) * eps

    def sample(self, num_samples, seed=None):
        """z ~ p(z): a cached exemplar mean chosen uniformly, plus N(0, sigma^2 I) noise."""
        index_seed, noise_seed = split_seed(self.seed_generator if seed is None else seed, 2)
        index = keras.random.randint((num_samples,), 0, self.num_train, seed=index_seed)
        return self._kernel(ops.take(self.cache, index, axis=0), noise_seed)

    def component_sample(self, index, num_samples, seed=None):
        """z ~ r(z | x_index) for training exemplar `index` (its cached mean)."""
        means = ops.repeat(ops.convert_to_tensor(self.cache)[index][None, :], num_samples, axis=0)
        return self._kernel(means, seed)

    def kernel_sample(self, images, seed=None):
        """z ~ r(z | x) = N(mu(x), sigma^2 I) for arbitrary images (exemplar-conditioned generation)."""
        return self._kernel(self._encode(ops.convert_to_tensor(images))[0], seed)

    def get_config(self):
        return {
            **super().get_config(),
            "image_shape": list(self.image_shape),
            "num_train": self.num_train,
            "components": self.components,
            "mode": self.mode,
            "k": self.k,
            "leave_one_out": self.leave_one_out,
            "retrieval_mixture": self.retrieval_mixture,
            "chunk_size": self.chunk_size,
            "eval_chunk": self.eval_chunk,
            "seed": self.seed,
        }


def iterative_generation(model, images, steps, seed=None):
    """Supplement G: x_0 -> z ~ r(z | x_0) -> x_1 = E[x | z] -> z ~ r(z | x_1) -> ... (generated means are
    reused as greyscale exemplars). Returns NumPy [steps + 1, n, H, W, C], chain[0] = `images`."""
    chain = [np.asarray(images, dtype="float32")]
    seeds = split_seed(seed if seed is not None else model.seed_generator, 2 * steps)
    for t in range(steps):
        z = model.prior.kernel_sample(chain[-1], seed=seeds[2 * t])
        chain.append(ops.convert_to_numpy(model.decode(z, seed=seeds[2 * t + 1])).astype("float32"))
    return np.stack(chain)
