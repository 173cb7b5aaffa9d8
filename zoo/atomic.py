"""Atomic writes: a reader sees the old file or folder or the new one, never a half-written one."""

import contextlib
import os
import shutil
import tempfile
from pathlib import Path


def write_text(path, text):
    """Write `text` to a temporary file beside `path`, then rename it over `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def write_file(path):
    """Yield a temporary path beside `path`; on success rename it to `path` (keeps the suffix, which
    writers such as `save_weights` check)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp-{os.getpid()}{''.join(path.suffixes)}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def write_dir(path):
    """Yield a temporary folder beside `path`; on success swap it in place of `path`.

    POSIX cannot rename a folder over a non-empty one, so the old folder is first renamed aside to
    `<path>.old` and removed afterwards; `resolve_dir` falls back to it if a crash hits between the
    two renames.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.tmp-"))
    old = path.with_name(path.name + ".old")
    try:
        yield tmp
        if old.exists():
            shutil.rmtree(old)
        if path.exists():
            os.rename(path, old)
        os.rename(tmp, path)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def resolve_dir(path):
    """`path` if it exists, else the `.old` copy left by an interrupted `write_dir`, else None."""
    path = Path(path)
    if path.exists():
        return path
    old = path.with_name(path.name + ".old")
    return old if old.exists() else None
