"""Progress of long evaluations: Keras's bar on a terminal, plain lines in a log file or a pipe.

`keras.utils.Progbar` redraws in place (`\\r`, backspaces) whenever `"posix" in sys.modules`, i.e. on every
Linux process, and its bar carries ANSI colour codes either way, so redirected output filled logs with
escape codes. Off a terminal `LineProgress` prints one plain line every `interval` seconds and at the end.
"""

import os
import sys
import time


def is_terminal(stream=None):
    """True for a live terminal or notebook, where a redrawn bar displays correctly."""
    stream = sys.stdout if stream is None else stream
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty()) or "ipykernel" in sys.modules or "PYCHARM_HOSTED" in os.environ


class LineProgress:
    """The `update` / `add` interface of `keras.utils.Progbar`, written as plain lines (no `\\r`, no ANSI)."""

    def __init__(self, target, unit_name="step", interval=30.0):
        self.target, self.unit_name, self.interval = target, unit_name, interval
        self.seen = 0
        self.start = self.last = time.monotonic()

    def update(self, current, values=None):
        self.seen = current
        now = time.monotonic()
        if current < self.target and now - self.last < self.interval:
            return
        self.last = now
        metrics = "".join(f" - {name}: {float(value):.4f}" for name, value in values or ())
        print(f"{current}/{self.target} {self.unit_name}s - {now - self.start:.0f}s{metrics}", flush=True)

    def add(self, n, values=None):
        self.update(self.seen + n, values)


def progress_bar(target, unit_name="step"):
    """A Keras progress bar on a terminal, else a `LineProgress`."""
    if is_terminal():
        import keras

        return keras.utils.Progbar(target, unit_name=unit_name)
    return LineProgress(target, unit_name)
