"""Atomic file writes: nothing a user saved is ever left half-written.

Every file the package writes (checkpoints, resume state, shards, manifests,
pose files) goes through :func:`atomic_write`: the content is written to a
temporary file beside the destination, flushed to disk, then renamed onto it
with ``os.replace``, which is atomic on POSIX and Windows. A crash or a kill
leaves either the old file or the new one, never a mix.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable
from pathlib import Path

__all__ = ["atomic_write", "atomic_write_text", "atomic_write_bytes"]


def atomic_write(path: str | os.PathLike[str], write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp)`` on a temporary path beside ``path``, then rename it onto ``path``.

    Args:
        path: The destination; its directory is created if missing.
        write: Writes the whole content to the path it is given. Writers that
            add a suffix to a bare path (``np.save``, ``np.savez``) should be
            given an open file instead: ``lambda t: np.savez(open(t, "wb"), ...)``.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.
    """
    dest = Path(path)
    dest.parent.mkdir(parents=True, exist_ok=True)
    # A unique name in the same directory (same file system, so the rename is
    # atomic), created with the default permissions rather than mkstemp's 0600.
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
    return dest


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically."""
    return atomic_write(path, lambda tmp: tmp.write_bytes(data))
