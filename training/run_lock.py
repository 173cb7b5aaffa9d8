"""One process at a time per run directory: `hold(run_dir)` takes an exclusive `flock` on RUN/.lock.

Two runs writing one directory would interleave their checkpoints and history. The lock file holds the
holder's PID for the error message; the kernel releases the lock when the holder exits, however it dies
(`kill -9` included), so there is never a stale lock to remove. Import-light: no Keras.
"""

import contextlib
import fcntl
import os
from pathlib import Path

from layers.errors import UserError

NAME = ".lock"


class RunLockedError(UserError):
    """Another live process is training in this run directory."""


@contextlib.contextmanager
def hold(run_dir):
    """Hold the run directory's lock for the `with` block; fail at once if another process holds it."""
    path = Path(run_dir) / NAME
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            raise RunLockedError(f"{run_dir} is in use by another run (process {holder} holds {path}); wait for "
                                 "it to finish or stop it, or choose another --run-dir") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield path
    finally:
        os.close(fd)  # releases the lock; the file stays (removing it would race with the next holder)
