"""Atomic writes: a reader sees the old file or folder or the new one, never a half-written one.

A write that cannot fit fails before it starts (`ensure_space`) or, if the disk fills during it, with a
one-line `DiskFullError` (exit 1) instead of a bare ENOSPC (after which HDF5 has crashed the process), and
the previous file stays as it was. Temporary names carry the writer's PID, so `remove_leftovers` deletes only
what a dead process left behind.
"""

import contextlib
import errno
import os
import re
import shutil
import signal
import tempfile
from pathlib import Path

from layers.errors import UserError

CRASH_ENV = "VAE_ZOO_CRASH_AT"  # fault injection for the tests: SIGKILL at the N-th step of an atomic write
_steps = 0
_TMP = re.compile(r"^\..+\.tmp(-(?P<pid>\d+)(?=[-.]|$)|-|$)")


class DiskFullError(UserError):
    """Not enough free space to write a file; nothing was replaced."""

    exit_code = 1


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _megabytes(n):
    return f"{n / 2**20:,.1f} MiB"


def _free(path):
    return shutil.disk_usage(next(p for p in (Path(path), *Path(path).parents) if p.exists())).free


def ensure_space(path, needed):
    """Raise `DiskFullError` unless the disk that holds `path` has `needed` bytes free."""
    free = _free(Path(path).parent)
    if free < needed:
        raise DiskFullError(f"not enough disk space to write {path}: needs about {_megabytes(needed)}, "
                            f"{_megabytes(free)} free; free some space on that disk and run again "
                            f"(the previous {Path(path).name}, if any, is unchanged)")


@contextlib.contextmanager
def _disk_full_as_user_error(path):
    try:
        yield
    except OSError as error:
        if error.errno != errno.ENOSPC and "No space left on device" not in str(error):
            raise
        raise DiskFullError(f"no space left on the device while writing {path} ({_megabytes(_free(path))} free); "
                            f"free some space on that disk and run again (the previous {Path(path).name}, "
                            "if any, is unchanged)") from error


def crash_point():
    """With VAE_ZOO_CRASH_AT=N the process kills itself (SIGKILL, as `kill -9` or a power cut would) at the
    N-th write step it reaches: how the fault-injection tests interrupt a run inside a write."""
    global _steps
    at = os.environ.get(CRASH_ENV)
    if at:
        _steps += 1
        if _steps == int(at):
            os.kill(os.getpid(), signal.SIGKILL)


def write_text(path, text):
    """Write `text` to a temporary file beside `path`, then rename it over `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.tmp-{os.getpid()}-")
    try:
        with _disk_full_as_user_error(path):
            os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600; a run directory is shared like any other file
            with os.fdopen(fd, "w") as f:
                f.write(text)
                f.flush()
                os.fsync(f.fileno())
        crash_point()
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
        with _disk_full_as_user_error(path):
            yield tmp
        crash_point()
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def write_dir(path):
    """Yield a temporary folder beside `path`; on success swap it in place of `path`.

    POSIX cannot rename a folder over a non-empty one, so the old folder is first renamed aside to
    `<path>.old` and removed afterwards; `resolve_dir` falls back to it if a crash hits between the
    two renames. A complete folder stays on disk at every step, also when `path` is missing and `.old` is
    the one a resumed run came from.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.tmp-{os.getpid()}-"))
    tmp.chmod(0o777 & ~_umask())  # mkdtemp makes 0700
    old = path.with_name(path.name + ".old")
    try:
        with _disk_full_as_user_error(path):
            yield tmp
        crash_point()
        if path.exists():
            if old.exists():  # both complete (a crash after the second rename): `path` is the newer
                shutil.rmtree(old)
            os.rename(path, old)
            crash_point()
        os.rename(tmp, path)
        crash_point()
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


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def remove_leftovers(folder):
    """Delete the temporary files and folders that writers killed mid-write left in `folder` (not those of
    a live process); return their names. Names without a PID (older versions) count as left over."""
    removed = []
    for entry in sorted(Path(folder).iterdir()) if Path(folder).is_dir() else ():
        match = _TMP.match(entry.name)
        if not match or (match["pid"] and _alive(int(match["pid"]))):
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
        removed.append(entry.name)
    return removed
