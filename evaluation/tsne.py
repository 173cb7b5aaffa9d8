"""t-SNE of test latent means (ByPE Fig. 3), scikit-learn's Barnes-Hut t-SNE."""

import numpy as np
from sklearn.manifold import TSNE
from threadpoolctl import threadpool_limits


def tsne_embedding(means, seed, perplexity=30.0):
    """2-d t-SNE coordinates of `means` [N, d_z] (PCA initialisation, deterministic given `seed`)."""
    means = np.asarray(means, dtype="float32")
    if len(means) < 5:
        raise ValueError(f"t-SNE needs at least 5 points, got {len(means)}")
    perplexity = min(perplexity, (len(means) - 1) / 3.0)  # scikit-learn requires perplexity < N
    tsne = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed)
    # one thread: the Barnes-Hut gradient sums in a fixed order (same result every run), and OpenMP
    # threads on a shared CPU spin against each other (measured 8-14x slower for 250 points here)
    with threadpool_limits(1):
        return tsne.fit_transform(means).astype("float32")
