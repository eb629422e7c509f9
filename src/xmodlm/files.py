"""Atomic file writes: a reader sees the old file or the new one, never part of one, also after a crash.

``atomic_write(path, writer)`` lets ``writer`` fill a temporary file in the target's directory, then
flushes it to disk, renames it over ``path`` (``os.replace``, atomic on POSIX and Windows) and flushes
the directory, so that the rename itself survives a power loss. On any failure the temporary file is
removed and ``path`` is left as it was. The new file gets the permissions that ``open()`` would give
it (0o666 less the umask), not the 0600 of a temporary file.

A whole directory (a trainer checkpoint, a model edited in place) is replaced the same way by
``replace_dir``: the new one is built beside it (``.NAME.tmp``), flushed, then switched in with two
renames (``NAME`` -> ``.NAME.old``, ``.NAME.tmp`` -> ``NAME``). A kill between the two leaves only the
old directory, which ``recover_dir`` (called before every read and write of such a directory) renames
back. ``run_lock`` keeps a second run out of a directory.

This module imports only the standard library.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import socket
import tempfile
import time
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


def write_error(path: str | os.PathLike, error: BaseException) -> OSError:
    """An OSError naming ``path`` for a failed write: its errno and reason when ``error`` is an OSError; else (torch
    and safetensors raise RuntimeError) "no space left on device" when the disk is full, or ``error`` itself."""
    path = Path(path)
    if isinstance(error, OSError) and error.errno is not None:
        reason = error.strerror or str(error)
        return OSError(error.errno, reason if reason.startswith("cannot write it") else f"cannot write it: {reason}",
                       str(path))
    try:
        full = shutil.disk_usage(path.parent if path.parent.exists() else ".").free < (1 << 20)
    except OSError:
        full = False
    if full:
        return OSError(errno.ENOSPC, f"cannot write it: {os.strerror(errno.ENOSPC)}", str(path))
    return OSError(errno.EIO, f"cannot write it: {error}", str(path))


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
    except (OSError, RuntimeError) as e:  # a full disk, a quota: the error names the file it was writing
        tmp.unlink(missing_ok=True)
        raise write_error(path, e) from e
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


# ---- whole directories ----------------------------------------------------------------------------------------------
def tmp_dir_for(final: str | os.PathLike) -> Path:
    final = Path(final)
    return final.parent / f".{final.name}.tmp"


def old_dir_for(final: str | os.PathLike) -> Path:
    final = Path(final)
    return final.parent / f".{final.name}.old"


def sync_tree(directory: str | os.PathLike) -> None:
    """fsync every file and directory under ``directory`` (itself included)."""
    for root, dirs, files in os.walk(directory):
        for name in files:
            fsync_file(Path(root) / name)
        fsync_dir(root)


def recover_dir(final: str | os.PathLike, old: str | os.PathLike | None = None) -> None:
    """Finish what a kill during ``switch_dir`` left: ``final`` missing but ``old`` complete -> rename it back.
    A leftover ``old`` beside a present ``final`` is removed."""
    final = Path(final)
    old = Path(old) if old is not None else old_dir_for(final)
    if not old.is_dir():
        return
    if final.exists():
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.rename(old, final)
        fsync_dir(final.parent)


def switch_dir(tmp: str | os.PathLike, final: str | os.PathLike, old: str | os.PathLike | None = None) -> Path:
    """Put the complete, flushed directory ``tmp`` in the place of ``final``. A directory cannot be renamed over a
    non-empty one, hence two renames; between them only ``old`` exists, and ``recover_dir`` restores it."""
    tmp, final = Path(tmp), Path(final)
    old = Path(old) if old is not None else old_dir_for(final)
    if final.exists():
        shutil.rmtree(old, ignore_errors=True)
        os.rename(final, old)
    os.rename(tmp, final)
    fsync_dir(final.parent)
    shutil.rmtree(old, ignore_errors=True)
    return final


def replace_dir(final: str | os.PathLike, build: Callable[[Path], object], *, keep: Callable[[str], bool] | None = None
                ) -> Path:
    """Replace directory ``final`` atomically by one that ``build(tmp)`` fills (``final`` need not exist).

    ``keep(name)``: entries of the old directory to carry over (hard links where the file system allows them, else
    copies) before ``build`` runs; ``build`` may overwrite them. A failure leaves ``final`` as it was."""
    final = Path(final)
    tmp = tmp_dir_for(final)
    recover_dir(final)
    shutil.rmtree(tmp, ignore_errors=True)  # debris of a run killed while building
    tmp.mkdir(parents=True)
    try:
        if keep is not None and final.is_dir():
            for entry in sorted(final.iterdir()):
                if keep(entry.name):
                    if entry.is_dir():
                        shutil.copytree(entry, tmp / entry.name, copy_function=_link_or_copy)
                    else:
                        _link_or_copy(entry, tmp / entry.name)
        build(tmp)
        sync_tree(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return switch_dir(tmp, final)


def _link_or_copy(src: str | os.PathLike, dst: str | os.PathLike) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


# ---- one run per directory -------------------------------------------------------------------------------------------
LOCK_NAME = ".xmodlm.lock"
_held: dict[Path, int] = {}  # lock file -> how many times this process holds it (re-entrant)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


@contextlib.contextmanager
def run_lock(directory: str | os.PathLike, what: str = "run"):
    """Hold ``directory/.xmodlm.lock`` (pid, host, start time) while the block runs; a second holder, in this or
    another process, gets a ValueError naming the first. A lock left by a dead process on this host is taken
    over; one from another host must be removed by hand (its process cannot be checked from here).
    Re-entrant within one process."""
    directory = Path(directory)
    if directory.exists() and not directory.is_dir():
        raise ValueError(f"{directory} is a file, not a directory; pass a directory (new or a run's) as the output")
    created = not directory.exists()
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ValueError(f"{directory}: cannot create the output directory ({e.strerror or e})") from None
    if not os.access(directory, os.W_OK | os.X_OK):
        raise ValueError(f"{directory} is not writable; pass a directory you can write to as the output")
    path = (directory / LOCK_NAME).resolve()
    if path in _held:
        _held[path] += 1
        try:
            yield path
        finally:
            if path in _held:  # the outer holder may have let go first (a Trainer collected late)
                _held[path] -= 1
        return
    me = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%d %H:%M:%S"),
          "what": what}
    for _ in range(3):
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            try:
                holder = json.loads(path.read_text(encoding="utf-8"))
                pid, host = int(holder["pid"]), str(holder["host"])
            except (OSError, ValueError, KeyError, TypeError):
                holder, pid, host = None, None, None
            if holder is None:  # a lock file being written this instant, or cut short by a kill while written
                time.sleep(0.2)
                if path.exists() and time.time() - path.stat().st_mtime < 5:
                    continue
            elif host == me["host"] and pid != me["pid"] and _pid_alive(pid):
                raise ValueError(f"{directory} is in use by another xmodlm {holder.get('what', 'run')} (pid {pid} on "
                                 f"{host}, since {holder.get('started', '?')}); wait for it to finish or use another "
                                 "output directory") from None
            elif host != me["host"]:
                raise ValueError(f"{directory} is locked by an xmodlm {holder.get('what', 'run')} on host {host} "
                                 f"(pid {pid}, since {holder.get('started', '?')}); if that run is over, delete "
                                 f"{path}") from None
            path.unlink(missing_ok=True)  # stale: its process is gone
            continue
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(json.dumps(me) + "\n")
        break
    else:
        raise ValueError(f"{directory}: could not take the lock {path}; delete it if no run uses the directory")
    _held[path] = 1
    try:
        yield path
    finally:
        del _held[path]
        path.unlink(missing_ok=True)
        if created:
            with contextlib.suppress(OSError):
                directory.rmdir()  # a run that failed before writing anything leaves no empty directory
