"""Frechet distance between generated and real images in a feature space (Heusel et al. 2017).

    d^2 = ||m1 - m2||^2 + Tr(C1 + C2 - 2 (C1 C2)^{1/2})

between Gaussians fitted to the two feature sets. The trace of the matrix square root is computed as
sum sqrt(eig(C1^{1/2} C2 C1^{1/2})), a symmetric PSD eigenproblem: exact for singular covariances (dead
ReLU features) and never complex. With fewer samples than features it is computed in sample space
instead: for centred features A1, A2, Tr (C1 C2)^{1/2} = ||A1 A2^T||_* / sqrt((n1 - 1)(n2 - 1)) (the
nuclear norm), which is exact and costs O(n^2 F) rather than O(F^3). Linear algebra runs on one
thread: reproducible sums, and no BLAS threads fighting over a shared CPU (measured 8x slower here). The number is only meaningful with its feature
extractor named, so every extractor carries a `name` that the report prints beside it:

* `InceptionFeatures`: keras.applications.InceptionV3 pool features (2048-d), the FID proper for RGB
  data, with ImageNet weights read from the Keras cache (they cannot be downloaded here);
* `ClassifierFeatures`: the 128-d features of the grey-image CNN of `evaluation.classifier`.
"""

import os
from pathlib import Path

import keras
import numpy as np
from scipy import linalg
from threadpoolctl import threadpool_limits

from evaluation.common import predict

INCEPTION_NOTOP = "inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5"
INCEPTION_SIZE = 299


def gaussian_statistics(features):
    """Mean and covariance (unbiased, as the FID reference code) of features [N, F], in float64."""
    features = np.asarray(features, dtype="float64")
    if features.ndim != 2 or len(features) < 2:
        raise ValueError(f"Frechet distance needs features of shape [N >= 2, F], got {features.shape}")
    return features.mean(axis=0), np.cov(features, rowvar=False)


def _psd_sqrt(matrix):
    values, vectors = linalg.eigh(matrix)
    return (vectors * np.sqrt(np.clip(values, 0.0, None))) @ vectors.T


def frechet_distance(mean1, cov1, mean2, cov2):
    """Squared Frechet (2-Wasserstein) distance between N(mean1, cov1) and N(mean2, cov2)."""
    mean1, mean2 = np.atleast_1d(mean1), np.atleast_1d(mean2)
    cov1, cov2 = np.atleast_2d(cov1), np.atleast_2d(cov2)
    _check_finite(mean1, cov1, mean2, cov2)
    with threadpool_limits(1):
        root1 = _psd_sqrt(cov1)
        cross = np.sum(np.sqrt(np.clip(linalg.eigvalsh(root1 @ cov2 @ root1), 0.0, None)))
    diff = mean1 - mean2
    return max(float(diff @ diff + np.trace(cov1) + np.trace(cov2) - 2.0 * cross), 0.0)


def frechet_distance_of(features1, features2):
    """Frechet distance between the Gaussians fitted to two feature sets [N1, F] and [N2, F]."""
    mean1, cov1 = gaussian_statistics(features1)
    mean2, cov2 = gaussian_statistics(features2)
    n1, n2, dims = len(features1), len(features2), len(mean1)
    if min(n1, n2) > dims:
        return frechet_distance(mean1, cov1, mean2, cov2)
    _check_finite(mean1, cov1, mean2, cov2)
    a1 = np.asarray(features1, dtype="float64") - mean1
    a2 = np.asarray(features2, dtype="float64") - mean2
    with threadpool_limits(1):
        cross = np.sum(linalg.svdvals(a1 @ a2.T)) / np.sqrt((n1 - 1) * (n2 - 1))
    diff = mean1 - mean2
    return max(float(diff @ diff + np.trace(cov1) + np.trace(cov2) - 2.0 * cross), 0.0)


def _check_finite(*arrays):
    if not all(np.all(np.isfinite(a)) for a in arrays):
        raise FloatingPointError("the Frechet distance is not finite: the features contain NaN or inf")


def default_inception_weights():
    """Where keras.applications caches InceptionV3's ImageNet weights (without the top)."""
    home = os.environ.get("KERAS_HOME", os.path.join(os.path.expanduser("~"), ".keras"))
    return Path(home) / "models" / INCEPTION_NOTOP


class InceptionFeatures:
    """InceptionV3 average-pool features of images in [0, 1] (grey replicated to RGB, bilinear resize to
    299x299, scaled to [-1, 1] as `inception_v3.preprocess_input`).

    Args:
        weights: path of the no-top ImageNet weights file, or "random" (tests of the code path only: the
            resulting number is not an FID and is labelled so).
    """

    def __init__(self, weights=None, batch_size=50):
        weights = default_inception_weights() if weights is None else weights
        if weights != "random" and not Path(weights).exists():
            raise FileNotFoundError(
                f"InceptionV3 ImageNet weights not found at {weights}; they cannot be downloaded here. Put "
                f"{INCEPTION_NOTOP} there (or pass --inception-weights PATH), or use --fid-features classifier")
        self.network = keras.applications.InceptionV3(
            include_top=False, weights=None, pooling="avg", input_shape=(INCEPTION_SIZE, INCEPTION_SIZE, 3))
        if weights != "random":
            self.network.load_weights(str(weights))
        self.batch_size = batch_size
        self.name = ("InceptionV3 pool3 2048-d, ImageNet weights" if weights != "random"
                     else "InceptionV3 pool3 2048-d with RANDOM weights (code-path check, not an FID)")
        self.kind = "inception_v3" if weights != "random" else "inception_v3_random"
        self._pipelines = {}

    def _pipeline(self, image_shape):
        """Grey -> RGB, resize, [0, 1] -> [-1, 1], InceptionV3: one Keras model per input shape, so that
        `predict` compiles it on every backend."""
        if image_shape not in self._pipelines:
            inputs = keras.Input(image_shape)
            x = keras.layers.Concatenate()([inputs] * 3) if image_shape[-1] == 1 else inputs
            x = keras.layers.Resizing(INCEPTION_SIZE, INCEPTION_SIZE, interpolation="bilinear")(x)
            x = keras.layers.Rescaling(2.0, offset=-1.0)(x)
            self._pipelines[image_shape] = keras.Model(inputs, self.network(x))
        return self._pipelines[image_shape]

    def __call__(self, images):
        images = np.asarray(images, dtype="float32")
        return np.asarray(predict(self._pipeline(tuple(images.shape[1:])), images, self.batch_size), dtype="float64")


class ClassifierFeatures:
    """The `features` layer of a classifier from `evaluation.classifier.load_or_train`."""

    def __init__(self, classifier, info, batch_size=500):
        self.network = keras.Model(classifier.inputs, classifier.get_layer("features").output)
        self.batch_size = batch_size
        self.info = info
        self.name = (f"{info['version']} {info['features']}, trained on {info['train_images']} {info['dataset']} "
                     f"training images (test accuracy {100 * info['test_accuracy']:.2f}%, key {info['key']})")
        self.kind = "grey_classifier"

    def __call__(self, images):
        return np.asarray(predict(self.network, images, self.batch_size), dtype="float64")
