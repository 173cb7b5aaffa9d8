"""The images the representation and sample-quality metrics see.

The density metrics use the splits exactly as training prepared them (validation and test binarised once
for binary data). Following the reference analysis code, the other metrics use *intensities*: kNN
references and queries, the augmentation classifier's real images and the real side of the Frechet
distance are never binarised (x / 255 for binarised data, the model's own continuous values otherwise).
"""

import dataclasses
from dataclasses import dataclass

import numpy as np

from evaluation.common import Skipped
from training import data as data_lib


@dataclass
class EvaluationData:
    """Intensity images [N, H, W, C] in [0, 1] of the three splits, their labels (or None), and
    `model_test`, the test split as the density evaluation sees it."""

    train: np.ndarray
    validation: np.ndarray
    test: np.ndarray
    train_labels: np.ndarray | None
    validation_labels: np.ndarray | None
    test_labels: np.ndarray | None
    model_test: np.ndarray
    name: str
    preprocessing: str

    @property
    def has_labels(self):
        return all(y is not None for y in (self.train_labels, self.validation_labels, self.test_labels))

    @property
    def num_classes(self):
        return int(max(y.max() for y in (self.train_labels, self.validation_labels, self.test_labels))) + 1

    def require_labels(self, what):
        if not self.has_labels:
            raise Skipped(f"{what} needs class labels and data.name={self.name} provides none")

    def pixels(self, images):
        """The uint8 pixels behind intensity images (exact for both preprocessing modes)."""
        scale = 255.0 if self.preprocessing == "dynamic_binarization" else 256.0
        offset = 0.0 if self.preprocessing == "dynamic_binarization" else 0.5
        return np.clip(np.round(images * scale - offset), 0, 255).astype("uint8")


def evaluation_data(data_config, splits):
    """`EvaluationData` for a run: for binarised data the validation and test intensities are recovered
    exactly from a continuous load ((x + 0.5) / 256 -> x) of the same files."""
    if splits.preprocessing == "continuous":
        train, validation, test = splits.train, splits.validation, splits.test
    else:
        grey = data_lib.load_splits(dataclasses.replace(data_config, preprocessing="continuous"))
        train, validation, test = (
            (np.round(x * np.float32(256) - np.float32(0.5)) / np.float32(255)).astype("float32")
            for x in (grey.train, grey.validation, grey.test)
        )
        if not np.array_equal(train, splits.train):
            raise RuntimeError("the intensity view of the training split does not match the training images; "
                               "training/data.py changed its preprocessing without evaluation/data.py")
    return EvaluationData(
        train=train, validation=validation, test=test,
        train_labels=splits.train_labels, validation_labels=splits.validation_labels,
        test_labels=splits.test_labels, model_test=splits.test, name=splits.name,
        preprocessing=splits.preprocessing,
    )
