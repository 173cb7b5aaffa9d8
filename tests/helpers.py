"""Conversions shared by the oracle tests: backend tensors in, float64 NumPy out."""

import contextlib
import http.server
import json
import threading

import numpy as np
from keras import ops


def _t(a):
    """float32 backend tensor from a NumPy array (torch layers do not take NumPy inputs)."""
    return ops.convert_to_tensor(np.asarray(a, dtype=np.float32))


def _np(x):
    return np.asarray(ops.convert_to_numpy(x), dtype=np.float64)


def _f32(a):
    """The float64 copy of exactly the float32 values the code under test sees."""
    return np.asarray(a, dtype=np.float32).astype(np.float64)


def build_likelihood(name, image_shape, head="dense", **options):
    """The registered likelihood `name` with `options`, as a model builds it."""
    from layers.likelihoods import LIKELIHOODS

    return LIKELIHOODS.build(LIKELIHOODS.options(name, **options), image_shape=image_shape, head=head,
                             name="likelihood")


@contextlib.contextmanager
def json_server(respond):
    """A local HTTP server (the tests' stand-in for TF Serving's REST endpoint) answering each POST with
    `respond(path, body) -> (status, payload)`; yields its base URL."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            status, payload = respond(self.path, json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args):  # keep the test output clean
            return None

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
