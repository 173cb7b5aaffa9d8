"""What every command-line tool does around its work: a quiet start, one-line errors, meaningful exit codes.

Import-light (no Keras, no backend): a tool checks its arguments and config first, then calls
`import_backend()`, so bad input is reported in milliseconds instead of after TensorFlow's import.
"""

import contextlib
import os
import sys

from layers.errors import UserError

DEBUG_ENV = "VAE_ZOO_DEBUG"


def add_output_flags(parser):
    parser.add_argument("--verbose", action="store_true", help="keep TensorFlow's start-up log lines")
    parser.add_argument("--debug", action="store_true",
                        help=f"show the full traceback of an error (or set {DEBUG_ENV}=1)")


@contextlib.contextmanager
def _stderr_silenced():
    """Send file descriptor 2 to /dev/null: TensorFlow's C++ start-up lines (absl logging before it is
    initialised, so TF_CPP_MIN_LOG_LEVEL cannot silence them) are written there directly."""
    sys.stderr.flush()
    saved, null = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(null)
        os.close(saved)


def import_backend(verbose=False):
    """Import TensorFlow (every backend's data pipeline uses tf.data) and Keras; unless `verbose`, without
    TensorFlow's start-up lines ("Could not find cuda drivers", "failed call to cuInit" on a CPU machine)."""
    if verbose:
        import keras  # noqa: F401
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    with _stderr_silenced():
        import tensorflow as tf

        tf.config.list_physical_devices()  # the device probe that logs the CUDA lines runs here, silenced
        import keras  # noqa: F401


def run(main, argv=None):
    """Call `main(argv)`; print a `UserError` as one line on stderr and return its exit code.

    With --debug (or VAE_ZOO_DEBUG=1) the error propagates with its traceback."""
    args = sys.argv[1:] if argv is None else argv
    debug = "--debug" in args or os.environ.get(DEBUG_ENV, "") not in ("", "0")
    try:
        return main(argv)
    except UserError as error:
        if debug:
            raise
        print(f"error: {error}", file=sys.stderr)
        return error.exit_code
    except KeyboardInterrupt:
        if debug:
            raise
        print("interrupted", file=sys.stderr)
        return 130
