"""The pull-back prior's part of `fit`: log Z follows the model while it trains.

The prior's density evaluates with a stored log Z (`PullBackPrior.log_z`). Before every validation pass
(`on_test_begin`: Keras validates after the epoch's steps, before `on_epoch_end`) it is re-estimated from
the q-proposal with one z ~ q(z | e) per training image, so the validation loss, and the best weights saved
after it, carry the normaliser of the current encoder, decoder and critic. After training, `fit` freezes it
with more samples (`PullBackPrior.finish_training`).
"""

import keras

from layers.priors.pull_back import PullBackPrior
from training.procedures.base import prior_callbacks


@prior_callbacks(PullBackPrior)
def pull_back_callbacks(model, splits, train_config):
    return [LogNormalizerRefresh(model.prior, splits.train)]


class LogNormalizerRefresh(keras.callbacks.Callback):
    def __init__(self, prior, train_images):
        super().__init__()
        self.prior = prior
        self.train_images = train_images
        self.epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_test_begin(self, logs=None):
        self.prior.follow_training_set(self.train_images, seed=self.epoch)
