"""Sample grids, found through the prior's interface (never by prior name).

* prior_samples: x = E[x | z], z ~ p(z).
* component_plates (ByPE Fig. 1, Exemplar supplement Fig. 2): each row is one mixture component, its
  input image first when the prior has one (`component_inputs`), then samples of `component_sample`.
* kernel_plates: each row a test image followed by samples z ~ r(z | x) of the prior's kernel.
* component_inputs: the learned pseudo-inputs / pseudo-points as images, largest weight first.
* reconstructions: test images (rows) above their reconstructions from the posterior means.
* interpolation (ByPE Fig. 2): two test images at the ends, decoded linear interpolations of their
  posterior means between them.
* iterative_from_data / iterative_from_noise (Exemplar supplement G): a chain x_{t+1} = E[x | z_t],
  z_t ~ r(z | x_t), started from a training image or from uniform noise; priors without a kernel use
  the posterior q(z | x_t) instead (the figure's metadata says which).

Each part a prior cannot make is skipped with the reason, and the rest is still drawn.
"""

import numpy as np
from keras import ops

from evaluation.common import Skipped, derive_seed, kernel_sample, posterior_sample
from training.figures import interleave_rows, save_grid

PLATES, PLATE_SAMPLES = 10, 11
INTERPOLATION_PAIRS, INTERPOLATION_STEPS = 8, 10
CHAINS, CHAIN_STEPS = 8, 30


def _numpy(x):
    return np.asarray(ops.convert_to_numpy(x), dtype="float32")


def component_log_weights(prior):
    """log mixture weights as float64 NumPy; `Skipped` when the prior is not a mixture."""
    if not prior.num_components:
        raise Skipped(f"{type(prior).__name__} has no mixture components")
    return np.asarray(ops.convert_to_numpy(prior.component_log_weights()), dtype="float64")


def choose_components(prior, count, seed):
    """`count` distinct components drawn with the mixture weights (components of zero weight never)."""
    log_w = component_log_weights(prior)
    p = np.exp(log_w - np.max(log_w))
    p /= p.sum()
    count = min(count, int(np.sum(p > 0)))
    return np.random.default_rng(seed).choice(len(p), count, replace=False, p=p)


def prior_samples(model, fns, seed, count=100):
    z = _numpy(model.prior.sample(count, seed=derive_seed(seed, "prior")))
    return fns.decode(z)


def component_plates(model, fns, seed):
    """Rows [component input?, PLATE_SAMPLES samples] and the chosen component indices."""
    prior = model.prior
    indices = choose_components(prior, PLATES, derive_seed(seed, "plates"))
    inputs = prior.component_inputs()
    rows = []
    for index in indices:
        try:
            z = prior.component_sample(int(index), PLATE_SAMPLES, seed=derive_seed(seed, "plate", int(index)))
        except NotImplementedError as error:
            raise Skipped(f"{type(prior).__name__} cannot sample one component ({error})") from None
        row = fns.decode(_numpy(z))
        if inputs is not None:
            row = np.concatenate([np.clip(_numpy(inputs[int(index)])[None], 0.0, 1.0), row])
        rows.append(row)
    return np.concatenate(rows), len(rows[0]), [int(i) for i in indices], inputs is not None


def component_input_images(prior, count=100):
    """Up to `count` component inputs, largest mixture weight first; `Skipped` if the prior has none."""
    inputs = prior.component_inputs()
    if inputs is None:
        raise Skipped(f"{type(prior).__name__} has no image-shaped component inputs")
    order = np.argsort(-component_log_weights(prior), kind="stable")[:count]
    return np.clip(_numpy(ops.take(inputs, ops.convert_to_tensor(order), axis=0)), 0.0, 1.0)


def kernel_plates(model, fns, images, seed):
    """Rows [x, PLATE_SAMPLES decoded samples of r(z | x)] for each image."""
    rows = []
    for i, image in enumerate(images):
        z = kernel_sample(model, np.repeat(image[None], PLATE_SAMPLES, axis=0), derive_seed(seed, "kernel_plate", i))
        rows.append(np.concatenate([image[None], fns.decode(z)]))
    return np.concatenate(rows)


def interpolations(fns, first, second):
    """Rows [a, decoded (1 - t) mu(a) + t mu(b) for t in linspace(0, 1), b]."""
    mu_a, mu_b = fns.means(first), fns.means(second)
    t = np.linspace(0.0, 1.0, INTERPOLATION_STEPS, dtype="float32")[None, :, None]
    z = ((1 - t) * mu_a[:, None] + t * mu_b[:, None]).reshape(-1, mu_a.shape[-1])
    decoded = fns.decode(z).reshape(len(first), INTERPOLATION_STEPS, *first.shape[1:])
    return np.concatenate([first[:, None], decoded, second[:, None]], axis=1).reshape(-1, *first.shape[1:])


def iterate(model, fns, start, seed):
    """Chains of CHAIN_STEPS generations from `start`; returns (images [chains * (steps + 1)], kernel name)."""
    rng = np.random.default_rng(seed)
    x, frames, kernel = start, [start], "prior kernel r(z | x)"
    for step in range(CHAIN_STEPS):
        try:
            z = kernel_sample(model, x, derive_seed(seed, "chain", step))
        except Skipped:
            kernel = "posterior q(z | x) (the prior has no input kernel)"
            z = posterior_sample(*fns.encode(x), rng)
        x = fns.decode(z)
        frames.append(x)
    return np.stack(frames, axis=1).reshape(-1, *start.shape[1:]), kernel


def sample_figures(model, fns, data, figures_dir, seed):
    """Write every grid the prior allows into `figures_dir`; returns the metrics.json section."""
    rng = np.random.default_rng(derive_seed(seed, "choose"))
    figures, skipped, info = {}, {}, {}

    def save(name, images, columns):
        save_grid(images, figures_dir / f"{name}.png", columns=columns)
        figures[name] = f"figures/{name}.png"

    save("prior_samples", prior_samples(model, fns, seed), 10)
    test = data.model_test[:50]
    save("reconstructions", interleave_rows(test, fns.decode(fns.means(test)), 10), 10)
    pairs = rng.choice(len(data.test), (INTERPOLATION_PAIRS, 2), replace=False)
    save("interpolation", interpolations(fns, data.test[pairs[:, 0]], data.test[pairs[:, 1]]), INTERPOLATION_STEPS + 2)
    info["interpolation_test_indices"] = pairs.tolist()

    try:
        images, columns, indices, with_inputs = component_plates(model, fns, seed)
        save("component_plates", images, columns)
        info["component_plates"] = {"components": indices, "first_column": "component input" if with_inputs else "sample"}
    except Skipped as reason:
        skipped["component_plates"] = str(reason)
    try:
        save("component_inputs", component_input_images(model.prior), 10)
    except Skipped as reason:
        skipped["component_inputs"] = str(reason)
    try:
        chosen = rng.choice(len(data.test), PLATES, replace=False)
        save("kernel_plates", kernel_plates(model, fns, data.test[chosen], seed), PLATE_SAMPLES + 1)
        info["kernel_plates_test_indices"] = chosen.tolist()
    except Skipped as reason:
        skipped["kernel_plates"] = str(reason)

    starts = {
        "iterative_from_data": data.train[rng.choice(len(data.train), CHAINS, replace=False)],
        "iterative_from_noise": rng.uniform(0.0, 1.0, (CHAINS, *data.train.shape[1:])).astype("float32"),
    }
    for name, start in starts.items():
        images, kernel = iterate(model, fns, start, derive_seed(seed, name))
        save(name, images, CHAIN_STEPS + 1)
        info[f"{name}_kernel"] = kernel
    return {"figures": figures, **info, "skipped": skipped}
