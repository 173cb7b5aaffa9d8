"""Ask a TF Serving server for samples (REST, or gRPC with tensorflow-serving-api) and write an image grid.

    python -m exports.client --url http://HOST:8501 --model NAME sample --num-samples 16 --seed 0 --out grid.png
    python -m exports.client --grpc HOST:8500 --model NAME sample-component --component 3 --num-samples 16 --out c3.png

REST requests use the columnar format ({"signature_name": ..., "inputs": {...}}), which the scalar inputs
(num_samples, seed, component) need; the server answers {"outputs": ...} or {"error": "..."}. A bad request
(e.g. num_samples above the export's cap) comes back as an error whose message names the problem; the
client prints it and exits with status 1. A request outside the bounds any export has (num_samples < 1, a
negative component, values beyond int32) is refused before sending, with status 2.

Import-light: NumPy, the standard library's HTTP client and Pillow; TensorFlow and the serving protos only
on the gRPC path. No Keras.
"""

import argparse
import json
import os
import sys
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np

from exports.interface import SIGNATURES, RequestError, check_scalars


class ServingError(RuntimeError):
    """The server rejected a request or could not be reached; the message is the server's."""


def rest_body(signature, inputs):
    """The JSON body of a columnar REST predict request."""
    return {"signature_name": signature,
            "inputs": {k: np.asarray(v).tolist() for k, v in inputs.items()}}


def rest_url(base_url, model, version=None):
    version_part = f"/versions/{int(version)}" if version is not None else ""
    return f"{base_url.rstrip('/')}/v1/models/{model}{version_part}:predict"


def outputs_from_response(signature, response):
    """Named NumPy outputs from a columnar REST response (a single output comes back without its name)."""
    if "error" in response:
        raise ServingError(response["error"])
    outputs = response["outputs"]
    names = SIGNATURES["sample" if signature == "serving_default" else signature][1]
    if not isinstance(outputs, dict):
        outputs = {names[0]: outputs}
    return {k: np.asarray(v, dtype=np.float32) for k, v in outputs.items()}


def rest_predict(base_url, model, signature, inputs, version=None, timeout=60.0):
    """POST a predict request to TF Serving's REST API; return the named outputs."""
    data = json.dumps(rest_body(signature, inputs)).encode()
    request = urllib.request.Request(rest_url(base_url, model, version), data=data,
                                     headers={"Content-Type": "application/json"}, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as reply:
            response = json.loads(reply.read())
    except urllib.error.HTTPError as error:
        body = error.read().decode(errors="replace")
        try:
            message = json.loads(body)["error"]
        except (ValueError, KeyError, TypeError):
            message = body or error.reason
        raise ServingError(f"HTTP {error.code} from {error.url}: {message}") from None
    except urllib.error.URLError as error:
        raise ServingError(f"cannot reach {base_url}: {error.reason}") from None
    return outputs_from_response(signature, response)


def predict_request(model, signature, inputs, version=None):
    """A tensorflow_serving PredictRequest (gRPC, and the warmup records)."""
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2

    dtypes = {"num_samples": np.int32, "seed": np.int32, "component": np.int32}
    request = predict_pb2.PredictRequest()
    request.model_spec.name = model
    request.model_spec.signature_name = signature
    if version is not None:
        request.model_spec.version.value = int(version)
    for key, value in inputs.items():
        request.inputs[key].CopyFrom(tf.make_tensor_proto(np.asarray(value, dtype=dtypes.get(key, np.float32))))
    return request


def grpc_predict(target, model, signature, inputs, version=None, timeout=60.0):
    """Send a PredictRequest to TF Serving's gRPC API (HOST:8500); return the named outputs."""
    try:
        import grpc
        import tensorflow as tf
        from tensorflow_serving.apis import prediction_service_pb2_grpc
    except ImportError as error:
        raise ServingError(f"gRPC needs tensorflow-serving-api (pip install -e '.[serving]'): {error}") from None
    with grpc.insecure_channel(target) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        try:
            response = stub.Predict(predict_request(model, signature, inputs, version), timeout)
        except grpc.RpcError as error:
            raise ServingError(f"{error.code().name} from {target}: {error.details()}") from None
    return {k: tf.make_ndarray(v) for k, v in response.outputs.items()}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", help="REST base URL, e.g. http://localhost:8501")
    parser.add_argument("--grpc", metavar="HOST:PORT", help="use gRPC instead, e.g. localhost:8500")
    parser.add_argument("--model", required=True, help="TF Serving model name")
    parser.add_argument("--version", type=int, help="model version (default: the server's latest)")
    parser.add_argument("--timeout", type=float, default=60.0)
    commands = parser.add_subparsers(dest="command", required=True)
    for command_name, needs_component in (("sample", False), ("sample-component", True)):
        command = commands.add_parser(command_name, help=f"call the {command_name.replace('-', '_')} signature and save a grid")
        if needs_component:
            command.add_argument("--component", type=int, required=True, help="mixture component index")
        command.add_argument("--num-samples", type=int, default=16)
        command.add_argument("--seed", type=int, default=0)
        command.add_argument("--out", type=Path, default=Path("grid.png"), help="PNG grid of the images")
        command.add_argument("--columns", type=int, default=8)
    args = parser.parse_args(argv)
    if bool(args.url) == bool(args.grpc):
        parser.error("give exactly one of --url (REST) or --grpc (gRPC)")

    signature = args.command.replace("-", "_")
    inputs = {"num_samples": args.num_samples, "seed": args.seed}
    if signature == "sample_component":
        inputs = {"component": args.component, **inputs}
    try:
        check_scalars(inputs)
        if args.columns < 1:
            raise RequestError(f"--columns {args.columns}: give at least 1")
    except RequestError as error:
        print(f"error: {error}", file=sys.stderr)
        return error.exit_code
    try:
        if args.url:
            outputs = rest_predict(args.url, args.model, signature, inputs, args.version, args.timeout)
        else:
            outputs = grpc_predict(args.grpc, args.model, signature, inputs, args.version, args.timeout)
    except ServingError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    from training.figures import grid_picture

    images = outputs["images"]
    tmp = args.out.with_name(f".{args.out.name}.tmp-{os.getpid()}")  # written whole, then renamed into place
    try:
        grid_picture(images, columns=args.columns).save(tmp, format="PNG")
        os.replace(tmp, args.out)
    finally:
        tmp.unlink(missing_ok=True)
    print(f"{images.shape[0]} images {tuple(images.shape[1:])} from {args.model}/{signature} -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
