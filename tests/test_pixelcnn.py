"""PixelCNN decoders (`layers.masked_conv`, `layers.pixelcnn`, `zoo.autoregressive`, pixel_vae, pixel_hvae).

The oracles do not reuse the code under test:

* causality and receptive fields: exact input gradients (`layers.autodiff.input_gradient`, the backend's own
  autodiff) of every output position, compared with the receptive field written down from the architectures'
  definitions (offsets of the masked taps, the two stacks' reach), not from the layers' code. A masked tap
  multiplies by an exact 0, so a position outside the field has a gradient of exactly 0.0 on every backend;
* normalisation: brute-force enumeration of every image (16 binary 2x2 images, 64 binary 1x2x3 images, all
  256^2 8-bit 1x2 images), summed in float64;
* sampling: chi-square tests of the pixel-by-pixel sampler's frequencies against exp(log p) of the same
  enumeration; the windowed sampler against the full one;
* export and training: the SavedModel against `exports.signatures.reference` (eager Keras), a resumed run
  against an uninterrupted one.

Models are tiny (2 decoder layers of 12 channels) so the checks stay in seconds on two CPU cores; the export, the
dataset-sized shapes and training are marked slow.
"""

import itertools
import json
import math

import keras
import numpy as np
import pytest
from keras import ops
from scipy import stats

from layers.autodiff import BACKEND, input_gradient
from layers.likelihoods.discretized_logistic import DiscretizedLogistic
from layers.pixelcnn import CONDITIONINGS, VERTICAL_SHIFTS, GatedPixelCNN, PixelCNN
from tests.helpers import _np, _t
from training import config as config_lib
from zoo.base import build_model

LATENT = 3
# 2 decoder layers of 12 channels (a multiple of 1 and 3 colour channels; 4 per colour group, so that every path of
# a receptive field shows in a few random initialisations although ReLU units die). One width and one kernel list
# everywhere, also in the trunk-level tests: eager JAX compiles every operation once per operand shape.
TINY = {
    "pixel_vae": dict(encoder_channels=4, decoder_channels=12, kernel_sizes=[5, 3], z_maps=2),
    "pixel_hvae": dict(hidden_units=8, decoder_depth=2, decoder_channels=12, kernel_size=3),
}
ARCHITECTURES = list(TINY)
LOGISTIC_OPEN = {"name": "discretized_logistic", "end_bins": "open"}
FIELD_SHAPE = (7, 7)  # big enough for every receptive field below to fit inside for the central pixels


def build(architecture, shape, likelihood="bernoulli", seed=0, **options):
    """A tiny pixel model from a validated `model` section, as `fit` builds it (global seed set first)."""
    raw = {"architecture": architecture, "latent_dim": LATENT, "prior": "standard_normal", "likelihood": likelihood,
           **TINY[architecture], **options}
    keras.utils.set_random_seed(seed)
    return build_model(config_lib.from_dict({"model": raw}).model, shape, seed=seed, num_train=10)


def sharpen(model, trunk=2.0, head=None, log_scale=-4.0):
    """Move the random initialisation away from a near-uniform p(x | z), so the distribution checks have power.

    At the initialisation the per-pixel conditionals are close to uniform and barely depend on the past pixels
    (the 16 binary 2x2 images have probabilities within a factor 3 of 1/16): a sampler that ignored the past
    would pass the chi-square tests below. Scaling the trunk's kernels by 2 and the mean / logit head by 10 (Bernoulli) or
    3 (logistic), and moving the logistic's log-scale to about -4 (scale 0.018, ~5 bins), gives probabilities
    over orders of magnitude that depend strongly on the earlier pixels."""
    for v in model.pixel_trunk.weights:
        if len(v.shape) >= 2:
            v.assign(_np(v) * trunk)
    discrete_logistic = isinstance(model.likelihood, DiscretizedLogistic)
    factor = head if head is not None else (3.0 if discrete_logistic else 10.0)
    first = model.likelihood.heads[0]
    first.kernel.assign(_np(first.kernel) * factor)
    first.bias.assign(_np(first.bias) * factor)
    if len(model.likelihood.heads) > 1:  # the per-pixel log-scale head
        bias = model.likelihood.heads[1].bias
        bias.assign(_np(bias) + log_scale)
    elif discrete_logistic:  # the global log-scale weight
        model.likelihood.log_scale.assign(log_scale)
    return model


def latents(model, n, seed=0, scale=1.5):
    """Latents for the conditioning maps, one draw repeated n times: z (pixel_vae) or (z1, z2) (pixel_hvae)."""
    rng = np.random.default_rng(seed)
    draws = [np.repeat(scale * rng.normal(size=(1, LATENT)), n, axis=0) for _ in range(model.stochastic_layers)]
    return [_t(z) for z in draws]


def conditioning_maps(model, n, seed=0):
    return model.conditioning_maps(*latents(model, n, seed))


def conditional_log_prob(model, x, seed=0):
    """log p(x | z) through the model's public scoring method, for one latent draw (z, or z1 and z2)."""
    zs = latents(model, len(x), seed)
    if model.stochastic_layers == 1:
        return _np(model.conditional_log_prob(_t(x), *zs))
    return _np(model.log_px(_t(x), *zs))


def conditional_samples(model, n, seed, latent_seed=0):
    """n draws x ~ p(x | z) for one latent draw: `decode` (pixel_vae) or `generate` (pixel_hvae, z1 fixed)."""
    zs = latents(model, n, latent_seed)
    if model.stochastic_layers == 1:
        return _np(model.decode(*zs, seed=seed))
    return _np(model.generate(*zs, seed=seed))


def all_binary_images(shape):
    return np.array(list(itertools.product([0.0, 1.0], repeat=math.prod(shape))), dtype="float32").reshape(-1, *shape)


def image_index(images, levels):
    """Each image's index in the raster-then-channel enumeration of `all_binary_images` / the 8-bit grid."""
    digits = np.asarray(images).reshape(len(images), -1).astype(np.int64)
    return digits @ (levels ** np.arange(digits.shape[1])[::-1])


# --------------------------------------------------------------------------------------------------
# Receptive fields, from the architectures' definitions
# --------------------------------------------------------------------------------------------------


def field(shape, rows, left):
    """E[p, q]: output position p = (i, j, g) may depend on input position q (raster-then-channel indices).

    `rows[dr]` is how far right the output reaches dr >= 1 rows above its own, `left` how far left it
    reaches on every row; on its own row it sees the columns left of it, and at its own pixel the colour
    channels c < g (every channel of every other pixel it reaches)."""
    height, width, channels = shape
    e = np.zeros((height, width, channels, height, width, channels), dtype=bool)
    for i, j, g in itertools.product(range(height), range(width), range(channels)):
        e[i, j, g, i, max(j - left, 0):j, :] = True
        e[i, j, g, i, j, :g] = True
        for dr, right in rows.items():
            if i - dr >= 0:
                e[i, j, g, i - dr, max(j - left, 0): j + right + 1, :] = True
    n = height * width * channels
    return e.reshape(n, n)


def pixelcnn_field(shape, depth, kernel_size):
    """`depth` stacked k x k masked convolutions: each layer moves the field by one tap of its mask, i.e. up to
    p = k // 2 rows up and p columns either way, or along its own row up to p columns left. dr rows up takes
    at least one row-up tap per p rows and at most one per layer, so the right reach there is min(depth, dr) p:
    the blind spot (van den Oord et al. 2016, Conditional PixelCNN, Figure 1)."""
    p = kernel_size // 2
    return field(shape, {dr: min(depth, dr) * p for dr in range(1, depth * p + 1)}, depth * p)


def gated_field(shape, kernel_sizes, vertical_shift):
    """Gated two-stack blocks with P_l = sum of k // 2 over blocks 1..l. The vertical stack after block l sees
    rows up to P_l above and P_l columns either way; block l's link feeds it to the horizontal stack one row down
    ("link": rows 1 .. 1 + P_l above) or l rows down, one per shifted block ("every_layer": rows l .. l + P_l);
    the horizontal stack reaches P_L columns left on its own row, and after the link at block l, P_L - P_l
    further left of the link's own reach."""
    reach = np.cumsum([k // 2 for k in kernel_sizes])
    rows = {}
    for l, p_l in enumerate(reach, start=1):
        first = 1 if vertical_shift == "link" else l
        for dr in range(first, first + int(p_l) + 1):
            rows[dr] = max(rows.get(dr, 0), int(p_l))
    return field(shape, rows, int(reach[-1]))


def influence(fn, x):
    """I[p, q] = (d out[p] / d x[q] != 0) for the output position p = (i, j, g) of out = fn(x) [1, H, W, K],
    where out[p] sums the channels k with k mod C = g (C = x's channels: the colour group of a feature).

    One backward pass: x repeated once per output position, row b selecting its own position b."""
    height, width, channels = x.shape[1:]
    n = height * width * channels
    xs = _t(np.repeat(x, n, axis=0))
    out_channels = ops.shape(fn(xs))[-1]
    select = np.zeros((n, height, width, out_channels), dtype="float32")
    for b, (i, j, g) in enumerate(itertools.product(range(height), range(width), range(channels))):
        select[b, i, j, g::channels] = 1.0
    grad = input_gradient(lambda xx: ops.sum(fn(xx) * _t(select), axis=(1, 2, 3)), xs)
    grad = _np(grad).reshape(n, n)
    assert np.all(np.isfinite(grad))
    return grad != 0.0


def assert_causal_field(observed_by_seed, expected):
    """No seed sees a position at or after its own (raster, then channel), nor outside `expected`; together the
    seeds see every position of `expected` (no blind spot beyond the architecture's own)."""
    n = expected.shape[0]
    at_or_after = np.triu(np.ones((n, n), dtype=bool))  # q >= p
    for seed, observed in enumerate(observed_by_seed):
        leaks = np.argwhere(observed & at_or_after)
        assert not len(leaks), f"seed {seed}: outputs depend on inputs at or after them (p, q): {leaks[:5].tolist()}"
        outside = np.argwhere(observed & ~expected)
        assert not len(outside), f"seed {seed}: dependence outside the receptive field (p, q): {outside[:5].tolist()}"
    union = np.logical_or.reduce(observed_by_seed)
    missing = np.argwhere(expected & ~union)
    assert not len(missing), f"inputs of the receptive field without influence (p, q): {missing[:5].tolist()}"
    assert np.any(expected & ~at_or_after)  # the field is not empty: the oracle itself is not vacuous
    assert np.all(expected <= ~at_or_after)


def field_height(expected, shape):
    height, width, channels = shape
    e = expected.reshape(height, width, channels, height, width, channels)
    return max(i - r for i, _, _, r, _, _ in np.argwhere(e))


# --------------------------------------------------------------------------------------------------
# 1. Causality: the trunks (every option) and the models' per-pixel parameters
# --------------------------------------------------------------------------------------------------

PIXELCNN_DEPTH, PIXELCNN_KERNEL = 3, 3
GATED_KERNELS = TINY["pixel_vae"]["kernel_sizes"]  # two blocks of different sizes: P_1 = 2, P_2 = 3
# ReLU units of the PixelCNN are dead for about half of the inputs; 4 seeds make a receptive-field position that
# no seed reaches improbable
TRUNK_CHANNELS, TRUNK_SEEDS = TINY["pixel_vae"]["decoder_channels"], 4
TRUNK_CASES = ([("pixelcnn", c, None, channels) for c in CONDITIONINGS for channels in (1, 3)]
               + [("gated", c, s, channels) for c in CONDITIONINGS for s in VERTICAL_SHIFTS for channels in (1, 3)])


@pytest.mark.parametrize("trunk,conditioning,vertical_shift,channels", TRUNK_CASES)
def test_trunk_is_causal_with_the_architectures_receptive_field(trunk, conditioning, vertical_shift, channels):
    """For random weights and inputs (4 seeds), d feature(i, j, g) / d x(q) is exactly 0 for every image position q
    at or after (i, j, g) in raster-then-channel order, and nonzero (for some seed) for every q of the receptive
    field the architecture defines (`pixelcnn_field`, `gated_field`): the PixelCNN has exactly the blind spot of
    stacked masked convolutions, the gated "link" trunk none (the rows above are seen P columns either way), and
    "every_layer" loses one row of reach per block. `rows_above` (the window sampler trusts it) is that field's
    height. 7x7 images, 2 maps, 12 channels."""
    shape = (*FIELD_SHAPE, channels)
    if trunk == "pixelcnn":
        expected = pixelcnn_field(shape, PIXELCNN_DEPTH, PIXELCNN_KERNEL)
    else:
        expected = gated_field(shape, GATED_KERNELS, vertical_shift)
    observed, rows_above = [], set()
    for seed in range(TRUNK_SEEDS):
        keras.utils.set_random_seed(seed)
        if trunk == "pixelcnn":
            layer = PixelCNN(channels, PIXELCNN_DEPTH, TRUNK_CHANNELS, PIXELCNN_KERNEL, conditioning)
        else:
            layer = GatedPixelCNN(channels, TRUNK_CHANNELS, GATED_KERNELS, conditioning, vertical_shift)
        layer.build((None, *FIELD_SHAPE, channels + 2))
        rows_above.add(layer.rows_above)
        rng = np.random.default_rng(seed)
        x = rng.normal(size=(1, *shape)).astype("float32")
        maps = _t(np.repeat(rng.normal(size=(1, *FIELD_SHAPE, 2)), len(x) * math.prod(shape), axis=0))
        observed.append(influence(lambda xx: layer(ops.concatenate([xx, maps], axis=-1)), x))
    assert rows_above == {field_height(expected, shape)}
    assert_causal_field(observed, expected)


MODEL_CAUSALITY_CASES = [
    ("pixel_vae", 1, "bernoulli", {}),
    ("pixel_vae", 3, "discretized_logistic", {"conditioning": "every_layer", "vertical_shift": "every_layer"}),
    ("pixel_hvae", 1, "discretized_logistic", {"conditioning": "every_layer"}),
    ("pixel_hvae", 3, "bernoulli", {}),
]


@pytest.mark.parametrize("architecture,channels,likelihood,options", MODEL_CAUSALITY_CASES)
def test_model_pixel_parameters_are_causal(architecture, channels, likelihood, options):
    """The model's per-pixel likelihood parameters (Bernoulli logits, logistic means) for conditioning maps of a
    fixed z (maps come from z alone, so they carry no image information): exactly 0 gradient with respect to
    every image position at or after the parameter's own, and the trunk's receptive field (the colour-masked
    1x1 head adds no dependence) seen in full over 3 initialisations and latent draws. The
    logistic's log-scale (clipped, so part of its gradient is 0) must not depend on anything outside the field."""
    shape = (*FIELD_SHAPE, channels)
    if architecture == "pixel_vae":
        expected = gated_field(shape, TINY[architecture]["kernel_sizes"], options.get("vertical_shift", "link"))
    else:
        expected = pixelcnn_field(shape, TINY[architecture]["decoder_depth"], TINY[architecture]["kernel_size"])
    n = math.prod(shape)
    observed, log_scales = [], []
    for seed in range(TRUNK_SEEDS - 1):
        model = build(architecture, shape, likelihood, seed=seed, **options)
        maps = conditioning_maps(model, n, seed)
        x = (np.random.default_rng(seed).random((1, *shape)) < 0.5).astype("float32")
        observed.append(influence(lambda xx: model.pixel_params(xx, maps)[0], x))
        if len(model.likelihood.parameters) > 1:  # the logistic's log-scale head: clipped, so no field check
            log_scales.append(influence(lambda xx: model.pixel_params(xx, maps)[1], x))
        assert model.pixel_trunk.rows_above == field_height(expected, shape)
    assert_causal_field(observed, expected)
    for seed, observed_log_scale in enumerate(log_scales):
        assert not np.any(observed_log_scale & ~expected), f"seed {seed}: the log-scale head leaks"
    assert likelihood == "bernoulli" or np.any(log_scales)


# --------------------------------------------------------------------------------------------------
# 2. Normalisation: sum over every image of p(x | z) = 1
# --------------------------------------------------------------------------------------------------

NORMALISATION_CASES = [
    ("pixel_vae", {}), ("pixel_vae", {"conditioning": "every_layer", "vertical_shift": "every_layer"}),
    ("pixel_hvae", {}), ("pixel_hvae", {"conditioning": "every_layer"}),
]


@pytest.mark.parametrize("architecture,options", NORMALISATION_CASES)
@pytest.mark.parametrize("shape", [(2, 2, 1), (1, 2, 3)], ids=["2x2x1", "1x2x3"])
def test_bernoulli_conditional_sums_to_one_over_all_images(architecture, options, shape):
    """sum over all 16 binary 2x2 images (64 binary 1x2x3 images: colour order) of p(x | z) is 1 within 1e-5
    for a random z (z1 and z2 for pixel_hvae), scored by `conditional_log_prob` / `log_px`: a product of
    per-pixel Bernoullis sums to 1 exactly when each pixel's conditional ignores itself and the pixels after it.
    Weights `sharpen`ed, so a leak of a pixel into its own conditional moves the sum visibly."""
    model = sharpen(build(architecture, shape, **options))
    images = all_binary_images(shape)
    log_p = conditional_log_prob(model, images, seed=4)
    assert np.all(np.isfinite(log_p)) and np.ptp(log_p) > 2.0  # far from the uniform distribution
    assert abs(np.logaddexp.reduce(log_p)) < 1e-5, np.logaddexp.reduce(log_p)


def all_8bit_images(width=2):
    """Every 1 x width 8-bit image on the data grid (k + 0.5) / 256, in raster order of the bins."""
    bins = np.array(list(itertools.product(range(256), repeat=width)))
    return ((bins + 0.5) / 256).astype("float32").reshape(-1, 1, width, 1)


@pytest.mark.parametrize("architecture,likelihood", [
    ("pixel_vae", LOGISTIC_OPEN),
    ("pixel_hvae", {**LOGISTIC_OPEN, "scale": "global", "min_scale": 0.001}),
])
def test_open_logistic_conditional_sums_to_one_over_all_8bit_images(architecture, likelihood):
    """Open end bins: sum over all 256^2 1x2 8-bit images of p(x | z) is 1 within 1e-4 (float32 log-probabilities,
    summed in float64), at the initialisation (scale ~1) and `sharpen`ed (scale ~0.02)."""
    for model in (build(architecture, (1, 2, 1), likelihood), sharpen(build(architecture, (1, 2, 1), likelihood))):
        log_p = conditional_log_prob(model, all_8bit_images(), seed=5)
        assert np.all(np.isfinite(log_p))
        assert abs(np.logaddexp.reduce(log_p)) < 1e-4, np.logaddexp.reduce(log_p)
    assert np.ptp(log_p) > 10.0  # the sharpened model: scale ~0.02, far from uniform


def test_closed_logistic_loses_the_mass_outside_the_unit_interval():
    """Closed end bins (the VampPrior reference): the same enumeration sums to less than 1 (about 0.1 at the
    initialisation, whose scales are ~1)."""
    model = build("pixel_vae", (1, 2, 1), "discretized_logistic")
    total = np.logaddexp.reduce(conditional_log_prob(model, all_8bit_images(), seed=5))
    assert total < -1e-3, total


# --------------------------------------------------------------------------------------------------
# 3. Sampling
# --------------------------------------------------------------------------------------------------

NUM_DRAWS = 20_000
P_VALUE = 1e-3


def chi_square_p_value(counts, probabilities, min_expected=5.0):
    """Pearson's test of counts against probabilities; cells expecting fewer than `min_expected` are pooled."""
    expected = probabilities * counts.sum()
    small = expected < min_expected
    observed = np.append(counts[~small], counts[small].sum())
    expected = np.append(expected[~small], expected[small].sum())
    if expected[-1] == 0:
        observed, expected = observed[:-1], expected[:-1]
    expected *= observed.sum() / expected.sum()
    return stats.chisquare(observed, expected).pvalue


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_binary_samples_follow_the_conditional(architecture):
    """20,000 draws x ~ p(x | z) of the pixel-by-pixel sampler for one z (pixel_vae: `decode`; pixel_hvae:
    `generate` with z1 fixed) have the frequencies exp(log p(x | z)) of the 16 binary 2x2 images (chi-square
    p-value > 1e-3; `sharpen`ed weights: a sampler that ignores the earlier pixels, or draws from logits scaled by
    0.9, gives p-values below 1e-9 here)."""
    model = sharpen(build(architecture, (2, 2, 1)))
    probabilities = np.exp(conditional_log_prob(model, all_binary_images((2, 2, 1)), seed=4))
    assert probabilities.max() > 10 * probabilities.min()  # the test has power (see `sharpen`)
    samples = conditional_samples(model, NUM_DRAWS, seed=17, latent_seed=4)
    assert set(np.unique(samples)) <= {0.0, 1.0}
    counts = np.bincount(image_index(samples, 2), minlength=16)
    p_value = chi_square_p_value(counts, probabilities)
    assert p_value > P_VALUE, (p_value, counts, np.round(probabilities * NUM_DRAWS))


@pytest.mark.parametrize("end_bins", ["open", "closed"])
def test_logistic_samples_follow_the_open_bin_distribution(end_bins):
    """20,000 draws from the 1x2 8-bit pixel_vae lie on the (k + 0.5) / 256 grid and follow the open-end-bin
    probabilities of the same weights (chi-square on a 16 x 16 grid of 16-bin cells): exact for open bins, and
    the documented renormalisation (the lost mass goes to the end bins) for closed ones. `sharpen`ed weights
    (measured on TensorFlow): with open bins (scale ~0.02) a sampler that ignores the earlier pixel, or rounds to
    the nearest bin edge (half a bin off), gives p-values below 1e-7; with closed bins the scale is ~0.37, so
    that ~40% of the mass lies outside [0, 1], and a sampler truncated to [0, 1] instead gives a p-value of 0."""
    model = build("pixel_vae", (1, 2, 1), {"name": "discretized_logistic", "end_bins": end_bins})
    sharpen(model, log_scale=-4.0 if end_bins == "open" else -1.0)
    scorer = model
    if end_bins == "closed":
        lost = 1.0 - np.exp(np.logaddexp.reduce(conditional_log_prob(model, all_8bit_images(), seed=5)))
        assert lost > 0.05, lost  # the end bins carry visible mass: they are what this case checks
        scorer = build("pixel_vae", (1, 2, 1), LOGISTIC_OPEN, seed=1)
        scorer.set_weights(model.get_weights())
    probabilities = np.exp(conditional_log_prob(scorer, all_8bit_images(), seed=5))
    assert abs(probabilities.sum() - 1.0) < 1e-4
    samples = conditional_samples(model, NUM_DRAWS, seed=23, latent_seed=5)
    bins = samples * 256 - 0.5
    np.testing.assert_allclose(bins, np.round(bins), atol=1e-3)
    bins = np.round(bins).astype(np.int64).reshape(NUM_DRAWS, 2)
    assert bins.min() >= 0 and bins.max() <= 255
    cells = (bins // 16) @ np.array([16, 1])
    counts = np.bincount(cells, minlength=256)
    cell_probabilities = probabilities.reshape(16, 16, 16, 16).sum(axis=(1, 3)).ravel()
    p_value = chi_square_p_value(counts, cell_probabilities)
    assert p_value > P_VALUE, p_value


WINDOW_CASES = [
    ("pixel_hvae", "bernoulli", 1, {}),
    ("pixel_hvae", LOGISTIC_OPEN, 1, {}),
    ("pixel_hvae", "bernoulli", 3, {"conditioning": "every_layer"}),
    ("pixel_vae", "discretized_logistic", 1, {}),
    ("pixel_vae", "bernoulli", 1, {"conditioning": "every_layer", "vertical_shift": "every_layer"}),
]


@pytest.mark.parametrize("architecture,likelihood,channels,options", WINDOW_CASES)
def test_window_sampler_draws_the_same_images_as_the_full_one(architecture, likelihood, channels, options):
    """With a receptive field shorter than the image (rows_above + 1 < 7 rows), the "window" sampler, which runs
    the trunk on rows_above + 1 rows per step, draws exactly the images of the "full" sampler (the trunk on the
    whole image every step) for the same weights, latents and seed."""
    shape = (*FIELD_SHAPE, channels)
    window = build(architecture, shape, likelihood, sampler="window", **options)
    full = build(architecture, shape, likelihood, seed=1, sampler="full", **options)
    full.set_weights(window.get_weights())
    assert window.pixel_trunk.rows_above + 1 < shape[0]
    a = conditional_samples(window, 3, seed=31)
    b = conditional_samples(full, 3, seed=31)
    np.testing.assert_array_equal(a, b)
    assert a.shape == (3, *shape) and np.all((a >= 0) & (a <= 1))
    assert np.ptp(a.reshape(3, -1), axis=1).min() > 0 and len({x.tobytes() for x in a}) == 3  # not degenerate


# --------------------------------------------------------------------------------------------------
# 4. Shapes
# --------------------------------------------------------------------------------------------------


@pytest.mark.slow  # JAX: ~25 s of eager compilation for the three shapes; the draws are 560 + 147 sequential steps
@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_shapes_on_dataset_sizes(architecture):
    """28x28x1 (MNIST), 28x20x1 (Frey faces) and 32x32x3 (SVHN, CIFAR): the models build, `encode` gives
    [B, latent_dim] and the IWAE log-likelihood one finite, negative value per image. The draws are sequential
    (H * W * C steps), so `sample` runs at 28x20x1 only (560 steps) and `reconstruct` on a 7x7x3 colour image
    (147 steps); both give binary images of the model's shape."""
    for shape in ((28, 28, 1), (28, 20, 1), (32, 32, 3)):
        model = build(architecture, shape)
        x = (np.random.default_rng(0).random((2, *shape)) < 0.5).astype("float32")
        mean, log_var = model.encode(_t(x))
        assert tuple(mean.shape) == tuple(log_var.shape) == (2, LATENT)
        log_px = model.log_likelihood(x, num_samples=2)
        assert log_px.shape == (2,) and np.all(np.isfinite(log_px)) and np.all(log_px < 0)
        if shape == (28, 20, 1):
            images = _np(model.sample(1, seed=3))
            assert images.shape == (1, *shape) and set(np.unique(images)) <= {0.0, 1.0}
    shape = (*FIELD_SHAPE, 3)
    x = (np.random.default_rng(1).random((1, *shape)) < 0.5).astype("float32")
    images = _np(build(architecture, shape).reconstruct(_t(x), seed=3))
    assert images.shape == (1, *shape) and set(np.unique(images)) <= {0.0, 1.0}


# --------------------------------------------------------------------------------------------------
# 5. SavedModel
# --------------------------------------------------------------------------------------------------


@pytest.mark.slow  # export and reload: ~7 s on TensorFlow, ~14 s through jax2tf
@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_saved_model_sampling_signatures_reproduce_the_keras_model(architecture, tmp_path):
    """The exported signatures that draw pixel by pixel in-graph (`sample`: z ~ p(z) then x ~ p(x | z); `decode`;
    `reconstruct`) return exactly the images `exports.signatures.reference` draws eagerly with the Keras model for
    the same inputs and seed. 7x7 images, so the in-graph loop runs the windowed sampler (rows_above + 1 < 7)."""
    if BACKEND not in ("tensorflow", "jax"):
        pytest.skip("in-process SavedModel export needs TensorFlow or JAX (tests/test_exports.py covers PyTorch's "
                    "re-run of the export CLI on TensorFlow)")
    import tensorflow as tf

    from exports import saved_model
    from exports.signatures import SIGNATURES, reference

    shape = (*FIELD_SHAPE, 1)
    model = build(architecture, shape)
    assert model.pixel_trunk.rows_above + 1 < shape[0]
    target = saved_model.export(model, tmp_path, "pixel", version=1,
                                limits=saved_model.Limits(max_samples=8, max_batch=8, max_pairs=64))
    loaded = tf.saved_model.load(str(target))
    rng = np.random.default_rng(2)
    values = dict(num_samples=3, seed=3, z=rng.normal(size=(3, LATENT)).astype("float32"),
                  images=(rng.random((3, *shape)) < 0.5).astype("float32"))
    for name in ("sample", "decode", "reconstruct"):
        inputs = {key: values[key] for key in SIGNATURES[name][0]}
        expected = reference(model, name, **inputs)
        fn = loaded.signatures[name]
        specs = fn.structured_input_signature[1]
        outputs = fn(**{k: tf.constant(v, dtype=specs[k].dtype) for k, v in inputs.items()})
        got = {k: v.numpy() for k, v in outputs.items()}
        assert set(got) == set(expected) == {"images"}, name
        assert got["images"].shape == (3, *shape), name
        np.testing.assert_array_equal(got["images"], expected["images"], err_msg=name)
        assert len({x.tobytes() for x in expected["images"]}) == 3, name


# --------------------------------------------------------------------------------------------------
# 6. Training through training.fit
# --------------------------------------------------------------------------------------------------


def pixel_digits_config(epochs):
    from tests.test_fit import digits_config

    return digits_config("pixel_vae", "standard_normal", epochs=epochs, batch_size=200, warmup_epochs=0,
                         sets=[f"model.{k}={json.dumps(v)}" for k, v in TINY["pixel_vae"].items()]
                         + ["model.latent_dim=2"])


@pytest.mark.slow  # three short runs on the digits: ~15-35 s
def test_short_training_lowers_the_validation_loss_and_resumes_exactly(tmp_path):
    """`training.fit.train` of a tiny pixel_vae on the 8x8 digits: 2 epochs lower the validation loss below its
    value before training by more than 1 nat; 1 epoch, stop, resume to 2 gives the same history, variables (seed
    generators included) and optimizer state as the 2 epochs in one go, bit for bit."""
    from tests.test_contract import LossBeforeTraining
    from tests.test_fit import history
    from training import data as data_lib, fit

    straight, split = tmp_path / "straight", tmp_path / "split"
    config = pixel_digits_config(epochs=2)
    validation = data_lib.eval_dataset(data_lib.load_splits(config.data).validation, config.train.eval_batch_size)
    # both runs evaluate before their first step (it draws from the model's seed generator, as training does)
    before, before_split = LossBeforeTraining(validation), LossBeforeTraining(validation)
    model_a, _ = fit.train(config, straight, run_evaluation=False, extra_callbacks=[before])
    rows_a = history(straight)
    assert len(rows_a) == 2 and all(math.isfinite(float(r["val_loss"])) for r in rows_a)
    assert float(rows_a[-1]["val_loss"]) < before.value - 1.0, (before.value, rows_a)

    fit.train(pixel_digits_config(epochs=1), split, run_evaluation=False, extra_callbacks=[before_split])
    assert before_split.value == before.value
    assert json.loads((split / "checkpoint" / "state.json").read_text())["epoch"] == 1
    model_b, _ = fit.train(config, split, resume=True, run_evaluation=False)
    rows_b = history(split)
    assert [r["epoch"] for r in rows_b] == ["1", "2"]
    assert rows_a == rows_b
    assert len(model_a.variables) == len(model_b.variables)
    for va, vb in zip(model_a.variables, model_b.variables):
        np.testing.assert_array_equal(_np(va), _np(vb), err_msg=va.path)
    for va, vb in zip(model_a.optimizer.variables, model_b.optimizer.variables):
        np.testing.assert_array_equal(_np(va), _np(vb), err_msg=va.path)
