"""Generative data augmentation (ByPE section 5.4, Exemplar VAE section 5.4; reference notes 5.4).

An MLP classifier (D -> 1024 -> 1024 -> C, ReLU) is trained on each minibatch of real training images
plus one generated copy of it, each generated image labelled by its source:

    loss = lambda * CE(real) + (1 - lambda) * CE(generated),  lambda = 0.4,

with the generated copy x~ = E[x | z] rounded to the 1/255 grid and z drawn

* `posterior`: z ~ q(z | x), the example's own posterior (the papers' "variational posterior" rows);
* `prior_kernel`: z ~ r(z | x), the prior component centred on the example (`prior.kernel_sample`; the
  papers' "prior" rows, exemplar and ByPE priors only);

and `none` trains on the real minibatch alone. Reference training recipe: SGD with momentum 0.9,
learning rate 0.1 times (1 - 0.99 epoch / epochs) per epoch, label smoothing (0.01 on every class plus 0.9
on the true one = Keras label_smoothing 0.1 for 10 classes), batch 100, unnormalised inputs in [0, 1],
100 epochs; the test error after the last epoch is reported.

Differences from the reference code, all deliberate: float32 instead of float64; the posterior copy uses
each example's own posterior variance (the reference applies the first example's log-variance to the
whole minibatch); Keras SGD folds the learning rate into the momentum buffer (PyTorch applies it after),
which differs only while the per-epoch learning rate changes.
"""

from dataclasses import dataclass

import keras
import numpy as np

from evaluation.common import Skipped, derive_seed, kernel_sample, posterior_sample, predict
from evaluation.progress import progress_bar

MODES = ("none", "posterior", "prior_kernel")


@dataclass
class AugmentationOptions:
    epochs: int = 100
    batch_size: int = 100
    hidden_units: int = 1024
    real_weight: float = 0.4
    """lambda: the weight of the real minibatch in the loss."""
    learning_rate: float = 0.1
    momentum: float = 0.9
    label_smoothing: float = 0.1


def build_classifier(input_dim, num_classes, hidden_units, seed):
    """MLP with PyTorch's default nn.Linear init (weights and biases U(+-1/sqrt(fan_in))), as the reference."""
    layers = [keras.Input((input_dim,))]
    fan_in = input_dim
    for i, units in enumerate((hidden_units, hidden_units, num_classes)):
        bound = 1.0 / np.sqrt(fan_in)
        layers.append(keras.layers.Dense(
            units, activation="relu" if i < 2 else None,
            kernel_initializer=keras.initializers.VarianceScaling(1 / 3, "fan_in", "uniform", seed=derive_seed(seed, i, "w")),
            bias_initializer=keras.initializers.RandomUniform(-bound, bound, seed=derive_seed(seed, i, "b")),
        ))
        fan_in = units
    return keras.Sequential(layers, name="augmentation_classifier")


def rounded(images):
    """Generated images on the 1/255 grid, as the reference writes them."""
    return (np.round(np.clip(images, 0.0, 1.0) * 255.0) / 255.0).astype("float32")


class Generator:
    """The generated copies of training images for one mode (None for `none`)."""

    def __init__(self, mode, model, fns, images, seed):
        self.mode, self.model, self.fns, self.images, self.seed = mode, model, fns, images, seed
        if mode == "posterior":
            self.means, self.log_vars = fns.encode(images)
        elif mode == "prior_kernel":
            kernel_sample(model, images[:2], seed)  # raises Skipped for priors without a kernel
        elif mode != "none":
            raise ValueError(f"augmentation mode '{mode}' is not one of {list(MODES)}")

    def __call__(self, index, epoch):
        if self.mode == "none":
            return None
        if self.mode == "posterior":
            rng = np.random.default_rng(derive_seed(self.seed, "posterior", epoch))
            z = posterior_sample(self.means[index], self.log_vars[index], rng)
        else:
            z = kernel_sample(self.model, self.images[index], derive_seed(self.seed, "kernel", epoch))
        return rounded(self.fns.decode(z))


def train_classifier(generator, train, train_labels, test, test_labels, num_classes, options, seed, verbose=True):
    """Train one classifier with `generator`'s copies; returns {test_error (%), final_loss, ...}."""
    x_train = train.reshape(len(train), -1)
    x_test = test.reshape(len(test), -1)
    b = options.batch_size
    steps = len(train) // b
    if steps == 0:
        raise ValueError(f"augmentation batch size {b} exceeds the {len(train)} training images")
    classifier = build_classifier(x_train.shape[1], num_classes, options.hidden_units, derive_seed(seed, "init"))
    classifier.compile(
        optimizer=keras.optimizers.SGD(options.learning_rate, momentum=options.momentum),
        loss=keras.losses.CategoricalCrossentropy(from_logits=True, label_smoothing=options.label_smoothing),
        metrics=["accuracy"],
    )
    one_hot = np.eye(num_classes, dtype="float32")[train_labels]
    rng = np.random.default_rng(derive_seed(seed, "order"))
    lam = options.real_weight
    progress = progress_bar(options.epochs, unit_name="epoch") if verbose else None
    for epoch in range(options.epochs):
        classifier.optimizer.learning_rate = options.learning_rate * (1 - 0.99 * epoch / options.epochs)
        index = rng.permutation(len(train))[: steps * b]
        x, y, weight = x_train[index], one_hot[index], None
        generated = generator(index, epoch)
        if generated is not None:
            # each batch of 2B: B real images then their B copies; weights 2*lambda and 2*(1 - lambda) turn
            # Keras' mean over 2B examples into lambda * mean CE(real) + (1 - lambda) * mean CE(generated)
            x = np.concatenate([x.reshape(steps, b, -1), generated.reshape(steps, b, -1)], axis=1).reshape(2 * steps * b, -1)
            y = np.concatenate([y.reshape(steps, b, -1), y.reshape(steps, b, -1)], axis=1).reshape(2 * steps * b, -1)
            weight = np.tile(np.repeat(np.array([2 * lam, 2 * (1 - lam)], "float32"), b), steps)
        history = classifier.fit(x, y, sample_weight=weight, batch_size=len(x) // steps, epochs=1,
                                 shuffle=False, verbose=0)
        loss = float(history.history["loss"][-1])
        if not np.isfinite(loss):
            raise FloatingPointError(f"augmentation classifier loss is {loss} at epoch {epoch + 1}")
        if progress is not None:
            progress.update(epoch + 1, [("loss", loss)])
    logits = predict(classifier, x_test, 500)
    accuracy = float(np.mean(np.argmax(logits, axis=1) == test_labels))
    return {"test_error": 100.0 * (1.0 - accuracy), "test_accuracy": accuracy, "final_loss": loss}


def augmentation(model, fns, data, options, seed, modes=MODES, verbose=True):
    """Test error (%) of the classifier per mode; modes a prior cannot do are listed under `skipped`."""
    data.require_labels("generative data augmentation")
    results, skipped = {}, {}
    for mode in modes:
        try:
            generator = Generator(mode, model, fns, data.train, derive_seed(seed, mode))
        except Skipped as reason:
            skipped[mode] = str(reason)
            continue
        if verbose:
            print(f"augmentation: {mode}")
        # the same initial weights and minibatch order for every mode: a paired comparison
        results[mode] = train_classifier(generator, data.train, data.train_labels, data.test, data.test_labels,
                                         data.num_classes, options, seed, verbose)
    return {
        **results,
        "skipped": skipped,
        "protocol": {
            "epochs": options.epochs, "batch_size": options.batch_size, "hidden_units": options.hidden_units,
            "lambda": options.real_weight, "optimizer": f"SGD(lr={options.learning_rate}, momentum={options.momentum}), "
            "lr x (1 - 0.99 epoch / epochs)", "label_smoothing": options.label_smoothing,
            "train_images": int(len(data.train)), "test_images": int(len(data.test)),
        },
    }
