"""Autoregressive decoders p(x | z) = prod_i p(x_i | x_<i, z): scoring in one pass, sampling pixel by pixel.

Scoring (training, the IWAE) is teacher forcing: one pass of the PixelCNN trunk over the true image gives every
pixel's conditional at once. Sampling is sequential: H * W * C steps (one per pixel and colour channel, in
raster then channel order), compiled as one `keras.ops.fori_loop` (`lax.fori_loop` on JAX, a `tf.while_loop` on
TensorFlow and in the SavedModel, a Python loop on PyTorch). The uniform noise of all steps is drawn before the
loop, so a sample is a deterministic function of (z, seed), the same in Keras and in the SavedModel.

Samplers:
* "full": every step runs the trunk on the whole image (the reference's `pixelcnn_generate`; the conditioning
  maps are computed once, not per step);
* "window": every step runs the trunk on the `rows_above + 1` rows that end at the current one. The output
  there is exact: a wrong value from the window's artificial top edge moves down at most one receptive row
  per layer and never reaches the last row. It is used when the window is smaller than the image (the
  VampPrior PixelCNN: 9 of 28 rows); otherwise it is the full sampler.
"""

import keras
from keras import ops

SAMPLERS = ("window", "full")


class AutoregressiveDecoder:
    """Mixin of the pixel architectures: the model has `pixel_trunk` (a `layers.pixelcnn` trunk), a likelihood
    with a "pixel" head, and `sampler`; decoders pass conditioning maps [B, H, W, m] computed from the latents."""

    likelihood_head = "pixel"
    autoregressive = True

    def decoder_mean(self, z):
        """None exists: E[x | z] of a PixelCNN needs every pixel's past (priors that need it are refused)."""
        raise NotImplementedError(f"{type(self).__name__} draws x pixel by pixel and has no decoder mean E[x | z]")

    def pixel_params(self, x, maps):
        """The likelihood's per-pixel parameters given the image x (teacher forcing) and the maps."""
        return self.likelihood(self.pixel_trunk(ops.concatenate([x, maps], axis=-1)))

    def pixel_log_prob(self, x, maps):
        """log p(x | z) per image, one pass."""
        return self.likelihood.log_prob(x, self.pixel_params(x, maps))

    def pixel_log_prob_samples(self, x, maps, num_samples):
        """log p(x | z_s) [B, S] for maps of S latents per image (image-major rows)."""
        x_rows = ops.repeat(ops.convert_to_tensor(x), num_samples, axis=0)
        return ops.reshape(self.pixel_log_prob(x_rows, maps), (-1, num_samples))

    def pixel_sample(self, maps, seed=None):
        """x ~ p(x | z) for conditioning maps [B, H, W, m], drawn pixel by pixel (module docstring)."""
        height, width, channels = self.image_shape
        shape = (ops.shape(maps)[0], height, width, channels)
        uniform = keras.random.uniform(shape, seed=self.seed_generator if seed is None else seed)
        return sample_pixels(self.pixel_params, self.likelihood, maps, uniform, self.pixel_trunk.rows_above,
                             self.sampler)


def sample_pixels(params_fn, likelihood, maps, uniform, rows_above, sampler="window"):
    """Fill an image pixel by pixel: step t draws position t (raster, then channel order) from
    `likelihood.sample_from_uniform(params_fn(x, maps), uniform)` and writes it into x.

    params_fn(x, maps) must be causal: the parameters at position t do not depend on x at t or after
    (`layers.pixelcnn`); x holds zeros where nothing is drawn yet."""
    if sampler not in SAMPLERS:
        raise ValueError(f"sampler: '{sampler}' is not one of {list(SAMPLERS)}")
    _, height, width, channels = uniform.shape
    row_size = width * channels
    window = height if sampler == "full" else min(height, rows_above + 1)

    def step(t, x):
        if window == height:
            x_in, maps_in, u_in, offset = x, maps, uniform, 0
        else:
            start = ops.maximum(t // row_size - rows_above, 0)
            rows = start + ops.arange(window, dtype="int32")
            x_in, maps_in, u_in = (ops.take(a, rows, axis=1) for a in (x, maps, uniform))
            offset = start * row_size
        draw = likelihood.sample_from_uniform(params_fn(x_in, maps_in), u_in)
        here = ops.reshape(ops.one_hot(t - offset, window * row_size), (1, window, width, channels))
        value = ops.sum(draw * here, axis=(1, 2, 3))
        position = ops.reshape(ops.one_hot(t, height * row_size), (1, height, width, channels))
        return x + position * value[:, None, None, None]

    return ops.fori_loop(0, height * row_size, step, ops.zeros_like(uniform))
