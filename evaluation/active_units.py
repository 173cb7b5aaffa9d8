"""Active units (Burda et al. 2016; Exemplar VAE supplement D).

A latent dimension is active when the variance, over the test set, of its posterior mean
E_q(z|x)[z_d] exceeds 0.01. For hierarchical models it is counted on the top latent (z2).
"""

import numpy as np

THRESHOLD = 0.01


def active_units(means, threshold=THRESHOLD):
    """Count of dimensions of `means` [N, d_z] whose variance over N exceeds `threshold`.

    Returns a JSON-able dict: count, latent_dim, threshold and the per-dimension variances."""
    means = np.asarray(means, dtype="float64")
    if means.ndim != 2 or len(means) < 2:
        raise ValueError(f"active units need posterior means of shape [N >= 2, d_z], got {means.shape}")
    variances = means.var(axis=0)  # population variance, as numpy / torch.var(unbiased=False)
    return {
        "count": int(np.sum(variances > threshold)),
        "latent_dim": int(means.shape[1]),
        "threshold": threshold,
        "variances": [float(v) for v in variances],
    }
