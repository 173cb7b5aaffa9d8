"""What a client knows of the served signatures: names, inputs, outputs and the bounds of the scalar inputs.

Keras-free (standard library only), so `python -m exports.client` starts in a fraction of a second; the
export (`exports.signatures`, `exports.saved_model`) uses the same table. The caps chosen at export time
(--max-samples, --max-pairs) and the number of mixture components are known only to the server, which
refuses requests above them with INVALID_ARGUMENT.
"""

from layers.errors import UserError

# name -> (inputs, outputs) as documented to users; the first entry is also `serving_default`.
SIGNATURES = {
    "sample": (("num_samples", "seed"), ("images",)),
    "sample_component": (("component", "num_samples", "seed"), ("images",)),
    "encode": (("images",), ("mean", "log_var")),
    "decode": (("z", "seed"), ("images",)),
    "reconstruct": (("images", "seed"), ("images",)),
    "log_likelihood": (("images", "num_samples", "seed"), ("log_likelihood",)),
}

INT32_MIN, INT32_MAX = -2**31, 2**31 - 1
# The scalar inputs travel as int32; the lowest value each accepts.
SCALAR_MINIMUM = {"num_samples": 1, "component": 0, "seed": INT32_MIN}


class RequestError(UserError):
    """A request the server would refuse, caught before sending it."""


def check_scalars(inputs):
    """Raise `RequestError` for a scalar input outside its bounds (int32, num_samples >= 1, component >= 0)."""
    for key, value in inputs.items():
        if key not in SCALAR_MINIMUM:
            continue
        low = SCALAR_MINIMUM[key]
        if not low <= int(value) <= INT32_MAX:
            raise RequestError(f"{key}={value} is out of bounds: give an integer in [{low}, {INT32_MAX}] "
                               f"(--{key.replace('_', '-')})")
