"""Atomic file writes: a reader sees the old file or the new one, never a torn one.

The data goes to a temporary file in the target's folder, is fsync'ed and renamed over the target
(``os.replace``); the folder is fsync'ed too. The temporary file is created private
(``tempfile.mkstemp``: mode 0600) and, before the rename, given the mode a plain ``open()`` would
have given it (0666 minus the umask), so exported models and run folders keep the user's usual
permissions.

>>> import tempfile, os, stat
>>> p = os.path.join(tempfile.mkdtemp(), "x.bin")
>>> atomic_write(p, b"data")
>>> open(p, "rb").read(), stat.S_IMODE(os.stat(p).st_mode) == 0o666 & ~current_umask()
(b'data', True)
"""

from __future__ import annotations

import os
import tempfile
import threading
from pathlib import Path

__all__ = ["atomic_write", "current_umask"]

_umask_lock = threading.Lock()


def current_umask() -> int:
    """The process umask (read by setting and restoring it, under a lock)."""
    with _umask_lock:
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


def _test_hook(name: str) -> None:
    """Test hook: SPQUANT_TEST_KILL_AT=<name> kills this process with SIGKILL at that point."""
    if os.environ.get("SPQUANT_TEST_KILL_AT") == name:
        import signal

        os.kill(os.getpid(), signal.SIGKILL)


def atomic_write(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically with the permissions the umask gives a new file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            half = len(data) // 2
            f.write(data[:half])
            _test_hook("mid-write")
            f.write(data[half:])
            f.flush()
            os.fchmod(f.fileno(), 0o666 & ~current_umask())
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    try:
        dfd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:  # not supported everywhere (e.g. Windows)
        pass
