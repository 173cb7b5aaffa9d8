"""The networks of VAEPP's latent GAN (section 1.9 of the VAEPP reference): a generator G_w(noise) -> z and
a critic D_k(z) -> score, trained on the encoder means after the VAE (`training.latent_gan`), whose draws
start the pull-back prior's MALA chains (`sampler_start: latent_gan`).

The MNIST networks of the official code: G_w is 5 dense layers of 40 units, D_k 6 dense layers of 40 units
then a linear score, all weight-normalised with leaky ReLU (slope 0.2, TF's default). The code's last
generator layer sits in the same `arg_scope`, so it also has the leaky ReLU (`generator_output: code`);
`linear` gives an unconstrained output layer instead.
"""

import keras

from layers.dense import WeightNormDense

GENERATOR_OUTPUTS = ("code", "linear")


def _dense(units, weight_norm, name):
    return WeightNormDense(units, name=name) if weight_norm else keras.layers.Dense(units, name=name)


def _stack(sizes, weight_norm, leaky_last, name):
    layers = []
    for i, units in enumerate(sizes):
        layers.append(_dense(units, weight_norm, f"dense_{i + 1}"))
        if i < len(sizes) - 1 or leaky_last:
            layers.append(keras.layers.LeakyReLU(negative_slope=0.2, name=f"leaky_relu_{i + 1}"))
    return keras.Sequential(layers, name=name)


def latent_generator(latent_dim, units=40, depth=5, weight_norm=True, output="code", name="gan_generator"):
    """noise [B, latent_dim] -> z [B, latent_dim]: `depth` leaky-ReLU layers of `units`, then the output layer."""
    if output not in GENERATOR_OUTPUTS:
        raise ValueError(f"generator output {output!r}: choose one of {', '.join(GENERATOR_OUTPUTS)}")
    return _stack([units] * depth + [latent_dim], weight_norm, leaky_last=output == "code", name=name)


def latent_critic(units=40, depth=6, weight_norm=True, name="gan_critic"):
    """z [B, d] -> score [B, 1]: `depth` leaky-ReLU layers of `units`, then a linear score."""
    return _stack([units] * depth + [1], weight_norm, leaky_last=False, name=name)
