"""TF Serving warmup records (assets.extra/tf_serving_warmup_requests).

TF Serving replays these PredictionLog TFRecords when it loads a version, before it reports the version
available, so the first user request does not pay for graph optimisation, and on a GPU server for the
compilation of the sampling graph (jax2tf exports compile per input shape: the common sample sizes are
listed). One request per signature, and `sample` at batch sizes 1, 16 and 256 (within the caps); 1 and 16
for PixelCNN decoders, whose H * W-step sampling loop would hold a CPU server's load for minutes at 256
(the loop is compiled once per batch size either way).
"""

import numpy as np

from exports.signatures import signature_names


def warmup_requests(model, limits):
    """[(signature, inputs)] that exercise every signature with valid inputs."""
    images = np.zeros((1, *model.image_shape), dtype=np.float32)
    requests = [("sample", {"num_samples": n, "seed": 0})
                for n in sorted({min(n, limits.max_samples) for n in ((1, 16) if model.autoregressive else (1, 16, 256))})]
    inputs = {
        "sample_component": {"component": 0, "num_samples": min(16, limits.max_samples), "seed": 0},
        "encode": {"images": images},
        "decode": {"z": np.zeros((1, model.latent_dim), dtype=np.float32), "seed": 0},
        "reconstruct": {"images": images, "seed": 0},
        "log_likelihood": {"images": images, "num_samples": min(100, limits.max_pairs), "seed": 0},
    }
    requests += [(name, inputs[name]) for name in signature_names(model) if name != "sample"]
    return requests


def write_warmup(path, model_name, requests):
    """Write PredictionLog records (tensorflow-serving-api protos) as a TFRecord file."""
    import tensorflow as tf

    try:
        from tensorflow_serving.apis import prediction_log_pb2
    except ImportError as error:
        raise ImportError("writing TF Serving warmup records needs tensorflow-serving-api: "
                          "pip install -e '.[serving]'") from error
    from exports.client import predict_request

    with tf.io.TFRecordWriter(str(path)) as writer:
        for signature, inputs in requests:
            log = prediction_log_pb2.PredictionLog(
                predict_log=prediction_log_pb2.PredictLog(request=predict_request(model_name, signature, inputs)))
            writer.write(log.SerializeToString())


def read_warmup(path):
    """[(signature, {input: ndarray})] from a warmup file (tests, inspection)."""
    import tensorflow as tf
    from tensorflow_serving.apis import prediction_log_pb2

    requests = []
    for record in tf.data.TFRecordDataset(str(path)).as_numpy_iterator():
        log = prediction_log_pb2.PredictionLog.FromString(record)
        request = log.predict_log.request
        requests.append((request.model_spec.signature_name,
                         {k: tf.make_ndarray(v) for k, v in request.inputs.items()}))
    return requests
