"""Tests of training/data.py: real numbers from scikit-learn's digits, IDX and npz files written here,
the MNIST test file from ../shared (skipped when absent), and TFDS through tfds.testing.mock_data."""

from __future__ import annotations

import gzip
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
import tensorflow as tf

from training.config import DataConfig
from training.data import (
    DatasetUnavailableError,
    ImageShapeError,
    Splits,
    eval_dataset,
    load_splits,
    read_idx,
    steps_per_epoch,
    train_dataset,
)

MNIST10K = Path(__file__).resolve().parents[1] / "../shared/datasets/mnist_t10k"
MNIST10K_CLASS_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]  # from its README


def digits_reference():
    """sklearn digits on the 0..255 scale in the order data.py promises (RandomState(0) permutation)."""
    from sklearn.datasets import load_digits

    d = load_digits()
    order = np.random.RandomState(0).permutation(len(d.images))
    return np.round(d.images[order] * 255 / 16).astype(np.uint8)[..., None], d.target[order]


def batches(ds):
    return [{k: v.numpy() for k, v in b.items()} for b in ds]


# ------------------------------------------------------------------------------------------------ digits


def test_digits_dynamic_binarization_splits_values_and_labels():
    x, y = digits_reference()
    s = load_splits(DataConfig(name="digits"))
    assert s.image_shape == (8, 8, 1) and s.name == "digits" and s.preprocessing == "dynamic_binarization"
    assert (len(s.train), len(s.validation), len(s.test)) == (1297, 250, 250)
    assert s.train.dtype == s.validation.dtype == s.test.dtype == np.float32
    # training images are the greyscale intensities, aligned with sklearn's labels
    np.testing.assert_array_equal(s.train, x[:1297].astype(np.float32) / 255)
    np.testing.assert_array_equal(s.train_labels, y[:1297])
    np.testing.assert_array_equal(s.validation_labels, y[1297:1547])
    np.testing.assert_array_equal(s.test_labels, y[1547:])
    assert s.train_labels.dtype == np.int64
    # validation/test binarised once, like the reference: one RandomState(777) stream, validation first
    rng = np.random.RandomState(777)
    np.testing.assert_array_equal(s.validation, rng.binomial(1, x[1297:1547] / 255.0))
    np.testing.assert_array_equal(s.test, rng.binomial(1, x[1547:] / 255.0))
    assert set(np.unique(s.test)) == {0.0, 1.0}
    assert abs(s.test.mean() - x[1547:].mean() / 255) < 0.02


def test_digits_continuous_and_validation_size():
    x, _ = digits_reference()
    s = load_splits(DataConfig(name="digits", preprocessing="continuous", validation_size=100))
    assert (len(s.train), len(s.validation), len(s.test)) == (1447, 100, 250)
    np.testing.assert_array_equal(s.train, (x[:1447].astype(np.float32) + 0.5) / 256)
    np.testing.assert_array_equal(s.test, (x[1547:].astype(np.float32) + 0.5) / 256)
    assert s.train.min() == pytest.approx(0.5 / 256) and s.train.max() == pytest.approx(255.5 / 256)


def test_load_splits_is_deterministic_and_seeded():
    a = load_splits(DataConfig(name="digits"))
    b = load_splits(DataConfig(name="digits"))
    c = load_splits(DataConfig(name="digits", binarization_seed=1))
    for split in ("train", "validation", "test"):
        np.testing.assert_array_equal(getattr(a, split), getattr(b, split))
    assert not np.array_equal(a.validation, c.validation)


def test_image_size_resizes_with_area_averaging_and_requantises():
    x, _ = digits_reference()
    s = load_splits(DataConfig(name="digits", image_size=[4, 4], preprocessing="continuous"))
    assert s.image_shape == (4, 4, 1)
    blocks = x[:1297, :, :, 0].reshape(-1, 4, 2, 4, 2).astype(np.float64).mean(axis=(2, 4))
    np.testing.assert_array_equal(s.train[..., 0], (np.round(blocks).astype(np.float32) + 0.5) / 256)
    up = load_splits(DataConfig(name="digits", image_size=[16, 12]))
    assert up.train.shape == (1297, 16, 12, 1) and up.validation.shape == (250, 16, 12, 1)
    np.testing.assert_array_equal(np.round(up.train * 255), up.train * 255)  # still on the 0..255 grid


def test_unknown_name_and_preprocessing():
    with pytest.raises(ValueError, match="not one of"):
        load_splits(DataConfig(name="stl10"))
    with pytest.raises(ValueError, match="preprocessing"):
        load_splits(DataConfig(name="digits", preprocessing="logit"))


# ------------------------------------------------------------------------------------------------ train/eval pipelines


@pytest.fixture(scope="module")
def digits():
    return load_splits(DataConfig(name="digits"))


def test_train_dataset_shapes_and_epoch_permutation(digits):
    ds = train_dataset(digits, batch_size=100, seed=3, epochs=2)
    assert ds.element_spec["image"].shape == (100, 8, 8, 1)  # static: drop remainder
    assert ds.element_spec["index"].dtype == tf.int64
    assert steps_per_epoch(digits, 100) == 12
    assert int(ds.cardinality()) == 24
    out = batches(ds)
    assert len(out) == 24
    for epoch in (out[:12], out[12:]):
        index = np.concatenate([b["index"] for b in epoch])
        assert len(np.unique(index)) == 1200 and index.min() >= 0 and index.max() < 1297
    assert not np.array_equal(out[0]["index"], out[12]["index"])  # epochs are shuffled differently


def test_train_dataset_binarises_per_batch(digits):
    out = batches(train_dataset(digits, batch_size=100, seed=0, epochs=2))
    images = np.concatenate([b["image"] for b in out[:12]])
    grey = digits.train[np.concatenate([b["index"] for b in out[:12]])]
    assert set(np.unique(images)) == {0.0, 1.0}
    assert np.all(images[grey == 0] == 0) and np.all(images[grey == 1] == 1)
    # 76,800 Bernoulli pixels: standard error of the mean < 0.002
    assert abs(images.mean() - grey.mean()) < 0.01
    # the same image gets a fresh draw in another epoch
    first = out[0]["index"][0]
    second = next(b for b in out[12:] if first in b["index"])
    row = list(second["index"]).index(first)
    assert not np.array_equal(out[0]["image"][0], second["image"][row])


def test_keep_grey_adds_the_greyscale_batch_the_binary_one_was_drawn_from(digits):
    """keep_grey (VAEPP's q(z | e) trick) adds the batch's intensities and leaves the draws unchanged."""
    plain = batches(train_dataset(digits, batch_size=100, seed=0, epochs=1))[:3]
    kept = batches(train_dataset(digits, batch_size=100, seed=0, epochs=1, keep_grey=True))[:3]
    assert "grey" not in plain[0]
    for a, b in zip(plain, kept):
        np.testing.assert_array_equal(a["image"], b["image"])
        np.testing.assert_array_equal(b["grey"], digits.train[b["index"]])


def test_binarisation_noise_differs_per_epoch_and_step():
    """With every pixel at 0.5 the batch depends only on the noise, so equal noise would show."""
    half = np.full((40, 6, 5, 1), 0.5, np.float32)
    s = Splits(half, half[:4], half[:4], None, None, None, (6, 5, 1), "dynamic_binarization", "half")
    out = batches(train_dataset(s, batch_size=20, seed=0, epochs=2))
    images = [b["image"] for b in out]  # epoch 0: steps 0, 1; epoch 1: steps 0, 1
    assert abs(np.mean(images) - 0.5) < 0.05  # 2,400 pixels: standard error 0.01
    for i in range(4):
        for j in range(i + 1, 4):
            assert not np.array_equal(images[i], images[j]), (i, j)


def test_train_dataset_is_deterministic_and_resumable(digits):
    full = batches(train_dataset(digits, batch_size=64, seed=7, initial_epoch=0, epochs=4))
    again = batches(train_dataset(digits, batch_size=64, seed=7, initial_epoch=0, epochs=4))
    resumed = batches(train_dataset(digits, batch_size=64, seed=7, initial_epoch=2, epochs=4))
    other_seed = batches(train_dataset(digits, batch_size=64, seed=8, initial_epoch=0, epochs=1))
    steps = steps_per_epoch(digits, 64)
    assert len(full) == 4 * steps and len(resumed) == 2 * steps
    for a, b in zip(full, again):
        np.testing.assert_array_equal(a["image"], b["image"])
        np.testing.assert_array_equal(a["index"], b["index"])
    for a, b in zip(full[2 * steps :], resumed):
        np.testing.assert_array_equal(a["image"], b["image"])
        np.testing.assert_array_equal(a["index"], b["index"])
    assert not np.array_equal(full[0]["index"], other_seed[0]["index"])


def test_train_dataset_continuous_gathers_rows(digits):
    s = load_splits(DataConfig(name="digits", preprocessing="continuous"))
    for b in batches(train_dataset(s, batch_size=500, seed=1, epochs=1)):
        np.testing.assert_array_equal(b["image"], s.train[b["index"]])
    with pytest.raises(ValueError, match="larger than the training set"):
        train_dataset(s, batch_size=2000, seed=0)


def test_eval_dataset_keeps_order_and_partial_batch(digits):
    out = batches(eval_dataset(digits.test, batch_size=100))
    assert [len(b["index"]) for b in out] == [100, 100, 50]
    np.testing.assert_array_equal(np.concatenate([b["image"] for b in out]), digits.test)
    np.testing.assert_array_equal(np.concatenate([b["index"] for b in out]), np.arange(250))


# ------------------------------------------------------------------------------------------------ IDX files


def write_idx(path: Path, array: np.ndarray, magic: int):
    header = magic.to_bytes(4, "big") + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    data = header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()
    if path.suffix == ".gz":
        with gzip.open(path, "wb") as f:
            f.write(data)
    else:
        path.write_bytes(data)


def synthetic(n, seed, shape=(28, 20)):
    rng = np.random.RandomState(seed)
    return rng.randint(0, 256, size=(n, *shape)).astype(np.uint8), rng.randint(0, 10, size=n).astype(np.uint8)


@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_idx_train_and_test_files(tmp_path, suffix):
    x_train, y_train = synthetic(300, 0)
    x_test, y_test = synthetic(50, 1)
    write_idx(tmp_path / f"train-images-idx3-ubyte{suffix}", x_train, 2051)
    write_idx(tmp_path / f"train-labels-idx1-ubyte{suffix}", y_train, 2049)
    write_idx(tmp_path / f"t10k-images-idx3-ubyte{suffix}", x_test, 2051)
    write_idx(tmp_path / f"t10k-labels-idx1-ubyte{suffix}", y_test, 2049)
    np.testing.assert_array_equal(read_idx(tmp_path / f"train-images-idx3-ubyte{suffix}", 2051), x_train)

    s = load_splits(DataConfig(name="idx", path=str(tmp_path), preprocessing="continuous"))
    assert s.image_shape == (28, 20, 1)
    assert (len(s.train), len(s.validation), len(s.test)) == (270, 30, 50)  # small train set: last 10% held out
    np.testing.assert_array_equal(s.train[..., 0], (x_train[:270] + 0.5) / 256)
    np.testing.assert_array_equal(s.validation[..., 0], (x_train[270:] + 0.5) / 256)
    np.testing.assert_array_equal(s.test[..., 0], (x_test + 0.5) / 256)
    np.testing.assert_array_equal(s.train_labels, y_train[:270])
    np.testing.assert_array_equal(s.test_labels, y_test)

    s = load_splits(DataConfig(name="idx", path=str(tmp_path), validation_size=100))
    assert (len(s.train), len(s.validation)) == (200, 100)
    np.testing.assert_array_equal(s.train[..., 0], x_train[:200] / np.float32(255))


def test_idx_only_test_files_use_the_mnist10k_split(tmp_path):
    x, y = synthetic(100, 2)
    write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", x, 2051)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte", y, 2049)  # mixed gz / plain is fine
    s = load_splits(DataConfig(name="idx", path=str(tmp_path)))
    assert (len(s.train), len(s.validation), len(s.test)) == (70, 10, 20)
    np.testing.assert_array_equal(s.train_labels, y[:70])
    np.testing.assert_array_equal(s.validation_labels, y[70:80])
    np.testing.assert_array_equal(s.test_labels, y[80:])


def test_idx_errors(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(DatasetUnavailableError, match="t10k-images-idx3-ubyte") as info:
        load_splits(DataConfig(name="idx", path=str(missing)))
    assert str(missing) in str(info.value)
    with pytest.raises(DatasetUnavailableError, match="t10k-images-idx3-ubyte"):
        load_splits(DataConfig(name="idx", path=str(tmp_path)))  # empty folder

    x, y = synthetic(10, 3)
    write_idx(tmp_path / "t10k-images-idx3-ubyte", x, 2049)  # label magic on an image file
    with pytest.raises(ValueError, match="magic number 2049, expected 2051"):
        read_idx(tmp_path / "t10k-images-idx3-ubyte", 2051)
    with pytest.raises(DatasetUnavailableError, match="t10k-labels-idx1-ubyte"):
        load_splits(DataConfig(name="idx", path=str(tmp_path)))  # images without labels

    write_idx(tmp_path / "t10k-images-idx3-ubyte", x, 2051)
    data = (tmp_path / "t10k-images-idx3-ubyte").read_bytes()
    (tmp_path / "t10k-images-idx3-ubyte").write_bytes(data[:-100])
    with pytest.raises(ValueError, match="truncated"):
        read_idx(tmp_path / "t10k-images-idx3-ubyte", 2051)
    (tmp_path / "cut.gz").write_bytes(gzip.compress(data)[:200])
    with pytest.raises(ValueError, match="cannot read"):
        read_idx(tmp_path / "cut.gz", 2051)


# ------------------------------------------------------------------------------------------------ MNIST-10k (real file)


def test_mnist10k_real_file():
    if not (MNIST10K / "t10k-images-idx3-ubyte.gz").exists():
        pytest.skip(f"real MNIST test files not present at {MNIST10K.resolve()} (see ../shared/datasets/README.md)")
    s = load_splits(DataConfig(name="mnist10k"))
    assert (len(s.train), len(s.validation), len(s.test)) == (7000, 1000, 2000)
    assert s.image_shape == (28, 28, 1)
    with gzip.open(MNIST10K / "t10k-images-idx3-ubyte.gz", "rb") as f:
        raw = np.frombuffer(f.read(), np.uint8, offset=16).reshape(10000, 28, 28)
    np.testing.assert_array_equal(s.train[0, :, :, 0], raw[0] / np.float32(255))
    np.testing.assert_array_equal(s.train[-1, :, :, 0], raw[6999] / np.float32(255))
    labels = np.concatenate([s.train_labels, s.validation_labels, s.test_labels])
    assert np.bincount(labels, minlength=10).tolist() == MNIST10K_CLASS_COUNTS
    assert set(np.unique(s.validation)) == {0.0, 1.0}
    assert abs(s.test.mean() - raw[8000:].mean() / 255) < 0.005
    explicit = load_splits(DataConfig(name="mnist10k", path=str(MNIST10K)))
    np.testing.assert_array_equal(explicit.test, s.test)


def test_mnist10k_missing_folder(tmp_path):
    with pytest.raises(DatasetUnavailableError, match="data.path") as info:
        load_splits(DataConfig(name="mnist10k", path=str(tmp_path / "absent")))
    assert str(tmp_path / "absent") in str(info.value)


# ------------------------------------------------------------------------------------------------ npz


def test_npz_without_and_with_x_val(tmp_path):
    x_train, y_train = synthetic(120, 4, shape=(8, 8))
    x_test, y_test = synthetic(30, 5, shape=(8, 8))
    path = tmp_path / "d.npz"
    np.savez(path, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
    s = load_splits(DataConfig(name="npz", path=str(path), preprocessing="continuous"))
    assert (len(s.train), len(s.validation), len(s.test)) == (108, 12, 30)
    np.testing.assert_array_equal(s.validation[..., 0], (x_train[108:] + 0.5) / 256)
    np.testing.assert_array_equal(s.validation_labels, y_train[108:])
    np.testing.assert_array_equal(s.test[..., 0], (x_test + 0.5) / 256)

    x_val = x_train[:20] / 255.0  # floats in [0, 1] are accepted too
    np.savez(path, x_train=x_train, x_test=x_test, x_val=x_val)
    s = load_splits(DataConfig(name="npz", path=str(path), preprocessing="continuous"))
    assert (len(s.train), len(s.validation), len(s.test)) == (120, 20, 30)
    assert s.train_labels is None and s.validation_labels is None and s.test_labels is None
    np.testing.assert_array_equal(s.validation[..., 0], (x_train[:20] + 0.5) / 256)


def test_npz_rgb_32x32_flows_through(tmp_path):
    rng = np.random.RandomState(6)
    x_train = rng.randint(0, 256, size=(64, 32, 32, 3)).astype(np.uint8)
    x_test = rng.randint(0, 256, size=(16, 32, 32, 3)).astype(np.uint8)
    path = tmp_path / "rgb.npz"
    np.savez(path, x_train=x_train, x_test=x_test, y_train=np.arange(64) % 10, y_test=np.arange(16) % 10)
    s = load_splits(DataConfig(name="npz", path=str(path), validation_size=16))
    assert s.image_shape == (32, 32, 3) and s.train.shape == (48, 32, 32, 3)
    b = next(iter(train_dataset(s, batch_size=16, seed=0)))
    assert b["image"].shape == (16, 32, 32, 3)
    small = load_splits(DataConfig(name="npz", path=str(path), validation_size=16, image_size=[16, 16]))
    assert small.test.shape == (16, 16, 16, 3)


@pytest.mark.parametrize(
    "x, message",
    [
        (np.zeros((20, 784), np.uint8), "flattened"),
        (np.zeros((20, 8, 8, 5), np.uint8), r"\(20, 8, 8, 5\)"),
        (np.zeros((20, 2, 8, 8, 1), np.uint8), "C = 1"),
        (np.full((20, 8, 8), 2.0), r"expected \[0, 1\]"),
        (np.full((20, 8, 8), 300, np.int32), "0..255"),
    ],
)
def test_npz_bad_images_raise_image_shape_error(tmp_path, x, message):
    path = tmp_path / "bad.npz"
    np.savez(path, x_train=x, x_test=x)
    with pytest.raises(ImageShapeError, match=message):
        load_splits(DataConfig(name="npz", path=str(path)))


def test_npz_missing_file_and_keys(tmp_path):
    with pytest.raises(DatasetUnavailableError, match="does not exist"):
        load_splits(DataConfig(name="npz", path=str(tmp_path / "none.npz")))
    np.savez(tmp_path / "k.npz", images=np.zeros((4, 8, 8), np.uint8))
    with pytest.raises(ValueError, match="x_train"):
        load_splits(DataConfig(name="npz", path=str(tmp_path / "k.npz")))


# ------------------------------------------------------------------------------------------------ TFDS


@pytest.mark.parametrize(
    "name, shape, labelled",
    [("mnist", (28, 28, 1), True), ("omniglot", (28, 28, 1), True), ("cifar10", (32, 32, 3), True), ("celeb_a", (64, 64, 3), False),
     ("svhn", (32, 32, 1), True), ("static_mnist", (28, 28, 1), False)],
)
def test_tfds_loading_under_mock_data(name, shape, labelled):
    import tensorflow_datasets as tfds

    own_validation = name in ("celeb_a", "static_mnist")
    validation_size = None if own_validation else 4
    # mock_data fakes the records but not the "is prepared" check, so say the data is there.
    with tfds.testing.mock_data(num_examples=12), mock.patch.object(tfds.core.DatasetBuilder, "is_prepared", lambda self: True):
        s = load_splits(DataConfig(name=name, validation_size=validation_size))
    expected = (12, 12, 12) if own_validation else (8, 4, 12)
    assert (len(s.train), len(s.validation), len(s.test)) == expected
    assert s.image_shape == shape and s.train.shape[1:] == shape
    assert 0 <= s.train.min() and s.train.max() <= 1 and set(np.unique(s.test)) <= {0.0, 1.0}
    assert (s.train_labels is not None) == labelled
    if labelled:
        assert s.train_labels.dtype == np.int64 and s.test_labels.shape == (12,)


def _fake_svhn_cropped(counts, seed=0):
    """RGB uint8 [32, 32, 3] records per split, as svhn_cropped stores them, with white and black pixels."""
    rng = np.random.default_rng(seed)
    images = {}
    for split, n in counts.items():
        x = rng.integers(0, 256, size=(n, 32, 32, 3), dtype=np.uint8)
        x[:, 0, 0], x[:, 0, 1] = 255, 0
        images[split] = x

    def as_dataset(self, split, decoders=None, read_config=None, **kwargs):
        assert self.name == "svhn_cropped", self.name
        x = images[str(split)]
        return tf.data.Dataset.from_tensor_slices({"image": x, "label": np.arange(len(x), dtype=np.int64) % 10})

    return images, as_dataset


def _grey_reference(rgb):
    """tf.image.rgb_to_grayscale's luma weights on the 0..255 scale, rounded (float64 NumPy)."""
    return np.round(rgb.astype(np.float64) @ np.array([0.2989, 0.5870, 0.1140]))[..., None].astype(np.uint8)


def test_svhn_reads_svhn_cropped_as_rounded_grey_with_a_held_out_validation_set():
    import tensorflow_datasets as tfds

    images, as_dataset = _fake_svhn_cropped({"train": 15, "test": 6})
    with tfds.testing.mock_data(as_dataset_fn=as_dataset), mock.patch.object(
        tfds.core.DatasetBuilder, "is_prepared", lambda self: True
    ):
        s = load_splits(DataConfig(name="svhn", preprocessing="continuous", validation_size=5))
    assert s.image_shape == (32, 32, 1) and s.name == "svhn"
    grey = {split: np.round(x * 256 - 0.5).astype(np.uint8) for split, x in
            (("train", s.train), ("validation", s.validation), ("test", s.test))}
    want_train = _grey_reference(images["train"])
    np.testing.assert_array_equal(grey["train"], want_train[:10])  # the last 5 of train are validation
    np.testing.assert_array_equal(grey["validation"], want_train[10:])
    np.testing.assert_array_equal(grey["test"], _grey_reference(images["test"]))
    assert grey["test"][:, 0, 0, 0].tolist() == [255] * 6 and grey["test"][:, 0, 1, 0].tolist() == [0] * 6
    np.testing.assert_array_equal(s.train_labels, np.arange(10) % 10)
    np.testing.assert_array_equal(s.validation_labels, np.arange(10, 15) % 10)


def test_svhn_default_validation_size_is_10000():
    from training.data import TFDS_BUILDERS, TFDS_VALIDATION_SIZE

    assert TFDS_VALIDATION_SIZE["svhn"] == 10_000 and TFDS_BUILDERS["svhn"] == "svhn_cropped"


def test_tfds_unprepared_without_download_names_the_way_out(tmp_path):
    with pytest.raises(DatasetUnavailableError) as info:
        load_splits(DataConfig(name="mnist", tfds_data_dir=str(tmp_path)))
    message = str(info.value)
    for part in ("'mnist'", str(tmp_path), "data.path", "data.name=idx", "data.name=npz", "data.download=true"):
        assert part in message


def test_svhn_unprepared_names_the_svhn_cropped_builder_and_the_way_out(tmp_path):
    with pytest.raises(DatasetUnavailableError) as info:
        load_splits(DataConfig(name="svhn", tfds_data_dir=str(tmp_path)))
    message = str(info.value)
    first = message.splitlines()[0]
    assert "'svhn'" in first and "svhn_cropped" in first and "data.download=false" in first
    for part in (str(tmp_path), "svhn_cropped/3.1.0", f"/dir/svhn_cropped/<version>/", "'svhn_cropped')",
                 "data.path", "data.name=idx", "data.name=npz", "data.download=true", "data.name=mnist10k"):
        assert part in message, part


def test_tfds_default_data_dir_in_message(tmp_path, monkeypatch):
    monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path / "tfds_home"))
    with pytest.raises(DatasetUnavailableError, match="fashion_mnist") as info:
        load_splits(DataConfig(name="fashion_mnist"))
    assert str(tmp_path / "tfds_home") in str(info.value)


@pytest.mark.parametrize("name,host,hint", [("mnist", "storage.googleapis.com", "data.name=idx"),
                                            ("svhn", "ufldl.stanford.edu", "svhn_cropped")])
def test_tfds_download_offline_fails_fast_without_trying(tmp_path, name, host, hint):
    import requests
    import tensorflow_datasets as tfds

    def offline(*args, **kwargs):
        raise requests.ConnectionError("no network")

    def must_not_run(*args, **kwargs):
        raise AssertionError("download_and_prepare must not be called when the hosts are unreachable")

    with mock.patch.object(requests, "head", offline), mock.patch.object(
        tfds.core.DatasetBuilder, "download_and_prepare", must_not_run
    ):
        with pytest.raises(DatasetUnavailableError, match="unreachable") as info:
            load_splits(DataConfig(name=name, tfds_data_dir=str(tmp_path), download=True))
    assert host in str(info.value) and hint in str(info.value)


def test_tfds_manual_dir_missing_files(tmp_path):
    manual = tmp_path / "manual"
    manual.mkdir()
    (manual / "t10k-images-idx3-ubyte.gz").write_bytes(b"")
    with pytest.raises(DatasetUnavailableError, match="train-images-idx3-ubyte.gz") as info:
        load_splits(DataConfig(name="mnist", tfds_data_dir=str(tmp_path / "tfds"), path=str(manual)))
    assert "t10k-images-idx3-ubyte.gz'" not in str(info.value).split("lacks")[1].splitlines()[0]
