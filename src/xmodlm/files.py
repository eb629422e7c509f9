"""Atomic file writes: a reader sees the old file or the new one, never part of one, also after a crash.

``atomic_write(path, writer)`` lets ``writer`` fill a temporary file in the target's directory, then
flushes it to disk, renames it over ``path`` (``os.replace``, atomic on POSIX and Windows) and flushes
the directory, so that the rename itself survives a power loss. On any failure the temporary file is
removed and ``path`` is left as it was. The new file gets the permissions that ``open()`` would give
it (0o666 less the umask), not the 0600 of a temporary file.

This module imports only the standard library.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Callable, Iterable


def _umask_at_import() -> int:
    mask = os.umask(0)  # the only portable way to read it is to set it; done once, before any thread of ours
    os.umask(mask)
    return mask


_UMASK_AT_IMPORT = _umask_at_import()


def current_umask() -> int:
    """The process's umask, read without changing it where Linux reports it (/proc/self/status, since
    4.7); elsewhere the umask at import."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    return _UMASK_AT_IMPORT


def fsync_file(path: str | os.PathLike) -> None:
    """Flush a file's content to disk."""
    fd = os.open(path, os.O_RDWR if os.name == "nt" else os.O_RDONLY)  # Windows flushes only writable handles
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: str | os.PathLike) -> None:
    """Flush a directory's entries (a rename, a new file) to disk, where the OS allows it: Windows cannot
    open a directory, and some file systems refuse to fsync one. There it does nothing."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path: str | os.PathLike, writer: Callable[[Path], object]) -> Path:
    """Write ``path`` atomically: ``writer(tmp)`` writes the whole file at ``tmp`` (a path in the same
    directory, e.g. ``lambda tmp: save_file(tensors, tmp)``); returns ``path``. The directory must exist."""
    path = Path(path)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(name)
    try:
        writer(tmp)
        os.chmod(tmp, 0o666 & ~current_umask())
        fsync_file(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)
    return path


def atomic_write_text(path: str | os.PathLike, text: str | Iterable[str], newline: str | None = None) -> Path:
    """Write text (one string, or chunks of one) in UTF-8 atomically. ``newline`` as in ``open()``: None
    translates "\\n" to the platform's line ending, "\\n" keeps it on every platform."""
    chunks = [text] if isinstance(text, str) else text

    def write(tmp: Path) -> None:
        with open(tmp, "w", encoding="utf-8", newline=newline) as f:
            for chunk in chunks:
                f.write(chunk)

    return atomic_write(path, write)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write bytes atomically."""
    return atomic_write(path, lambda tmp: tmp.write_bytes(data))
