"""An exclusive lock on a file beside what is being built (flock; a no-op where there is none), without torch."""
from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None

from utils import UserError


@contextmanager
def exclusive_lock(path: Path, fix: str):
    """Hold an exclusive lock on `path` (created when missing); `fix`: what to do when it cannot be created."""
    try:
        handle = open(path, "a")
    except OSError as err:
        raise UserError(f"cannot create the lock {path} ({err.strerror})", fix) from None
    with handle:
        if fcntl is not None:
            fcntl.flock(handle, fcntl.LOCK_EX)
        yield
