"""The small CNN whose penultimate features measure sample quality of grey images.

InceptionV3 features (FID proper) are an ImageNet RGB model; for grey datasets (MNIST-like 28x28) the
papers' peers use a classifier trained on the dataset itself. This one is trained once per training
split and reused: it is identified by a fingerprint of the split's pixels and labels and of the training
recipe, looked up first in `evaluation/assets/` (shipped: the mnist10k one) and then in a cache folder
(`$VAE_ZOO_CACHE` or ~/.cache/vae_prior_zoo), and trained and cached when absent.

    python -m evaluation.classifier --data mnist10k --out evaluation/assets    # (re)build a shipped one

Architecture: resize to 28x28, conv 3x3 32 -> max-pool -> conv 3x3 64 -> max-pool -> conv 3x3 64 ->
dense 128 (ReLU, the features) -> dense C (logits); Adam 1e-3, batch 128.
"""

import argparse
import hashlib
import json
import os
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import keras
import numpy as np

from evaluation.common import derive_seed, predict
from zoo import atomic

VERSION = "grey-cnn-v1"
IMAGE_SIZE = 28
FEATURES = 128
ASSETS = Path(__file__).parent / "assets"


@dataclass
class Recipe:
    epochs: int = 8
    batch_size: int = 128
    learning_rate: float = 1e-3
    seed: int = 0


def default_cache_dir():
    return Path(os.environ.get("VAE_ZOO_CACHE", Path.home() / ".cache" / "vae_prior_zoo")) / "classifiers"


def build_classifier(image_shape, num_classes, seed=0):
    def init(i):
        return keras.initializers.GlorotUniform(seed=derive_seed(seed, VERSION, i))

    return keras.Sequential([
        keras.Input(tuple(image_shape)),
        keras.layers.Resizing(IMAGE_SIZE, IMAGE_SIZE, interpolation="bilinear"),
        keras.layers.Conv2D(32, 3, activation="relu", kernel_initializer=init(0)),
        keras.layers.MaxPooling2D(2),
        keras.layers.Conv2D(64, 3, activation="relu", kernel_initializer=init(1)),
        keras.layers.MaxPooling2D(2),
        keras.layers.Conv2D(64, 3, activation="relu", kernel_initializer=init(2)),
        keras.layers.Flatten(),
        keras.layers.Dense(FEATURES, activation="relu", kernel_initializer=init(3), name="features"),
        keras.layers.Dense(num_classes, kernel_initializer=init(4), name="logits"),
    ], name="feature_classifier")


def fingerprint(pixels, labels, recipe):
    """sha256 of the training pixels (uint8), labels, architecture version and recipe."""
    digest = hashlib.sha256()
    digest.update(np.ascontiguousarray(pixels, dtype="uint8").tobytes())
    digest.update(np.ascontiguousarray(labels, dtype="int64").tobytes())
    digest.update(json.dumps({"version": VERSION, **asdict(recipe)}, sort_keys=True).encode())
    return digest.hexdigest()


def train_classifier(images, labels, num_classes, recipe, verbose=True):
    """Fit the CNN on (images, labels); minibatch order from NumPy, so it is deterministic given the seed."""
    model = build_classifier(images.shape[1:], num_classes, recipe.seed)
    model.compile(optimizer=keras.optimizers.Adam(recipe.learning_rate),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    rng = np.random.default_rng(recipe.seed)
    batch = min(recipe.batch_size, len(images))
    for epoch in range(recipe.epochs):
        order = rng.permutation(len(images))[: len(images) // batch * batch]  # whole batches: one compiled shape
        history = model.fit(images[order], labels[order], batch_size=batch, epochs=1, shuffle=False, verbose=0)
        if verbose:
            print(f"feature classifier epoch {epoch + 1}/{recipe.epochs}: loss {history.history['loss'][-1]:.4f}, "
                  f"accuracy {history.history['accuracy'][-1]:.4f}")
    return model


def accuracy(model, images, labels):
    return float(np.mean(np.argmax(predict(model, images, 500), axis=1) == labels))


def classifier_key(data, recipe):
    return f"{data.name}-{VERSION}-{fingerprint(data.pixels(data.train), data.train_labels, recipe)[:16]}"


def fit_and_describe(data, recipe, verbose=True):
    """Train on `data`'s training split; the description records the recipe and the test accuracy."""
    model = train_classifier(data.train, data.train_labels, data.num_classes, recipe, verbose)
    info = {
        "key": classifier_key(data, recipe), "version": VERSION, "dataset": data.name,
        "train_images": int(len(data.train)), "recipe": asdict(recipe),
        "test_accuracy": accuracy(model, data.test, data.test_labels), "backend": keras.backend.backend(),
        "features": f"{FEATURES}-d ReLU layer before the logits",
    }
    return model, info


def load_or_train(data, cache_dir=None, recipe=None, verbose=True):
    """The feature classifier of `data`'s training split and its description (where it came from, test accuracy)."""
    data.require_labels("the feature classifier")
    if data.train.shape[-1] != 1:
        raise ValueError(f"the feature classifier is for grey images; {data.name} has {data.train.shape[-1]} channels")
    recipe = recipe or Recipe()
    key = classifier_key(data, recipe)
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    for folder, source in ((ASSETS, "shipped"), (cache_dir, "cache")):
        weights = folder / f"{key}.weights.h5"
        if weights.exists():
            model = build_classifier(data.train.shape[1:], data.num_classes, recipe.seed)
            model.load_weights(weights)
            info = json.loads((folder / f"{key}.json").read_text())
            return model, {**info, "source": source, "weights": str(weights)}
    if verbose:
        print(f"training the feature classifier {key} on {len(data.train)} {data.name} training images")
    model, info = fit_and_describe(data, recipe, verbose)
    save(model, info, cache_dir)
    return model, {**info, "source": "trained now", "weights": str(cache_dir / f"{key}.weights.h5")}


def save(model, info, folder):
    """KEY.weights.h5 (the network only: a compiled model's file would also hold the Adam slots) and KEY.json."""
    folder = Path(folder)
    bare = build_classifier(model.input_shape[1:], model.output_shape[-1])
    bare.set_weights(model.get_weights())
    with atomic.write_file(folder / f"{info['key']}.weights.h5") as tmp:
        bare.save_weights(tmp)
    atomic.write_text(folder / f"{info['key']}.json", json.dumps(info, indent=2) + "\n")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="mnist10k", help="data.name of the training split (e.g. mnist10k)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="other data.* settings")
    parser.add_argument("--out", type=Path, default=ASSETS, help="folder to write KEY.weights.h5 and KEY.json")
    parser.add_argument("--epochs", type=int, default=Recipe.epochs)
    args = parser.parse_args(argv)
    from evaluation.data import evaluation_data
    from training import config as config_lib, data as data_lib

    config = config_lib.from_dict(config_lib.apply_overrides({"data": {"name": args.data}}, args.set))
    splits = data_lib.load_splits(config.data)
    data = evaluation_data(config.data, splits)
    model, info = fit_and_describe(data, Recipe(epochs=args.epochs))
    info["command"] = "python -m evaluation.classifier " + " ".join(argv if argv is not None else sys.argv[1:])
    save(model, info, args.out)
    print(json.dumps(info, indent=2))


if __name__ == "__main__":
    sys.exit(main())
