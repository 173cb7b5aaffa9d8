"""The computations a SavedModel serves, written once in `keras.ops` over the model's common interface.

Every function takes tensors only. A request's sample count arrives as a scalar, but JAX needs shapes at
trace time, so here it is the length of a `count` vector (a symbolic dimension under jax2tf); the
TensorFlow wrappers in `exports.saved_model` turn the scalar into that vector after validating it.
Randomness comes from the request's `seed` (`exports.seeds`), never from model state.

`reference(model, name, **inputs)` runs the same functions eagerly on any backend with the signature's
own inputs: what the exported signature must reproduce.
"""

from keras import ops

from exports.interface import SIGNATURES  # noqa: F401 (the table lives where the client reads it)
from exports.seeds import seeded


def signature_names(model):
    """The signatures `model` gets: `sample_component` only for priors with mixture components."""
    return [name for name in SIGNATURES if name != "sample_component" or model.prior.num_components > 0]


class ServingFunctions:
    """Backend functions behind each signature (see module docstring for `count`)."""

    def __init__(self, model):
        self.model = model

    def sample(self, count, seed):
        with seeded(self.model, seed) as rng:
            return {"images": self.model.sample(ops.shape(count)[0], seed=rng)}

    def sample_component(self, component, count, seed):
        with seeded(self.model, seed) as rng:
            z = self.model.prior.component_sample(component, ops.shape(count)[0], seed=rng)
            return {"images": self.model.decode(z, seed=rng)}

    def encode(self, images):
        mean, log_var = self.model.encode(images)
        return {"mean": mean, "log_var": log_var}

    def decode(self, z, seed):
        with seeded(self.model, seed) as rng:
            return {"images": self.model.decode(z, seed=rng)}

    def reconstruct(self, images, seed):
        """Decoded posterior means; `seed` drives the pixel draws of an autoregressive decoder (others ignore it)."""
        with seeded(self.model, seed) as rng:
            return {"images": self.model.reconstruct(images, seed=rng)}

    def log_likelihood(self, images, count, seed):
        """The model's IWAE estimate log (1/S) sum_s p(x, z_s) / q(z_s | x), S = len(count), per image."""
        with seeded(self.model, seed):
            return {"log_likelihood": self.model.log_likelihood_estimate(images, ops.shape(count)[0])}


def core_inputs(name, inputs):
    """Map a signature's inputs (num_samples as a scalar) to the backend function's arguments."""
    args = []
    for key in SIGNATURES[name][0]:
        value = inputs[key]
        if key == "num_samples":
            args.append(ops.zeros((int(value),), dtype="float32"))
        elif key in ("seed", "component"):
            args.append(ops.convert_to_tensor(value, dtype="int32"))
        else:
            args.append(ops.convert_to_tensor(value, dtype="float32"))
    return args


def reference(model, name, **inputs):
    """What signature `name` returns for `inputs`, computed eagerly by the Keras model (any backend)."""
    outputs = getattr(ServingFunctions(model), name)(*core_inputs(name, inputs))
    return {key: ops.convert_to_numpy(value) for key, value in outputs.items()}

