"""Export a training run or a preset as a TF Serving SavedModel, written atomically.

    python -m exports.saved_model RUN_DIR_OR_PRESET EXPORT_BASE [--version N] [--model-name NAME]
                                  [--max-samples 1024] [--max-batch 1024] [--max-pairs P]

writes EXPORT_BASE/<model_name>/<version>/ (saved_model.pb, variables/, assets.extra/) by building it in a
hidden temporary folder beside it and renaming it into place, so a TF Serving process watching EXPORT_BASE/
<model_name> never sees a half-written version. The version defaults to the highest existing one + 1;
an existing version is never overwritten.

Signatures (batch-first outputs, float32 / int32 only, nothing captured but the model's variables):
  sample(num_samples, seed) -> images              also `serving_default`; z ~ p(z) from the prior, x = E[x|z]
                                                   (PixelCNN decoders: x ~ p(x|z), drawn pixel by pixel in-graph)
  sample_component(component, num_samples, seed)   only for priors with mixture components
  encode(images) -> mean, log_var                  q(z|x) of the top latent
  decode(z, seed) -> images                        E[x|z] (hierarchical models draw z1 ~ p(z1|z2) with `seed`)
  reconstruct(images, seed) -> images              decoded posterior means (`seed`: pixel draws of a PixelCNN)
  log_likelihood(images, num_samples, seed) -> log_likelihood   IWAE estimate of log p(x), nats per image
The same seed gives the same output; the graph checks every request first and answers a bad one with
INVALID_ARGUMENT and a message that names the problem (counts outside [1, cap], image or latent shape,
pixel range, component index). assets.extra/tf_serving_warmup_requests holds PredictionLog records for
every signature, and assets.extra/export.json documents the export.

Backends: TensorFlow traces the model directly; JAX converts each computation with jax2tf (StableHLO for
CPU and CUDA) inside the same validating TensorFlow wrappers. Keras's PyTorch export supports only
`model.__call__` through torch_xla, so under PyTorch this command re-runs itself with KERAS_BACKEND=tensorflow
(the weights are backend-independent).
"""

import argparse
import json
import os
import re
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

if __name__ == "__main__":  # a quiet start: TensorFlow's start-up lines silenced before the first import
    from training import cli

    cli.import_backend("--verbose" in sys.argv or "--debug" in sys.argv)

import keras  # noqa: E402
import numpy as np

from exports.signatures import SIGNATURES, ServingFunctions, signature_names
from zoo import atomic

WARMUP_FILE = "tf_serving_warmup_requests"
EXPORT_INFO_FILE = "export.json"


@dataclass
class Limits:
    """Request caps compiled into the graph (requests above them fail with INVALID_ARGUMENT)."""

    max_samples: int = 1024
    """num_samples of sample / sample_component."""
    max_batch: int = 1024
    """Images or latents per request of encode / decode / reconstruct / log_likelihood."""
    max_pairs: int = 50000
    """log_likelihood: images x num_samples per request (bounds memory like evaluate.max_batch)."""


class ExportError(RuntimeError):
    """The export cannot be written (backend, existing version, bad source)."""


# --------------------------------------------------------------------------------------------------
# Sources: a run directory or a preset
# --------------------------------------------------------------------------------------------------


def load_source(source, sha256=None):
    """(model, info) for a run directory (config.yaml + weights) or a preset name / folder / URL (+ sha256)."""
    path = Path(str(source)).expanduser()
    if path.is_dir() and (path / "config.yaml").exists() and not (path / "metadata.json").exists():
        from training import config as config_lib
        from training.checkpoints import load_run_model

        config = config_lib.load(path / "config.yaml")
        model = load_run_model(path)  # from the run's config.json: no dataset is loaded
        metrics_file = path / "metrics.json"
        info = {"source": "run", "path": str(path.resolve()), "name": config.name,
                "metrics": json.loads(metrics_file.read_text()) if metrics_file.exists() else None,
                "evaluate_max_batch": config.evaluate.max_batch}
        return model, info
    from zoo.presets import load_preset

    from training import config as config_lib

    preset = load_preset(source, sha256=sha256)
    recipe = config_lib.load(preset.path / "config.yaml")
    info = {"source": "preset", "path": str(preset.path), "name": preset.name, "metrics": preset.metadata["metrics"],
            "evaluate_max_batch": recipe.evaluate.max_batch}
    return preset.model, info


def serving_name(name):
    """A TF Serving model name (letters, digits, '_', '-')."""
    cleaned = re.sub(r"[^A-Za-z0-9_-]+", "_", name).strip("_")
    if not cleaned:
        raise ExportError(f"cannot derive a model name from {name!r}; pass --model-name")
    return cleaned


# --------------------------------------------------------------------------------------------------
# The archive: backend computations wrapped in validating TensorFlow signatures
# --------------------------------------------------------------------------------------------------


def _core_specs(model):
    """Input specs and jax2tf polymorphic shapes of each backend computation (see exports.signatures)."""
    import tensorflow as tf

    h, w, c = model.image_shape
    latent = model.latent_dim
    images = (tf.TensorSpec([None, h, w, c], tf.float32), f"(b, {h}, {w}, {c})")
    z = (tf.TensorSpec([None, latent], tf.float32), f"(b, {latent})")
    seed = (tf.TensorSpec([], tf.int32), "()")
    specs = {
        "sample": [(tf.TensorSpec([None], tf.float32), "(n,)"), seed],
        "sample_component": [(tf.TensorSpec([], tf.int32), "()"), (tf.TensorSpec([None], tf.float32), "(n,)"), seed],
        "encode": [images],
        "decode": [z, seed],
        "reconstruct": [images, seed],
        "log_likelihood": [images, (tf.TensorSpec([None], tf.float32), "(s,)"), seed],
    }
    return {name: ([s for s, _ in v], [p for _, p in v]) for name, v in specs.items()}


def _compiled_cores(archive, model, platforms):
    """Each computation as a `tf.function`: traced directly on TensorFlow, converted with jax2tf on JAX.

    This is the step `ExportArchive.add_endpoint` performs (its `_backend_add_endpoint`); it is called
    directly so that the cores stay internal and only the validating wrappers become signatures."""
    functions = ServingFunctions(model)
    cores = {}
    for name, (specs, poly) in _core_specs(model).items():
        if name not in signature_names(model):
            continue
        kwargs = {}
        if keras.backend.backend() == "jax":
            kwargs["jax2tf_kwargs"] = {"polymorphic_shapes": poly, "with_gradient": False,
                                       "native_serialization_platforms": tuple(platforms)}
        cores[name] = archive._backend_add_endpoint(name, getattr(functions, name), specs, **kwargs)
    return cores


def _signatures(model, cores, limits):
    """The validating TensorFlow wrappers, one `tf.function` per signature, in SIGNATURES order."""
    import tensorflow as tf

    h, w, c = model.image_shape
    latent = model.latent_dim
    k = model.prior.num_components

    def count(num_samples, cap, flag):
        checks = [
            tf.debugging.assert_greater_equal(num_samples, 1, message="num_samples must be >= 1"),
            tf.debugging.assert_less_equal(
                num_samples, cap, message=f"num_samples must be <= {cap} (the cap set at export with {flag})"),
        ]
        with tf.control_dependencies(checks):
            return tf.zeros(tf.reshape(num_samples, [1]), tf.float32)

    def batch_checks(x, what):
        size = tf.shape(x)[0]
        return [
            tf.debugging.assert_greater_equal(size, 1, message=f"{what}: empty batch; send at least one"),
            tf.debugging.assert_less_equal(
                size, limits.max_batch,
                message=f"{what}: at most {limits.max_batch} per request (the cap set at export with --max-batch)"),
        ]

    def shape_is(x, dims):
        """True when x has shape [batch, *dims], for x of any rank (padding keeps the comparison valid)."""
        shape = tf.shape(x)
        padded = tf.concat([shape, tf.zeros([len(dims) + 1], tf.int32)], 0)[1:len(dims) + 1]
        return tf.logical_and(tf.equal(tf.size(shape), len(dims) + 1), tf.reduce_all(tf.equal(padded, dims)))

    def checked_images(images):
        shape_ok = tf.debugging.Assert(
            shape_is(images, [h, w, c]),
            [f"images must have shape [batch, {h}, {w}, {c}] (this model's image shape); got shape", tf.shape(images)],
            summarize=8)
        with tf.control_dependencies([shape_ok]):
            in_range = tf.debugging.Assert(
                tf.reduce_all(tf.logical_and(images >= 0.0, images <= 1.0)),
                ["images must be finite pixel intensities in [0, 1] (divide 8-bit images by 255)"])
            checks = [in_range, *batch_checks(images, "images")]
        with tf.control_dependencies(checks):
            return tf.ensure_shape(tf.identity(images), [None, h, w, c])

    def checked_z(z):
        shape_ok = tf.debugging.Assert(
            shape_is(z, [latent]), [f"z must have shape [batch, {latent}] (the latent size); got shape", tf.shape(z)],
            summarize=8)
        with tf.control_dependencies([shape_ok]):
            finite = tf.debugging.Assert(tf.reduce_all(tf.math.is_finite(z)), ["z must be finite"])
            checks = [finite, *batch_checks(z, "z")]
        with tf.control_dependencies(checks):
            return tf.ensure_shape(tf.identity(z), [None, latent])

    scalar = tf.TensorSpec([], tf.int32)
    # Shapes are declared unknown and checked in the graph: TF Serving does not enforce a signature's shapes,
    # and a declared rank would let TensorFlow fold the rank check away.
    image_spec = tf.TensorSpec(None, tf.float32)

    @tf.function(input_signature=[scalar, scalar], autograph=False)
    def sample(num_samples, seed):
        return cores["sample"](count(num_samples, limits.max_samples, "--max-samples"), seed)

    @tf.function(input_signature=[scalar, scalar, scalar], autograph=False)
    def sample_component(component, num_samples, seed):
        in_range = tf.debugging.Assert(
            tf.logical_and(component >= 0, component < k),
            [f"component must be in [0, {k - 1}] (the prior has {k} components); got", component])
        with tf.control_dependencies([in_range]):
            component = tf.identity(component)
        return cores["sample_component"](component, count(num_samples, limits.max_samples, "--max-samples"), seed)

    @tf.function(input_signature=[image_spec], autograph=False)
    def encode(images):
        return cores["encode"](checked_images(images))

    @tf.function(input_signature=[tf.TensorSpec(None, tf.float32), scalar], autograph=False)
    def decode(z, seed):
        return cores["decode"](checked_z(z), seed)

    @tf.function(input_signature=[image_spec, scalar], autograph=False)
    def reconstruct(images, seed):
        return cores["reconstruct"](checked_images(images), seed)

    @tf.function(input_signature=[image_spec, scalar, scalar], autograph=False)
    def log_likelihood(images, num_samples, seed):
        images = checked_images(images)
        pairs = tf.cast(tf.shape(images)[0], tf.int64) * tf.cast(num_samples, tf.int64)
        pairs_ok = tf.debugging.assert_less_equal(
            pairs, tf.constant(limits.max_pairs, tf.int64),
            message=f"images x num_samples must be <= {limits.max_pairs} per request (the cap set at export with "
                    "--max-pairs); send fewer images per request")
        with tf.control_dependencies([pairs_ok]):
            template = count(num_samples, limits.max_pairs, "--max-pairs")
        return cores["log_likelihood"](images, template, seed)

    wrappers = {"sample": sample, "sample_component": sample_component, "encode": encode, "decode": decode,
                "reconstruct": reconstruct, "log_likelihood": log_likelihood}
    return {name: wrappers[name] for name in signature_names(model)}


def build_archive(model, limits, platforms=("cpu", "cuda")):
    """A `keras.export.ExportArchive` holding every signature of `model` (TensorFlow or JAX backend)."""
    backend = keras.backend.backend()
    if backend not in ("tensorflow", "jax"):
        raise ExportError(
            f"SavedModel export needs the TensorFlow or JAX backend, this process runs {backend}: Keras's PyTorch "
            "export traces only model.__call__ through torch_xla. Run `python -m exports.saved_model` (it re-runs "
            "itself under TensorFlow) or set KERAS_BACKEND=tensorflow; the weights load on any backend."
        )
    archive = keras.export.ExportArchive()
    archive.track(model)
    cores = _compiled_cores(archive, model, platforms)
    for name, fn in _signatures(model, cores, limits).items():
        fn.get_concrete_function()  # trace once, so add_endpoint takes it as a ready tf.function
        archive.add_endpoint(name, fn)  # the first one ("sample") also becomes serving_default
    return archive


# --------------------------------------------------------------------------------------------------
# Writing EXPORT_BASE/<model_name>/<version>/
# --------------------------------------------------------------------------------------------------


def next_version(model_dir):
    versions = [int(p.name) for p in Path(model_dir).glob("*") if p.is_dir() and p.name.isdigit()]
    return max(versions, default=0) + 1


def export_info(model, model_name, version, limits, info):
    """assets.extra/export.json: what a client needs to know about this export."""
    signatures = {name: {"inputs": list(SIGNATURES[name][0]), "outputs": list(SIGNATURES[name][1])}
                  for name in signature_names(model)}
    signatures["serving_default"] = signatures["sample"]
    return {
        "model_name": model_name,
        "version": version,
        "backend": keras.backend.backend(),
        "keras_version": keras.__version__,
        "image_shape": list(model.image_shape),
        "latent_dim": model.latent_dim,
        "prior": type(model.prior).__name__,
        "num_components": model.prior.num_components,
        "limits": asdict(limits),
        "signatures": signatures,
        "source": info or {},
    }


def export(model, export_base, model_name, version=None, limits=None, info=None, platforms=("cpu", "cuda"),
           verbose=False):
    """Write the SavedModel of `model` to EXPORT_BASE/<model_name>/<version>/ atomically; return that folder."""
    from exports.warmup import warmup_requests, write_warmup

    limits = limits or Limits()
    model_dir = Path(export_base) / model_name
    version = next_version(model_dir) if version is None else int(version)
    if version < 1:
        raise ExportError(f"--version must be a positive integer (TF Serving version folders), got {version}")
    target = model_dir / str(version)
    if target.exists():
        raise ExportError(f"{target} already exists; TF Serving versions are immutable: pass --version "
                          f"{next_version(model_dir)} (the next free one) or remove the old version first")
    archive = build_archive(model, limits, platforms)
    with atomic.write_dir(target) as tmp:  # hidden '.<version>.tmp-*' folder: not a version to TF Serving
        os.chmod(tmp, 0o755)
        saved = tmp / "saved"  # write_out wants a fresh folder; move its contents up afterwards
        archive.write_out(str(saved), verbose=verbose)
        for item in saved.iterdir():
            item.rename(tmp / item.name)
        saved.rmdir()
        extra = tmp / "assets.extra"
        extra.mkdir(exist_ok=True)
        write_warmup(extra / WARMUP_FILE, model_name, warmup_requests(model, limits))
        (extra / EXPORT_INFO_FILE).write_text(json.dumps(export_info(model, model_name, version, limits, info),
                                                         indent=2, default=str) + "\n")
        _smoke_test(tmp, model)
    return target


def _smoke_test(folder, model):
    """Load the written SavedModel and draw one sample before it is renamed into place."""
    import tensorflow as tf

    loaded = tf.saved_model.load(str(folder))
    images = loaded.signatures["sample"](num_samples=tf.constant(1), seed=tf.constant(0))["images"]
    if tuple(images.shape) != (1, *model.image_shape) or not np.all(np.isfinite(images.numpy())):
        raise ExportError(f"the exported sample signature returned {images.shape} / non-finite values; not published")


def _rerun_under_tensorflow(argv):
    """PyTorch backend: the same command in a TensorFlow-backend subprocess (weights are backend-independent)."""
    print("exports.saved_model: Keras cannot export these signatures from PyTorch (torch_xla, __call__ only); "
          "re-running with KERAS_BACKEND=tensorflow", file=sys.stderr)
    env = {**os.environ, "KERAS_BACKEND": "tensorflow"}
    return subprocess.call([sys.executable, "-m", "exports.saved_model", *argv], env=env)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", help="run directory, preset name, preset folder, or preset URL (with --sha256)")
    parser.add_argument("export_base", type=Path, help="TF Serving base folder; writes EXPORT_BASE/<model_name>/<version>/")
    parser.add_argument("--version", type=int, help="version folder (default: highest existing + 1)")
    parser.add_argument("--model-name", help="default: the run's config name or the preset name")
    parser.add_argument("--sha256", help="checksum of a preset archive given as a URL")
    parser.add_argument("--max-samples", type=int, default=Limits.max_samples, help="cap of num_samples (sample)")
    parser.add_argument("--max-batch", type=int, default=Limits.max_batch, help="cap of images / latents per request")
    parser.add_argument("--max-pairs", type=int, help="cap of images x num_samples (log_likelihood; default: "
                        "the config's evaluate.max_batch)")
    parser.add_argument("--platforms", default="cpu,cuda", help="JAX backend: platforms of the compiled graphs")
    args = parser.parse_args(argv)
    for flag in ("max_samples", "max_batch", "max_pairs"):
        value = getattr(args, flag)
        if value is not None and value < 1:
            parser.error(f"--{flag.replace('_', '-')} must be >= 1, got {value}")
    if keras.backend.backend() == "torch":
        return _rerun_under_tensorflow(argv)

    model, info = load_source(args.source, sha256=args.sha256)
    limits = Limits(max_samples=args.max_samples, max_batch=args.max_batch,
                    max_pairs=args.max_pairs or info["evaluate_max_batch"])
    model_name = serving_name(args.model_name or info["name"])
    try:
        target = export(model, args.export_base, model_name, args.version, limits, info,
                        platforms=tuple(p for p in args.platforms.split(",") if p))
    except ExportError as error:
        parser.exit(2, f"error: {error}\n")
    print(f"exported {info['source']} {info['name']} as model '{model_name}' version {target.name}: {target}")
    return 0


if __name__ == "__main__":
    sys.exit(cli.run(main))
