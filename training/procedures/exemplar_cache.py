"""The exemplar prior's part of `fit`: training images on the device and a cache that is always fresh.

Keras runs validation inside the epoch, after the training steps and before `on_epoch_end`, so the cache
of all N exemplar means is refreshed in `on_test_begin`: every validation pass (and the best weights
saved after it) uses the means of the current encoder. In retrieval mode the training steps also read
the cache (kNN candidates), so it must be fresh when an epoch begins; the refresh before the previous
validation already is, except at the start of training or after a resume, when it is refreshed again.
On JAX, variables assigned in these hooks are picked up by the trainer (it re-reads the model state
after `on_epoch_begin` and `on_test_begin`).
"""

import keras

from layers.priors.exemplar import ExemplarPrior
from training.procedures.base import prior_callbacks


@prior_callbacks(ExemplarPrior)
def exemplar_callbacks(model, splits, train_config):
    return [ExemplarCacheRefresh(model.prior, splits.train)]


class ExemplarCacheRefresh(keras.callbacks.Callback):
    """Attach the training images to the prior (now, before `fit` compiles its steps) and refresh its
    cache of exemplar means before each validation pass and, in retrieval mode, before training."""

    def __init__(self, prior, train_images):
        super().__init__()
        self.prior = prior
        self.train_images = train_images
        self.fresh = False
        prior.attach_training_images(train_images)

    def refresh(self):
        self.prior.refresh_cache(self.train_images)
        self.fresh = True

    def on_train_begin(self, logs=None):
        self.fresh = False  # a resumed run re-encodes rather than trust the restored cache

    def on_epoch_begin(self, epoch, logs=None):
        if self.prior.mode == "retrieval" and not self.fresh:
            self.refresh()
        self.fresh = False  # the training steps change the encoder

    def on_test_begin(self, logs=None):
        self.refresh()
