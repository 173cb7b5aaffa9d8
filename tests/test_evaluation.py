"""Evaluation metrics against known answers (active units, kNN, Frechet distance, augmentation), figures
for a prior added through the interface only, and one end-to-end evaluation of a short digits run."""

import dataclasses
import json
import math

import keras
import numpy as np
import pytest
from keras import ops
from scipy import linalg
from sklearn.neighbors import KNeighborsClassifier

from evaluation import active_units as au, augmentation as aug, classifier, curves, frechet, knn, report, samples
from evaluation.common import ModelFunctions, Skipped
from evaluation.data import evaluation_data
from layers.distributions import log_mixture_isotropic
from layers.priors.base import Prior
from training import config as config_lib, data as data_lib, evaluate, fit
from layers.priors import PRIORS
from tests.helpers import build_likelihood
from zoo.architectures.vae import VAE
from zoo.base import build_model


@pytest.fixture(scope="module")
def digits():
    config = config_lib.from_dict({"data": {"name": "digits"}})
    splits = data_lib.load_splits(config.data)
    return config, splits, evaluation_data(config.data, splits)


def small_vae(prior="vampprior", latent_dim=4):
    components = {"components": 5} if prior in PRIORS.owners("components") else {}
    config = config_lib.from_dict({"model": {"latent_dim": latent_dim, "hidden_units": 32,
                                             "prior": {"name": prior, **components}}})
    return build_model(config.model, (8, 8, 1), seed=0)


# --- active units ----------------------------------------------------------------------------------------
def test_two_collapsed_dimensions_leave_d_minus_2_active_units():
    rng = np.random.default_rng(0)
    means = rng.normal(0.0, 1.0, (2000, 6))
    means[:, 1] = 0.3  # collapsed: constant posterior mean
    means[:, 4] = 0.05 * rng.normal(size=2000)  # variance 0.0025 < 0.01
    result = au.active_units(means)
    assert (result["count"], result["latent_dim"]) == (4, 6)
    np.testing.assert_allclose(result["variances"], means.var(axis=0), rtol=1e-12)
    # the threshold is strict: a dimension whose variance equals it is inactive
    assert au.active_units(np.array([[1.0], [-1.0]]), threshold=1.0)["count"] == 0


def test_active_units_of_a_model_whose_encoder_ignores_two_dimensions(digits):
    _, _, data = digits
    model = small_vae(latent_dim=5)
    head = model.encoder_head.mean_head
    kernel = ops.convert_to_numpy(head.kernel) * 10.0
    bias = ops.convert_to_numpy(head.bias)
    kernel[:, [0, 3]] = 0.0
    head.kernel.assign(kernel)
    head.bias.assign(bias)
    result = au.active_units(ModelFunctions(model).means(data.model_test))
    assert result["count"] == 3
    assert result["variances"][0] == result["variances"][3] == 0.0


# --- kNN -------------------------------------------------------------------------------------------------
def test_knn_on_separable_latents_is_perfect_for_every_k():
    rng = np.random.default_rng(1)
    centres = 20.0 * np.eye(4, 8)
    labels = np.arange(400) % 4
    references = centres[labels] + rng.normal(size=(400, 8))
    queries = centres[labels[:100]] + rng.normal(size=(100, 8))
    accuracy = knn.knn_accuracy(references, labels, queries, labels[:100])
    assert accuracy == {k: 1.0 for k in knn.KS}


def test_knn_matches_scikit_learn_classifier_on_overlapping_classes():
    rng = np.random.default_rng(2)
    references, labels = rng.normal(size=(300, 3)), rng.integers(0, 5, 300)
    queries, query_labels = rng.normal(size=(120, 3)), rng.integers(0, 5, 120)
    accuracy = knn.knn_accuracy(references, labels, queries, query_labels)
    for k in knn.KS:
        oracle = KNeighborsClassifier(n_neighbors=k).fit(references, labels).score(queries, query_labels)
        assert math.isclose(accuracy[k], oracle), k


def test_knn_ties_go_to_the_lowest_class():
    references = np.array([[1.0], [-1.1], [5.0]])  # nearest two to 0: labels 7 and 2, one vote each
    accuracy = knn.knn_accuracy(references, [7, 2, 2], np.array([[0.0]]), [2], ks=(2,))
    assert accuracy == {2: 1.0}
    with pytest.raises(ValueError, match="K must lie in"):
        knn.knn_accuracy(references, [7, 2, 2], np.array([[0.0]]), [2], ks=(3, 5))


# --- Frechet distance ------------------------------------------------------------------------------------
def test_frechet_distance_matches_the_closed_form_for_gaussians():
    rng = np.random.default_rng(3)
    m1, m2 = rng.normal(size=4), rng.normal(size=4)
    a, b = rng.normal(size=(4, 4)), rng.normal(size=(4, 4))
    c1, c2 = a @ a.T + 0.1 * np.eye(4), b @ b.T + 0.1 * np.eye(4)  # non-commuting covariances
    oracle = np.sum((m1 - m2) ** 2) + np.trace(c1 + c2 - 2 * linalg.sqrtm(c1 @ c2).real)
    assert math.isclose(frechet.frechet_distance(m1, c1, m2, c2), oracle, rel_tol=1e-8)
    # 1-d: W2^2 = (m1 - m2)^2 + (s1 - s2)^2
    assert math.isclose(frechet.frechet_distance([1.0], [[4.0]], [-2.0], [[9.0]]), 9.0 + 1.0, rel_tol=1e-12)
    # singular covariances (rank 1) stay exact and real
    u = np.array([[1.0, 2.0]])
    assert math.isclose(frechet.frechet_distance([0, 0], u.T @ u, [0, 0], 4 * u.T @ u), 5.0, rel_tol=1e-9)


def test_frechet_distance_of_sets_is_zero_for_itself_and_grows_with_a_shift():
    rng = np.random.default_rng(4)
    features = rng.normal(size=(3000, 5)) @ rng.normal(size=(5, 5))
    assert frechet.frechet_distance_of(features, features) < 1e-8
    shifts = [0.1, 0.5, 2.0]
    values = [frechet.frechet_distance_of(features, features + s) for s in shifts]
    for s, value in zip(shifts, values):  # same covariance: exactly ||shift||^2 = 5 s^2
        assert math.isclose(value, 5 * s**2, rel_tol=1e-6)
    # fewer samples than features: the sample-space form equals the covariance form (whose square roots of
    # rounding-level eigenvalues of the singular covariances cost it ~sqrt(eps) accuracy)
    few, other_few = rng.normal(size=(4, 7)), rng.normal(size=(6, 7)) + 0.5
    assert math.isclose(frechet.frechet_distance_of(few, other_few),
                        frechet.frechet_distance(*frechet.gaussian_statistics(few), *frechet.gaussian_statistics(other_few)),
                        rel_tol=1e-7)
    # samples of two known Gaussians approach the closed form
    other = rng.normal(size=(200000, 2)) * [1.0, 3.0] + [1.0, 0.0]
    first = rng.normal(size=(200000, 2))
    assert abs(frechet.frechet_distance_of(first, other) - (1.0 + 4.0)) < 0.1


def test_inception_features_code_path_with_random_weights(tmp_path):
    # ImageNet weights cannot be downloaded here: the pipeline (grey -> RGB, 299x299, [-1, 1]) runs with
    # random weights and the number is labelled as not an FID
    with pytest.raises(FileNotFoundError, match="--fid-features classifier"):
        frechet.InceptionFeatures(tmp_path / "missing.h5")
    extractor = frechet.InceptionFeatures("random", batch_size=3)
    assert "RANDOM" in extractor.name
    images = np.random.default_rng(5).random((3, 16, 16, 1)).astype("float32")
    features = extractor(images)
    assert features.shape == (3, 2048) and np.all(np.isfinite(features))
    scale = np.mean(np.sum(features**2, axis=1))  # random weights give tiny features: compare relative to them
    assert frechet.frechet_distance_of(features, features) < 1e-9 * scale
    assert frechet.frechet_distance_of(features, extractor(np.clip(images + 0.5, 0, 1))) > 1e-3 * scale


def test_feature_classifier_is_trained_once_then_read_from_the_cache(digits, tmp_path):
    _, _, data = digits
    recipe = classifier.Recipe(epochs=1)
    first, info = classifier.load_or_train(data, tmp_path, recipe, verbose=False)
    second, again = classifier.load_or_train(data, tmp_path, recipe, verbose=False)
    assert (info["source"], again["source"]) == ("trained now", "cache") and info["key"] == again["key"]
    a = frechet.ClassifierFeatures(first, info)(data.test[:50])
    np.testing.assert_allclose(a, frechet.ClassifierFeatures(second, again)(data.test[:50]), rtol=1e-5, atol=1e-6)
    assert a.shape == (50, classifier.FEATURES)
    assert classifier.classifier_key(data, classifier.Recipe(epochs=2)) != info["key"]


# --- augmentation ----------------------------------------------------------------------------------------
class Copies:
    """A 'generator' whose copies are the real images: lambda CE + (1 - lambda) CE = CE, so training must
    follow the no-augmentation run exactly."""

    def __init__(self, images):
        self.images = images

    def __call__(self, index, epoch):
        return self.images[index]


def test_weighted_loss_with_identical_copies_equals_plain_training(digits):
    _, _, data = digits
    options = aug.AugmentationOptions(epochs=3, hidden_units=64, real_weight=0.3)
    args = (data.train, data.train_labels, data.test, data.test_labels, 10, options, 0)
    plain = aug.train_classifier(aug.Generator("none", None, None, None, 0), *args, verbose=False)
    copies = aug.train_classifier(Copies(data.train), *args, verbose=False)
    assert math.isclose(plain["final_loss"], copies["final_loss"], rel_tol=1e-4)
    assert math.isclose(plain["test_error"], copies["test_error"], abs_tol=0.41)  # at most one image of 250
    assert plain["test_error"] < 80.0  # it learns: chance is 90 %


def test_augmentation_without_labels_or_kernel_is_skipped_with_a_reason(digits):
    _, _, data = digits
    with pytest.raises(Skipped, match="labels"):
        aug.augmentation(None, None, dataclasses.replace(data, train_labels=None), aug.AugmentationOptions(), 0)
    model = small_vae()
    result = aug.augmentation(model, ModelFunctions(model), data, aug.AugmentationOptions(epochs=1, hidden_units=16),
                              0, modes=("prior_kernel",), verbose=False)
    assert "prior_kernel" not in result and "kernel" in result["skipped"]["prior_kernel"]


# --- a prior added later through the interface -------------------------------------------------------------
class ToyKernelPrior(Prior):
    """Mixture of isotropic kernels centred on the encoded component inputs: everything the interface
    offers, and nothing the evaluation knows by name."""

    num_components = 3

    def __init__(self, latent_dim, images, **kwargs):
        super().__init__(latent_dim, **kwargs)
        self.images = np.asarray(images, "float32")

    def build(self, input_shape=None):
        self.inputs = self.add_weight(name="inputs", shape=self.images.shape, trainable=False,
                                      initializer=keras.initializers.Constant(self.images))

    def _means(self, images):
        return self._encode(ops.convert_to_tensor(images))[0]

    def log_prob(self, z):
        return log_mixture_isotropic(z, self._means(self.inputs), ops.convert_to_tensor(-2.0),
                                     self.component_log_weights())

    def component_log_weights(self):
        return ops.log(ops.convert_to_tensor([0.5, 0.3, 0.2]))

    def kernel_sample(self, images, seed=None):
        means = self._means(images)
        return means + math.exp(-1.0) * keras.random.normal(ops.shape(means), seed=seed)

    def sample(self, num_samples, seed=None):
        index = np.random.default_rng(seed if isinstance(seed, int) else 0).integers(0, 3, num_samples)
        return self.kernel_sample(ops.take(self.inputs, index, axis=0), seed)

    def component_sample(self, index, num_samples, seed=None):
        return self.kernel_sample(ops.repeat(self.inputs[index][None], num_samples, axis=0), seed)

    def component_inputs(self):
        return self.inputs


def test_every_figure_of_a_new_prior_comes_from_its_interface(digits, tmp_path):
    _, _, data = digits
    likelihood = build_likelihood("bernoulli", (8, 8, 1))
    model = VAE((8, 8, 1), 4, likelihood, ToyKernelPrior(4, data.train[:3]), hidden_units=32)
    fns = ModelFunctions(model)
    section = samples.sample_figures(model, fns, data, tmp_path, seed=3)
    assert section["skipped"] == {}
    for name in ("prior_samples", "reconstructions", "interpolation", "component_plates", "component_inputs",
                 "kernel_plates", "iterative_from_data", "iterative_from_noise"):
        assert (tmp_path / f"{name}.png").exists(), name
    assert section["iterative_from_noise_kernel"] == "prior kernel r(z | x)"
    assert section["component_plates"]["first_column"] == "component input"
    # components are drawn with the weights: all three, each once
    assert sorted(section["component_plates"]["components"]) == [0, 1, 2]
    inputs = samples.component_input_images(model.prior)
    np.testing.assert_array_equal(inputs, data.train[:3][[0, 1, 2]])  # largest weight first
    result = aug.augmentation(model, fns, data, aug.AugmentationOptions(epochs=10, hidden_units=16), 0,
                              modes=("prior_kernel",), verbose=False)
    assert result["skipped"] == {}
    # ten classifier epochs on the digits with the prior-kernel copies: far better than chance (90 % error)
    assert result["prior_kernel"]["test_error"] < 60.0, result["prior_kernel"]


def test_standard_normal_prior_skips_component_figures_with_reasons(digits, tmp_path):
    _, _, data = digits
    model = small_vae("standard_normal")
    section = samples.sample_figures(model, ModelFunctions(model), data, tmp_path, seed=0)
    assert set(section["skipped"]) == {"component_plates", "component_inputs", "kernel_plates"}
    assert "no mixture components" in section["skipped"]["component_plates"]
    assert section["iterative_from_data_kernel"].startswith("posterior")
    assert (tmp_path / "iterative_from_data.png").exists()


# --- curves, options -----------------------------------------------------------------------------------
def test_curves_summary_and_groups(tmp_path):
    path = tmp_path / "history.csv"
    path.write_text("epoch,loss,val_loss,kl_weight,val_extra\n1,5,4,0.5,1\n2,3,2,1.0,1\n3,2,2.5,1.0,1\n")
    history = curves.read_history(path)
    assert curves.summary(history) == {"epochs": 3, "best_val_loss": 2.0, "best_epoch": 2, "final_val_loss": 2.5,
                                       "final_loss": 2.0}
    groups = curves.curve_groups(history)
    assert set(groups) == {"loss", "kl_weight", "val_extra"} and set(groups["loss"]) == {"train", "validation"}
    assert list(groups["loss"]["train"][0]) == [1, 2, 3]  # history.csv counts epochs from 1
    with pytest.raises(FileNotFoundError, match="history"):
        curves.read_history(tmp_path / "none.csv")


def test_metric_names_are_checked():
    assert report.parse_metrics("all") == list(report.METRICS)
    assert report.parse_metrics("knn, fid") == ["knn", "fid"]
    with pytest.raises(ValueError, match="did you mean 'active_units'"):
        report.parse_metrics("nll,active_unit")


# --- end to end ------------------------------------------------------------------------------------------
def test_short_digits_run_gets_a_complete_report(tmp_path, capsys):
    config = config_lib.load("zoo/quickstart.yaml", ["train.epochs=2", "evaluate.num_samples=20", "train.verbose=0"])
    run_dir = tmp_path / "run"
    model, _ = fit.train(config, run_dir, run_evaluation=False)
    evaluate.main([str(run_dir), "--augmentation-epochs", "2", "--fid-samples", "300", "--tsne-points", "120",
                   "--classifier-cache", str(tmp_path / "cache"), "--classifier-epochs", "2", "--quiet"])
    assert "| active units" in capsys.readouterr().out
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["num_samples"] == 20 and metrics["nll"] > 0
    assert 0 < metrics["active_units"]["count"] <= metrics["active_units"]["latent_dim"] == 10
    accuracy = metrics["knn"]["accuracy"]
    assert list(accuracy) == ["3", "5", "7", "9", "11", "13", "15"]
    assert all(0.3 < a <= 1.0 for a in accuracy.values())  # 10 classes: chance is 0.1
    assert metrics["knn"]["num_references"] == 1297 + 250 and metrics["knn"]["num_queries"] == 250
    augmentation = metrics["augmentation"]
    assert set(augmentation) >= {"none", "posterior", "skipped", "protocol"}
    assert "prior_kernel" in augmentation["skipped"]  # VampPrior has no input kernel
    # two classifier epochs on the digits: far better than chance (90 % error) with and without the copies
    assert all(augmentation[m]["test_error"] < 40.0 for m in ("none", "posterior")), augmentation
    fid = metrics["fid"]
    assert fid["features"] == "grey_classifier" and fid["classifier"]["key"] in fid["feature_extractor"]
    assert fid["value"] > fid["train_vs_test"] >= 0
    assert metrics["curves"]["epochs"] == 2
    assert metrics["skipped"] == {} and set(metrics["evaluation"]["seconds"]) == set(report.METRICS)
    for name in ("active_units", "knn", "tsne", "curves", "prior_samples", "reconstructions", "interpolation",
                 "component_plates", "iterative_from_data", "iterative_from_noise"):
        assert (run_dir / "figures" / f"{name}.png").stat().st_size > 0, name
    text = (run_dir / "report.md").read_text()
    assert "features: grey-cnn-v1" in text and "VampPrior" in text  # the skipped parts say why

    # deterministic given the seed whatever ran before: the trained model, its generators advanced by
    # training, reproduces the CLI's numbers and figures; sections not recomputed are kept
    picture = (run_dir / "figures" / "prior_samples.png").read_bytes()
    splits = data_lib.load_splits(config.data)
    again = report.evaluate_run(run_dir, model, splits, config, ["active_units", "samples"], verbose=False)
    assert (run_dir / "figures" / "prior_samples.png").read_bytes() == picture
    assert again["active_units"] == metrics["active_units"] and again["knn"] == metrics["knn"]
    assert json.loads((run_dir / "metrics.json").read_text())["samples"] == metrics["samples"]
