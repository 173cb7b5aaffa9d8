"""Data that would train into nonsense or crash after training is caught at load time: already-binarised
0/1 images, empty arrays, a validation set that leaves no training images, a bad image size."""

import gzip

import numpy as np
import pytest

from layers.errors import UserError
from training.config import DataConfig
from training.data import DataError, IDX_IMAGES_MAGIC, IDX_LABELS_MAGIC, load_splits


def _binary_images(n, seed):
    return (np.random.RandomState(seed).uniform(size=(n, 8, 8)) < 0.3).astype(np.uint8)


def _write_idx(path, array, magic):
    header = magic.to_bytes(4, "big") + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + np.ascontiguousarray(array, np.uint8).tobytes())


@pytest.mark.parametrize("preprocessing", ["dynamic_binarization", "continuous"])
def test_npz_of_0_1_integers_reads_like_the_same_images_as_0_255(tmp_path, capsys, preprocessing):
    x_train, x_test = _binary_images(40, 0), _binary_images(10, 1)
    np.savez(tmp_path / "binary.npz", x_train=x_train, x_test=x_test.astype(np.int64))
    np.savez(tmp_path / "scaled.npz", x_train=x_train * 255, x_test=x_test * 255)
    binary = load_splits(DataConfig(name="npz", path=str(tmp_path / "binary.npz"), preprocessing=preprocessing))
    lines = capsys.readouterr().out.splitlines()
    scaled = load_splits(DataConfig(name="npz", path=str(tmp_path / "scaled.npz"), preprocessing=preprocessing))
    assert capsys.readouterr().out == ""  # 0..255 data is read silently, as before
    assert len(lines) == 1 and "binary.npz" in lines[0] and "only 0 and 1" in lines[0]
    for split in ("train", "validation", "test"):
        np.testing.assert_array_equal(getattr(binary, split), getattr(scaled, split))
    if preprocessing == "dynamic_binarization":
        assert set(np.unique(binary.train)) == {0.0, 1.0}


def test_idx_files_of_0_1_pixels_are_read_as_binary(tmp_path, capsys):
    images, labels = _binary_images(30, 2), np.arange(30, dtype=np.uint8) % 10
    _write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", images, IDX_IMAGES_MAGIC)
    _write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", labels, IDX_LABELS_MAGIC)
    splits = load_splits(DataConfig(name="idx", path=str(tmp_path)))
    assert "only 0 and 1" in capsys.readouterr().out
    np.testing.assert_array_equal(splits.test[..., 0], images[24:])  # binarising 0/1 intensities keeps them


def test_0_255_data_that_happens_to_be_all_zero_or_uses_other_values_is_not_rescaled(tmp_path, capsys):
    x = np.zeros((20, 8, 8), np.uint8)
    x[0, 0, 0] = 2
    np.savez(tmp_path / "d.npz", x_train=x, x_test=x)
    splits = load_splits(DataConfig(name="npz", path=str(tmp_path / "d.npz"), preprocessing="continuous"))
    assert capsys.readouterr().out == ""
    assert splits.train.max() == np.float32(2.5 / 256)


@pytest.mark.parametrize("empty", ["x_train", "x_test", "x_val"])
def test_npz_with_an_empty_array_fails_at_load_naming_file_and_array(tmp_path, empty):
    arrays = {"x_train": _binary_images(20, 0), "x_test": _binary_images(5, 1), "x_val": _binary_images(5, 2)}
    arrays[empty] = np.zeros((0, 8, 8), np.uint8)
    path = tmp_path / "d.npz"
    np.savez(path, **arrays)
    with pytest.raises(DataError, match=f"{path}: array {empty} holds no images") as info:
        load_splits(DataConfig(name="npz", path=str(path)))
    assert isinstance(info.value, UserError) and info.value.exit_code == 2
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("size", [36, 40, 1000])
def test_validation_size_that_leaves_no_training_images_fails_at_load(tmp_path, size):
    path = tmp_path / "d.npz"
    np.savez(path, x_train=np.full((36, 8, 8), 100, np.uint8), x_test=np.full((4, 8, 8), 100, np.uint8))
    with pytest.raises(DataError, match=f"data.validation_size={size} leaves no training images .*below 36"):
        load_splits(DataConfig(name="npz", path=str(path), validation_size=size))


def test_validation_size_too_large_for_digits_is_a_user_error():
    with pytest.raises(DataError, match="data.validation_size=1547 leaves no training images"):
        load_splits(DataConfig(name="digits", validation_size=1547))


@pytest.mark.parametrize("image_size", [[0, 8], [8, -1], [0, 0]])
def test_image_size_without_positive_entries_is_refused(image_size):
    with pytest.raises(DataError, match=r"data.image_size=\[.*\]: give \[height, width\], both at least 1 pixel"):
        load_splits(DataConfig(name="digits", image_size=image_size))
