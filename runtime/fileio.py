"""Writing files so that a crash never leaves a half-written one, and nothing surprises the user:
temporary file (or folder) beside the target, then one rename; permissions follow the umask like
any other tool's (``tempfile`` makes owner-only files and folders). A write that fails (a full
disk) raises :class:`~usseg.runtime.errors.WriteError` naming the file, and leaves the file's
previous version as it was. One run at a time writes into an output folder (:func:`output_lock`).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import sys
import tempfile
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from .errors import UssegError, WriteError

log = logging.getLogger("usseg.fileio")

TMP_MARK = ".usseg-tmp"  # every temporary name carries this, so stale ones can be found and removed
LOCK_NAME = ".usseg.lock"  # in an output folder while a run writes into it (output_lock)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _default_mode(folder: bool) -> int:
    return (0o777 if folder else 0o666) & ~_umask()


@contextmanager
def atomic_path(path: str | os.PathLike, what: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success rename it over ``path``, else delete it.

    An OSError on the way (the folder, the temporary file, the writing done in the block, the
    rename) becomes a WriteError naming ``path`` (and ``what`` it holds, when given)."""
    path = Path(path)
    tmp_path = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TMP_MARK + path.suffix, dir=path.parent)
        os.close(fd)
        tmp_path = Path(tmp)
        os.chmod(tmp_path, _default_mode(folder=False))
        yield tmp_path
        os.replace(tmp_path, path)
    except OSError as exc:
        raise WriteError.of(path, exc, what) from None
    finally:
        if tmp_path is not None and tmp_path.exists():
            tmp_path.unlink()


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json(path: str | os.PathLike, data: Any, indent: int | None = 1) -> None:
    write_text(path, json.dumps(data, indent=indent) + "\n")


def write_png(path: str | os.PathLike, image: Any) -> None:
    """Encode ``image`` (uint8/uint16, grey or BGR) as PNG and write it atomically."""
    import cv2

    ok, buf = cv2.imencode(".png", image)
    if not ok:
        raise OSError(f"{path}: could not encode PNG")
    write_bytes(path, buf.tobytes())


@contextmanager
def replace_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield an empty temporary folder beside ``path``; on success it replaces ``path`` (whatever
    was there), else it is deleted and ``path`` is left as it was. The lock file of a run that holds
    ``path`` (:func:`output_lock`) moves into the new folder, still held."""
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=TMP_MARK, dir=path.parent))
        os.chmod(tmp, _default_mode(folder=True))
        yield tmp
        if path.exists():
            old = tmp.with_name(tmp.name + ".old")
            path.rename(old)
            tmp.rename(path)
            if (old / LOCK_NAME).is_file() and not (path / LOCK_NAME).exists():
                (old / LOCK_NAME).rename(path / LOCK_NAME)  # the run's lock (output_lock) stays held: same file
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(path)
    except OSError as exc:  # named by the folder it was meant to become, not by its temporary name
        reason = exc.reason if isinstance(exc, WriteError) else exc.strerror or str(exc)
        if isinstance(exc, WriteError) and tmp is not None and exc.path and Path(exc.path).is_relative_to(tmp):
            reason += f", writing {Path(exc.path).relative_to(tmp)}"
        raise WriteError.of(path, OSError(exc.errno, reason), "this folder") from None
    finally:
        if tmp is not None and tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def make_dirs(path: str | os.PathLike) -> Path:
    """``mkdir -p`` that reports a folder it cannot create or write to as an OSError naming it."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise OSError(f"{path}: exists and is not a folder") from None
    except OSError as exc:
        raise OSError(f"{path}: cannot create this folder ({exc.strerror})") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise OSError(f"{path}: this folder is not writable")
    return path


def remove_stale_temporaries(folder: str | os.PathLike) -> list[Path]:
    """Delete the temporaries that a killed process left in ``folder`` (not recursive)."""
    folder = Path(folder)
    removed = []
    if not folder.is_dir():
        return removed
    for entry in folder.iterdir():
        if entry.name.startswith(".") and TMP_MARK in entry.name:
            if entry.is_dir():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)
            removed.append(entry)
    return removed


# -- one run per output folder --------------------------------------------------------------------
class OutputLockedError(UssegError):
    """Another run is writing into the same output folder; the message names it."""


_held: dict[str, int] = {}      # output folders this process holds -> nesting depth
_held_guard = threading.Lock()


@contextmanager
def output_lock(folder: str | os.PathLike, command: str) -> Iterator[Path]:
    """Hold ``folder/.usseg.lock`` while a run writes into ``folder`` (created if missing; the
    folders made for the lock are removed again when nothing else was put in them).

    The lock is an advisory ``flock`` on that file, which records the holder (pid, command,
    host, start time): a second run into the same folder raises OutputLockedError naming it, and a
    lock file left by a process that died is taken over with a warning (the kernel releases a dead
    process's lock, so nothing has to guess from a pid). Within one process the lock nests (the
    demo runs the other commands into its own folder).
    """
    folder = Path(folder)
    made = [p for p in (folder, *folder.parents) if not p.exists()]
    make_dirs(folder)
    key = os.path.realpath(folder)
    with _held_guard:
        nested = key in _held
        _held[key] = _held.get(key, 0) + 1
    fd = None
    try:
        if not nested:
            fd = _take(folder, command)
        yield folder
    finally:
        with _held_guard:
            _held[key] -= 1
            if not _held[key]:
                del _held[key]
        if fd is not None:
            _release(folder / LOCK_NAME, fd)
        for path in made:  # deepest first; stops at the first that holds something
            try:
                path.rmdir()
            except OSError:
                break


def _take(folder: Path, command: str) -> int | None:
    try:
        import fcntl
    except ImportError:  # no flock on this system: runs are not kept apart
        log.debug("no file locking on this system; %s is not locked", folder)
        return None
    path = folder / LOCK_NAME
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0), 0o666)
        except OSError as exc:
            raise OutputLockedError(f"{path}: cannot be used as the run's lock file ({exc.strerror or exc}); "
                                    f"remove it if no usseg run is writing into {folder}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = _holder(fd) or "a run that is just starting"
            os.close(fd)
            raise OutputLockedError(f"{folder}: another usseg run is writing into this folder ({holder}); "
                                    f"wait for it to end, or choose another output folder") from None
        try:  # the holder may have removed the file between our open and our flock: lock the new one
            current = os.stat(path, follow_symlinks=False).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            current = False
        if not current:
            os.close(fd)
            continue
        if os.fstat(fd).st_size:
            holder = _holder(fd)
            log.warning("%s: taking over %s", folder, f"the lock left by {holder}, which is no longer running"
                        if holder else f"{LOCK_NAME}, which no running usseg holds and usseg did not write")
        record = {"pid": os.getpid(), "command": command, "argv": sys.argv, "host": socket.gethostname(),
                  "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(record) + "\n").encode(), 0)
        return fd


def _holder(fd: int) -> str | None:
    """'pid 123 on host: usseg predict, since 2026-...' from a lock file's record; None when it
    holds none (just created, or not written by usseg)."""
    try:
        record = json.loads(os.pread(fd, 65536, 0) or b"null")
        text = f"pid {int(record['pid'])} on {record['host']}: {record['command']}, since {record['started']}"
    except (OSError, ValueError, TypeError, KeyError):
        return None
    return "".join(ch if ch.isprintable() else "?" for ch in text)[:300]  # the file may have been edited


def _release(path: Path, fd: int) -> None:
    try:
        if os.stat(path, follow_symlinks=False).st_ino == os.fstat(fd).st_ino:
            path.unlink()
    except OSError:
        pass
    finally:
        os.close(fd)
