"""Datasets as NumPy splits, plus deterministic tf.data pipelines for training and evaluation.

Every source (TFDS, MNIST-format IDX files, an .npz, scikit-learn's digits) is first read into uint8
arrays [N, H, W, C] on the 0..255 scale (integer images holding only 0 and 1 are taken as already
binarised and scaled to 0/255, with a printed line), so that the two preprocessing modes are exact:

* dynamic_binarization: training images are greyscale intensities x/255 and each training batch gets a
  fresh Bernoulli draw (in `train_dataset`); validation and test are binarised once at load time with
  np.random.RandomState(binarization_seed), validation first and then test from the same stream, the
  way the reference code does it with np.random.seed(777).
* continuous: every split is (x + 0.5) / 256, the deterministic mid-bin dequantisation of the references.

The training pipeline is a pure function of (seed, epoch, step): a run resumed at epoch e sees exactly
the batches an uninterrupted run would have seen.
"""

from __future__ import annotations

import gzip
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tensorflow as tf

from layers.errors import UserError
from training.config import DataConfig

PREPROCESSING = ("dynamic_binarization", "continuous")
TFDS_DATASETS = ("mnist", "fashion_mnist", "cifar10", "omniglot", "celeb_a", "svhn", "static_mnist")
# The TFDS builder of a data.name when the two differ (svhn: the 32x32 digit crops, converted to greyscale;
# static_mnist: Larochelle and Murray's fixed binarisation, 50000 / 10000 / 10000, no labels).
TFDS_BUILDERS = {"svhn": "svhn_cropped", "static_mnist": "binarized_mnist"}
# Images held out from TFDS "train" as validation (the papers' splits); celeb_a has its own validation split.
TFDS_VALIDATION_SIZE = {"mnist": 10_000, "fashion_mnist": 10_000, "cifar10": 10_000, "omniglot": 1_345, "svhn": 10_000}
DEFAULT_IMAGE_SIZE = {"omniglot": (28, 28), "celeb_a": (64, 64)}
CELEB_A_CROP = 140
IDX_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
IDX_IMAGES_MAGIC, IDX_LABELS_MAGIC = 2051, 2049
MNIST10K_DEFAULT_PATH = "../shared/datasets/mnist_t10k"
DIGITS_TEST_SIZE, DIGITS_VALIDATION_SIZE = 250, 250
PROBE_TIMEOUT_S = 5.0


class DatasetUnavailableError(RuntimeError):
    """The dataset cannot be reached offline, is not prepared, or its files are missing."""


class ImageShapeError(ValueError):
    """Images of a shape, channel count or value range the models cannot use."""


class DataError(UserError, ValueError):
    """The data cannot make a run (an empty split, a validation set that leaves no training images, a bad
    image size): refused at load time, before a model is built, instead of failing after training."""


@dataclass
class Splits:
    """Preprocessed float32 images [N, H, W, C] in [0, 1] and int64 labels (None when the source has none).

    `train` holds greyscale intensities x/255 for dynamic_binarization (binarised per batch by
    `train_dataset`) and (x + 0.5)/256 for continuous; `validation` and `test` are final: binarised once
    (RandomState(binarization_seed), validation drawn before test) or (x + 0.5)/256.
    """

    train: np.ndarray
    validation: np.ndarray
    test: np.ndarray
    train_labels: np.ndarray | None
    validation_labels: np.ndarray | None
    test_labels: np.ndarray | None
    image_shape: tuple[int, int, int]
    preprocessing: str
    name: str


# --------------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------------


def load_splits(config: DataConfig) -> Splits:
    """Read the dataset named by `config`, split it, resize it and apply the preprocessing."""
    if config.preprocessing not in PREPROCESSING:
        raise ValueError(f"data.preprocessing: '{config.preprocessing}' is not one of {list(PREPROCESSING)}")
    loaders = {name: _load_tfds for name in TFDS_DATASETS}
    loaders.update(idx=_load_idx, mnist10k=_load_mnist10k, npz=_load_npz, digits=_load_digits)
    if config.name not in loaders:
        raise ValueError(f"data.name: '{config.name}' is not one of {list(loaders)}")
    size = _image_size(config)  # checked before the (possibly slow) read
    raw = loaders[config.name](config)  # {"train"|"validation"|"test": (uint8 [N,H,W,C], int64 [N] | None)}
    raw = {split: (_resize(images, size), labels) for split, (images, labels) in raw.items()}
    _check_raw(raw, config.name)

    x_train, x_val, x_test = (raw[s][0] for s in ("train", "validation", "test"))
    if config.preprocessing == "continuous":
        train, validation, test = (_dequantize(x) for x in (x_train, x_val, x_test))
    else:
        train = (x_train / np.float32(255)).astype(np.float32)
        rng = np.random.RandomState(config.binarization_seed)  # one stream: validation, then test
        validation = rng.binomial(1, x_val / 255.0).astype(np.float32)
        test = rng.binomial(1, x_test / 255.0).astype(np.float32)

    return Splits(
        train=train,
        validation=validation,
        test=test,
        train_labels=raw["train"][1],
        validation_labels=raw["validation"][1],
        test_labels=raw["test"][1],
        image_shape=tuple(int(d) for d in x_train.shape[1:]),
        preprocessing=config.preprocessing,
        name=config.name,
    )


def steps_per_epoch(splits: Splits, batch_size: int) -> int:
    """Full batches per epoch; the remainder is dropped so every batch has a static shape."""
    return len(splits.train) // batch_size


def train_dataset(
    splits: Splits, batch_size: int, seed: int, initial_epoch: int = 0, epochs: int = 1,
    index_draws: dict[str, int] | None = None, keep_grey: bool = False,
) -> tf.data.Dataset:
    """Batches {"image": float32 [B,H,W,C], "index": int64 [B]} for epochs initial_epoch .. epochs-1.

    Epoch e is a stateless shuffle seeded by (seed, e), cut into N // batch_size full batches; with
    dynamic_binarization batch `step` is binarised with stateless uniforms seeded by fold_in((seed, e), step).
    Nothing depends on iterator state, so resuming at epoch e reproduces the uninterrupted run exactly.
    `index` is the row in splits.train (for leave-one-out exemplar priors).
    `index_draws` {name: count} adds int64 [count] training-set indices drawn uniformly with replacement
    under each name (the exemplar prior's candidates), seeded by fold_in(batch seed, j) for the j-th name
    in sorted order, j >= 1.
    `keep_grey` adds "grey": the greyscale batch before its binarisation (VAEPP's q(z | e) trick).
    """
    n = len(splits.train)
    steps = n // batch_size
    if steps == 0:
        raise ValueError(f"batch_size {batch_size} is larger than the training set ({n} images)")
    binarize = splits.preprocessing == "dynamic_binarization"
    base_seed = tf.constant(seed, tf.int64)
    draws = sorted((index_draws or {}).items())
    clash = [name for name, _ in draws if name in ("image", "index", "grey")]
    if clash:
        raise ValueError(f"index_draws: {clash} would overwrite the batch's own entries; use other names")

    def make_batch(epoch, step, index):
        image = _gather(splits.train, index, batch_size)
        batch_seed = tf.random.experimental.stateless_fold_in(tf.stack([base_seed, epoch]), step)
        batch = {"grey": image} if keep_grey else {}
        if binarize:
            image = tf.cast(tf.random.stateless_uniform(tf.shape(image), seed=batch_seed) < image, tf.float32)
        batch.update(image=image, index=index)
        for j, (name, count) in enumerate(draws, start=1):
            batch[name] = tf.random.stateless_uniform(
                [count], seed=tf.random.experimental.stateless_fold_in(batch_seed, j), minval=0, maxval=n, dtype=tf.int64
            )
        return batch

    def one_epoch(epoch):
        order = tf.random.experimental.stateless_shuffle(tf.range(n, dtype=tf.int64), seed=tf.stack([base_seed, epoch]))
        batches = tf.reshape(order[: steps * batch_size], [steps, batch_size])
        ds = tf.data.Dataset.zip(tf.data.Dataset.range(steps), tf.data.Dataset.from_tensor_slices(batches))
        return ds.map(lambda step, index: make_batch(epoch, step, index), num_parallel_calls=tf.data.AUTOTUNE)

    ds = tf.data.Dataset.range(initial_epoch, epochs).flat_map(one_epoch)
    ds = ds.apply(tf.data.experimental.assert_cardinality(max(epochs - initial_epoch, 0) * steps))
    return ds.prefetch(tf.data.AUTOTUNE)


def eval_dataset(images: np.ndarray, batch_size: int) -> tf.data.Dataset:
    """Batches {"image", "index"} of `images` in order, keeping the final partial batch."""
    ds = tf.data.Dataset.range(len(images)).batch(batch_size)
    ds = ds.map(lambda index: {"image": _gather(images, index, None), "index": index}, num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(tf.data.AUTOTUNE)


# --------------------------------------------------------------------------------------------------
# Shared helpers: uint8 conversion, splitting, resizing, validation
# --------------------------------------------------------------------------------------------------


def _gather(images: np.ndarray, index: tf.Tensor, batch_size: int | None) -> tf.Tensor:
    """Rows `index` of a NumPy array inside tf.data.

    A NumPy lookup instead of tf.gather on a captured tensor: tf.data serialises captured tensors into
    its graph (seconds and several copies of memory for a 2 GB training set), a numpy_function does not.
    """
    rows = tf.numpy_function(lambda i: images[i].astype(np.float32, copy=False), [index], tf.float32, stateful=False)
    rows.set_shape([batch_size, *images.shape[1:]])
    return rows


def _dequantize(x: np.ndarray) -> np.ndarray:
    return ((x.astype(np.float32) + np.float32(0.5)) / np.float32(256)).astype(np.float32)


def _image_size(config: DataConfig) -> tuple[int, int] | None:
    size = config.image_size or DEFAULT_IMAGE_SIZE.get(config.name)
    if size is None:
        return None
    if len(size) != 2 or any(int(d) < 1 for d in size):
        raise DataError(f"data.image_size={list(size)}: give [height, width], both at least 1 pixel "
                        "(e.g. --set data.image_size=[28,28]), or leave it unset for the native size")
    return (int(size[0]), int(size[1]))


def _default_validation_size(n: int) -> int:
    """10,000 like the papers' MNIST split, or 10% when 10,000 would be a large share (n < 50,000)."""
    return 10_000 if n >= 50_000 else max(1, n // 10)


def _hold_out(images, labels, size: int, where: str):
    """Last `size` rows become validation; the order of the source is kept (the papers' fixed split)."""
    n = len(images)
    if not 0 <= size < n:
        raise DataError(f"data.validation_size={size} leaves no training images in {where} ({n} images); "
                        f"set data.validation_size below {n}")
    cut = n - size
    lab = (None, None) if labels is None else (labels[:cut], labels[cut:])
    return (images[:cut], lab[0]), (images[cut:], lab[1])


def _binary_as_255(arrays: dict, where: str) -> dict:
    """Integer images holding only 0 and 1 (already binarised) scaled to 0/255, with one line saying so.

    Read as 0..255 they would be near-black intensities: training runs, reconstructions are black and
    the NLL is meaningless, with no error. The decision covers all of `arrays` at once (one dataset)."""
    images = [x for x in arrays.values() if np.issubdtype(x.dtype, np.integer) and x.size]
    if not images or any(x.min() < 0 or x.max() > 1 for x in images) or max(x.max() for x in images) < 1:
        return arrays
    print(f"{where}: integer images hold only 0 and 1, so they are read as binary images (1 -> intensity 255)")
    return {k: x * np.uint8(255) if np.issubdtype(x.dtype, np.integer) and x.size else x for k, x in arrays.items()}


def _check_not_empty(images: np.ndarray, where: str) -> None:
    if np.size(images) == 0:
        raise DataError(f"{where} holds no images (shape {images.shape}); every split needs at least one image")


def _to_uint8(x: np.ndarray, where: str) -> np.ndarray:
    """Images [N,H,W] or [N,H,W,C] as uint8 0..255; floats in [0, 1] are mapped with round(x * 255)."""
    x = np.asarray(x)
    expected = "images [N, H, W] or [N, H, W, C] with C = 1 (greyscale) or 3 (RGB)"
    if x.ndim == 3:
        x = x[..., None]
    if x.ndim != 4 or x.shape[-1] not in (1, 3):
        hint = " (flattened images must be reshaped to [N, H, W] first)" if x.ndim == 2 else ""
        raise ImageShapeError(f"{where}: got an array of shape {x.shape}; expected {expected}{hint}")
    if x.size == 0:
        return x.astype(np.uint8)
    lo, hi = x.min(), x.max()
    if x.dtype == bool:
        return x.astype(np.uint8) * np.uint8(255)
    if np.issubdtype(x.dtype, np.integer):
        if lo < 0 or hi > 255:
            raise ImageShapeError(f"{where}: integer values range {lo}..{hi}; expected 0..255")
        return x.astype(np.uint8)
    if np.issubdtype(x.dtype, np.floating):
        if not (np.isfinite(lo) and np.isfinite(hi)) or lo < 0 or hi > 1:
            raise ImageShapeError(f"{where}: float values range {lo}..{hi}; expected [0, 1] (or uint8 0..255)")
        return np.round(x * 255).astype(np.uint8)
    raise ImageShapeError(f"{where}: unsupported dtype {x.dtype}; expected uint8 0..255 or floats in [0, 1]")


def _to_labels(y, n: int, where: str) -> np.ndarray | None:
    if y is None:
        return None
    y = np.asarray(y).reshape(-1) if np.ndim(y) == 2 and np.shape(y)[1] == 1 else np.asarray(y)
    if y.ndim != 1 or len(y) != n:
        raise ValueError(f"{where}: labels of shape {y.shape} do not match {n} images")
    return y.astype(np.int64)


def _resize_tensor(images: tf.Tensor, size: tuple[int, int]) -> tf.Tensor:
    """Area averaging when shrinking (no aliasing), bilinear when enlarging; re-quantised to uint8.

    Rounding back to 0..255 keeps continuous = (x + 0.5)/256 and greyscale = x/255 exact after a resize.
    """
    height, width = images.shape[-3], images.shape[-2]
    method = "area" if size[0] <= height and size[1] <= width else "bilinear"
    resized = tf.image.resize(tf.cast(images, tf.float32), size, method=method)
    return tf.cast(tf.clip_by_value(tf.round(resized), 0.0, 255.0), tf.uint8)


def _resize(images: np.ndarray, size: tuple[int, int] | None, chunk: int = 4096) -> np.ndarray:
    if size is None or tuple(images.shape[1:3]) == size:
        return images
    if len(images) == 0:
        return np.zeros((0, *size, images.shape[-1]), np.uint8)
    return np.concatenate([_resize_tensor(images[i : i + chunk], size).numpy() for i in range(0, len(images), chunk)])


def _check_raw(raw: dict, name: str) -> None:
    """All splits must be uint8 [N, H, W, C] with C in {1, 3} and the same image shape."""
    shapes = {}
    for split, (images, labels) in raw.items():
        if images.ndim != 4 or images.shape[-1] not in (1, 3) or images.dtype != np.uint8:
            raise ImageShapeError(
                f"{name} {split}: got {images.dtype} images of shape {images.shape}; "
                "expected uint8 [N, H, W, C] with C = 1 or 3"
            )
        shapes[split] = images.shape[1:]
        if labels is not None and len(labels) != len(images):
            raise ValueError(f"{name} {split}: {len(labels)} labels for {len(images)} images")
    if len(set(shapes.values())) != 1:
        raise ImageShapeError(f"{name}: splits have different image shapes {shapes}; set data.image_size to unify them")
    for split, (images, _) in raw.items():
        _check_not_empty(images, f"{name}: the {split} split")


# --------------------------------------------------------------------------------------------------
# TFDS
# --------------------------------------------------------------------------------------------------


def _tfds_data_dir(config: DataConfig) -> str:
    return config.tfds_data_dir or os.environ.get("TFDS_DATA_DIR") or os.path.expanduser("~/tensorflow_datasets")


def _tfds_builder_name(name: str) -> str:
    return TFDS_BUILDERS.get(name, name)


def _unavailable(config: DataConfig, builder, reason: str) -> DatasetUnavailableError:
    builder_name = _tfds_builder_name(config.name)
    dataset = f"'{config.name}'" if builder_name == config.name else f"'{config.name}' (TFDS '{builder_name}')"
    return DatasetUnavailableError(
        f"dataset {dataset} is not available: {reason}\n"
        f"TFDS looked in data dir {_tfds_data_dir(config)} (for {builder.data_dir}).\n"
        "Point the config at local data instead, e.g.:\n"
        "  --set data.name=idx --set data.path=/folder/with/train-images-idx3-ubyte.gz   (MNIST-format IDX files)\n"
        "  --set data.name=npz --set data.path=/file.npz   (keras.datasets layout: x_train, y_train, x_test, y_test)\n"
        f"  --set data.tfds_data_dir=/dir   (a prepared TFDS copy: /dir/{builder_name}/<version>/)\n"
        f"  --set data.path=/folder   (TFDS manual dir with the original source files of '{builder_name}')\n"
        "  --set data.download=true   (needs internet)\n"
        "Offline alternatives: data.name=mnist10k (MNIST test file in ../shared/datasets) or data.name=digits."
    )


def _probe_download_hosts(builder) -> str | None:
    """Return why the download hosts are unreachable, or None when reachable.

    TFDS retries each URL with backoff for minutes when offline, so one short request per host decides first.
    """
    import requests

    hosts = {}
    for url in (builder.url_infos or {}):
        hosts.setdefault(url.split("/")[2], url)
    for host, url in hosts.items():
        try:
            requests.head(url, timeout=PROBE_TIMEOUT_S, allow_redirects=False)
        except requests.RequestException as error:
            return f"download host {host} is unreachable ({type(error).__name__})"
    return None


def _prepared_builder(config: DataConfig):
    """A TFDS builder whose data is prepared: as found, from a manual dir (config.path), or downloaded."""
    import tensorflow_datasets as tfds

    builder = tfds.builder(_tfds_builder_name(config.name), data_dir=config.tfds_data_dir)
    if builder.is_prepared():
        return builder
    if config.path:
        manual = Path(config.path).expanduser()
        expected = sorted(info.filename for info in (builder.url_infos or {}).values() if info.filename)
        if not manual.is_dir():
            raise _unavailable(config, builder, f"data.path={manual} is not a folder (expected a TFDS manual dir with {expected})")
        missing = [name for name in expected if not (manual / name).exists()]
        if missing:
            raise _unavailable(config, builder, f"the manual dir {manual} lacks {missing}")
        try:
            builder.download_and_prepare(
                download_config=tfds.download.DownloadConfig(manual_dir=str(manual), try_download_gcs=False)
            )
        except Exception as error:  # TFDS raises many types (checksums, missing modules, I/O)
            raise _unavailable(config, builder, f"preparing from manual dir {manual} failed: {error}") from error
        return builder
    if not config.download:
        raise _unavailable(config, builder, "it is not prepared and downloading is off (data.download=false)")
    reason = _probe_download_hosts(builder)
    if reason:
        raise _unavailable(config, builder, f"data.download=true but {reason}")
    try:
        builder.download_and_prepare()
    except Exception as error:
        raise _unavailable(config, builder, f"download_and_prepare failed: {error}") from error
    return builder


def _omniglot_strokes(image):
    """Black strokes on white RGB -> strokes 1 on 0 in one channel, like Burda's chardata."""
    return 255 - tf.image.rgb_to_grayscale(image)


def _celeb_a_centre_crop(image):
    height, width = image.shape[0], image.shape[1]
    return tf.image.crop_to_bounding_box(
        image, (height - CELEB_A_CROP) // 2, (width - CELEB_A_CROP) // 2, CELEB_A_CROP, CELEB_A_CROP)


def _rgb_to_grey_uint8(image):
    """RGB uint8 -> one grey channel, tf.image.rgb_to_grayscale's luma weights on the 0..255 scale, rounded."""
    grey = tf.image.rgb_to_grayscale(tf.cast(image, tf.float32))
    return tf.cast(tf.clip_by_value(tf.round(grey), 0.0, 255.0), tf.uint8)


def _binary_to_255(image):
    """0/1 pixels (an already binarised dataset) on the 0..255 scale: binarising them again changes nothing."""
    return image * tf.constant(255, image.dtype)


# What each TFDS dataset's images need before resizing to become the papers' images.
TFDS_NATIVE_CONVERSIONS = {"omniglot": _omniglot_strokes, "celeb_a": _celeb_a_centre_crop, "svhn": _rgb_to_grey_uint8,
                           "static_mnist": _binary_to_255}


def _load_tfds(config: DataConfig) -> dict:
    """TFDS splits as uint8 arrays; omniglot, celeb_a and svhn (svhn_cropped to one grey channel) are converted
    and resized inside tf.data to bound memory. svhn reads only svhn_cropped's train and test splits (not extra).

    The order is TFDS's stored (hash-shuffled, deterministic) record order, not the original file order;
    for the papers' exact MNIST file-order split read the original files with data.name=idx.
    """
    import tensorflow_datasets as tfds

    builder = _prepared_builder(config)
    has_labels = "label" in builder.info.features
    size = _image_size(config)

    native = TFDS_NATIVE_CONVERSIONS.get(config.name, lambda image: image)

    def convert(example):
        image = native(example["image"])
        if size is not None and tuple(image.shape[:2]) != size:
            image = _resize_tensor(image, size)
        label = tf.cast(example["label"], tf.int64) if has_labels else tf.constant(-1, tf.int64)
        return image, label

    def read(split):
        ds = builder.as_dataset(split=split, shuffle_files=False).map(convert, num_parallel_calls=tf.data.AUTOTUNE)
        chunks = list(tfds.as_numpy(ds.batch(1024)))
        if not chunks:
            raise DatasetUnavailableError(f"TFDS dataset '{config.name}' split '{split}' is empty")
        images = np.concatenate([c[0] for c in chunks])
        labels = np.concatenate([c[1] for c in chunks]) if has_labels else None
        return images, labels

    if config.name not in TFDS_VALIDATION_SIZE:  # the dataset has its own validation split (celeb_a, static_mnist)
        if config.validation_size is not None:
            raise ValueError(f"data.validation_size: {config.name} uses its official validation split; leave it unset")
        return {split: read(split) for split in ("train", "validation", "test")}
    images, labels = read("train")
    size_v = config.validation_size if config.validation_size is not None else TFDS_VALIDATION_SIZE[config.name]
    train, validation = _hold_out(images, labels, size_v, f"TFDS {config.name} train")
    return {"train": train, "validation": validation, "test": read("test")}


# --------------------------------------------------------------------------------------------------
# IDX files (original MNIST layout) and MNIST-10k
# --------------------------------------------------------------------------------------------------


def read_idx(path: str | Path, magic: int) -> np.ndarray:
    """Parse one IDX file (gzipped or not): big-endian magic and dims, then uint8 data."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError) as error:
        raise ValueError(f"{path}: cannot read the file ({error}); is it a complete IDX file?") from error
    found = int.from_bytes(data[:4], "big") if len(data) >= 4 else None
    if found != magic:
        kind = "images" if magic == IDX_IMAGES_MAGIC else "labels"
        raise ValueError(f"{path}: magic number {found}, expected {magic} (IDX {kind}); not an MNIST-format IDX file")
    ndim = data[3]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise ValueError(f"{path}: truncated IDX header ({len(data)} bytes)")
    dims = tuple(int(d) for d in np.frombuffer(data, ">u4", count=ndim, offset=4))
    expected = int(np.prod(dims))
    if len(data) - header != expected:
        raise ValueError(
            f"{path}: header says shape {dims} ({expected} bytes of data) but the file holds {len(data) - header}; "
            "the file is truncated or corrupt"
        )
    return np.frombuffer(data, np.uint8, offset=header).reshape(dims)


def _find_idx(folder: Path, stem: str) -> Path | None:
    for candidate in (folder / stem, folder / f"{stem}.gz"):
        if candidate.is_file():
            return candidate
    return None


def _read_idx_pair(folder: Path, prefix: str):
    """(images uint8 [N,28,28,1], labels int64) for prefix 'train' or 't10k', or None without an image file."""
    images_path = _find_idx(folder, f"{prefix}-images-idx3-ubyte")
    if images_path is None:
        return None
    labels_path = _find_idx(folder, f"{prefix}-labels-idx1-ubyte")
    if labels_path is None:
        raise DatasetUnavailableError(f"{folder}: found {images_path.name} but no {prefix}-labels-idx1-ubyte[.gz]")
    images = read_idx(images_path, IDX_IMAGES_MAGIC)[..., None]
    _check_not_empty(images, str(images_path))
    labels = _to_labels(read_idx(labels_path, IDX_LABELS_MAGIC), len(images), str(labels_path))
    return images, labels


def _binary_idx_pairs(folder: Path, pairs: dict) -> dict:
    """`_binary_as_255` over the image files of `pairs` {prefix: (images, labels) | None}."""
    present = {k: v for k, v in pairs.items() if v is not None}
    scaled = _binary_as_255({k: images for k, (images, _) in present.items()}, f"IDX files in {folder}")
    return {**pairs, **{k: (scaled[k], labels) for k, (_, labels) in present.items()}}


def _fixed_split_of_test_file(images, labels, validation_size: int | None) -> dict:
    """MNIST-10k in file order: first 70% train, next 10% validation, last 20% test (7000/1000/2000 of 10k)."""
    n = len(images)
    test_start = n - n // 5
    val = validation_size if validation_size is not None else n // 10
    (x_tr, y_tr), (x_va, y_va) = _hold_out(images[:test_start], labels[:test_start], val, "the t10k file")
    return {"train": (x_tr, y_tr), "validation": (x_va, y_va), "test": (images[test_start:], labels[test_start:])}


def _missing_idx(folder: Path, what: str) -> DatasetUnavailableError:
    names = ", ".join(f"{name}[.gz]" for name in IDX_FILES)
    return DatasetUnavailableError(f"{what} {folder}: expected MNIST-format IDX files {names} (t10k-* alone is enough)")


def _load_idx(config: DataConfig) -> dict:
    """train-* and t10k-* files: last validation_size (default 10,000) of train held out; t10k only: MNIST-10k split."""
    if not config.path:
        raise _missing_idx(Path("<unset>"), "data.name=idx needs data.path, a folder;")
    folder = Path(config.path).expanduser()
    if not folder.is_dir():
        raise _missing_idx(folder, "no such IDX folder")
    test = _read_idx_pair(folder, "t10k")
    if test is None:
        raise _missing_idx(folder, "no t10k-images-idx3-ubyte[.gz] in")
    pairs = _binary_idx_pairs(folder, {"t10k": test, "train": _read_idx_pair(folder, "train")})
    test, train = pairs["t10k"], pairs["train"]
    if train is None:
        return _fixed_split_of_test_file(*test, config.validation_size)
    images, labels = train
    size = config.validation_size if config.validation_size is not None else _default_validation_size(len(images))
    train_part, validation = _hold_out(images, labels, size, f"{folder} train files")
    return {"train": train_part, "validation": validation, "test": test}


def _mnist10k_folder(config: DataConfig) -> Path:
    if config.path:
        candidates = [Path(config.path).expanduser()]
    else:
        project_root = Path(__file__).resolve().parents[1]
        candidates = [(project_root / MNIST10K_DEFAULT_PATH).resolve(), (Path.cwd() / MNIST10K_DEFAULT_PATH).resolve()]
    for folder in candidates:
        if _find_idx(folder, "t10k-images-idx3-ubyte") is not None:
            return folder
    tried = ", ".join(str(c) for c in candidates)
    raise DatasetUnavailableError(
        f"mnist10k: no t10k-images-idx3-ubyte[.gz] / t10k-labels-idx1-ubyte[.gz] in {tried}; "
        "set data.path to the folder with the MNIST test files"
    )


def _load_mnist10k(config: DataConfig) -> dict:
    """The MNIST test file alone with the fixed split 0-6999 / 7000-7999 / 8000-9999 (file order)."""
    folder = _mnist10k_folder(config)
    test = _binary_idx_pairs(folder, {"t10k": _read_idx_pair(folder, "t10k")})["t10k"]
    return _fixed_split_of_test_file(*test, config.validation_size)


# --------------------------------------------------------------------------------------------------
# .npz (keras.datasets layout) and scikit-learn digits
# --------------------------------------------------------------------------------------------------


def _load_npz(config: DataConfig) -> dict:
    """x_train/x_test (+ optional y_*, x_val/y_val); without x_val the end of train is held out."""
    if not config.path:
        raise DatasetUnavailableError("data.name=npz needs data.path, an .npz file with x_train and x_test")
    path = Path(config.path).expanduser()
    if not path.is_file():
        raise DatasetUnavailableError(f"npz file {path} does not exist (expected arrays x_train, x_test, optional y_*, x_val)")
    with np.load(path, allow_pickle=False) as f:
        arrays = {key: f[key] for key in f.files}
    missing = [key for key in ("x_train", "x_test") if key not in arrays]
    if missing:
        raise ValueError(f"{path}: missing arrays {missing}; found {sorted(arrays)} (keras.datasets layout expected)")
    image_keys = [key for key in ("x_train", "x_val", "x_test") if key in arrays]
    for key in image_keys:
        _check_not_empty(arrays[key], f"{path}: array {key}")
    arrays.update(_binary_as_255({key: arrays[key] for key in image_keys}, str(path)))

    def pair(x_key, y_key):
        images = _to_uint8(arrays[x_key], f"{path} {x_key}")
        return images, _to_labels(arrays.get(y_key), len(images), f"{path} {y_key}")

    train, test = pair("x_train", "y_train"), pair("x_test", "y_test")
    if "x_val" in arrays:
        if config.validation_size is not None:
            raise DataError(f"data.validation_size: {path} has its own x_val; leave validation_size unset")
        return {"train": train, "validation": pair("x_val", "y_val"), "test": test}
    size = config.validation_size if config.validation_size is not None else _default_validation_size(len(train[0]))
    train, validation = _hold_out(*train, size, f"{path} x_train")
    return {"train": train, "validation": validation, "test": test}


def _load_digits(config: DataConfig) -> dict:
    """scikit-learn's bundled 8x8 digits (1,797 real images, 0..16 mapped to round(x*255/16)).

    Shuffled once with RandomState(0) (the file is ordered in writer blocks), then 1,297 / 250 / 250.
    """
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = np.round(digits.images * 255 / 16).astype(np.uint8)[..., None]
    order = np.random.RandomState(0).permutation(len(images))
    images, labels = images[order], digits.target[order].astype(np.int64)
    test_start = len(images) - DIGITS_TEST_SIZE
    size = config.validation_size if config.validation_size is not None else DIGITS_VALIDATION_SIZE
    train, validation = _hold_out(images[:test_start], labels[:test_start], size, "digits")
    return {"train": train, "validation": validation, "test": (images[test_start:], labels[test_start:])}
