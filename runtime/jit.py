"""One decorator for every Numba kernel of the runtime: cached on disk where possible, never fatal.

Numba's ``cache=True`` picks a cache folder when a kernel is decorated, i.e. on import. It tries
``NUMBA_CACHE_DIR`` (``numba.config.CACHE_DIR``), then the ``__pycache__`` beside the source file,
then the user-wide cache (``$XDG_CACHE_HOME/numba``, else ``~/.cache/numba``), and takes the first
that accepts a test file. When none does (a read-only install run by an account without a
writable HOME) it raises "cannot cache function ...: no locator available", and nothing that
imports the runtime would start, not even ``usseg-infer --help``.

``kernel`` keeps Numba's choice whenever Numba finds a folder. Otherwise it points
``numba.config.CACHE_DIR`` at a folder it can write, before the kernel is created:
``$USSEG_CACHE_DIR/numba``, else ``usseg-<uid>/numba`` under the system temp folder (private to
the user: Numba loads its cache files with pickle). Failing both, kernels compile on every start.
The fallback is logged once per process.
"""

from __future__ import annotations

import logging
import os
import stat
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass

import numba

log = logging.getLogger("usseg.runtime")

CACHE_DIR_ENV = "USSEG_CACHE_DIR"


@dataclass
class _CachePlan:
    """This process's answer: Numba's own folders (folder None), a fallback folder, or no cache."""

    folder: str | None = None
    fallback_tried: bool = False
    enabled: bool = True


_plan = _CachePlan()
_lock = threading.Lock()


def kernel(func: Callable) -> Callable:
    """``numba.njit(nogil=True)`` with an on-disk cache wherever one can be written."""
    with _lock:
        while _plan.enabled:
            if _plan.folder is not None:
                numba.config.CACHE_DIR = _plan.folder  # again: Numba resets it when NUMBA_* change
            try:
                return numba.njit(cache=True, nogil=True)(func)
            except RuntimeError as error:  # Numba found no cache folder it can write
                _fall_back(func, error)
        return numba.njit(cache=False, nogil=True)(func)


def _fall_back(func: Callable, error: RuntimeError) -> None:
    """Move the plan one step down (fallback folder, then no cache) and say so."""
    where = os.path.dirname(func.__code__.co_filename)
    if not _plan.fallback_tried:
        _plan.fallback_tried = True
        found = _writable_fallback()
        if found is not None:
            _plan.folder, chosen = found
            asked = os.environ.get(CACHE_DIR_ENV)
            if chosen:
                level, hint = logging.INFO, ""
            elif asked:
                level, hint = logging.WARNING, f" ({CACHE_DIR_ENV}={asked} cannot be written)"
            else:
                level, hint = logging.WARNING, f" (set {CACHE_DIR_ENV} to choose the folder)"
            log.log(level, "Numba cannot cache kernels beside %s or in the user cache folder (is HOME "
                    "writable?); caching them in %s%s", where, _plan.folder, hint)
            return
    _plan.enabled = False
    log.warning("Numba cannot cache kernels (%s); compiling them on every start (set %s to a writable "
                "folder to keep them)", error, CACHE_DIR_ENV)


def _writable_fallback() -> tuple[str, bool] | None:
    """The first fallback folder that takes a file, and whether the user chose it; None if none."""
    chosen = os.environ.get(CACHE_DIR_ENV)
    for user_chose in ([True] if chosen else []) + [False]:
        try:
            folder = os.path.join(chosen if user_chose else _private_temp_folder(), "numba")
            os.makedirs(folder, exist_ok=True)
            tempfile.TemporaryFile(dir=folder).close()  # the test Numba itself makes
        except OSError as error:
            log.debug("Numba cache fallback refused: %s", error)
            continue
        return folder, user_chose
    return None


def _private_temp_folder() -> str:
    """``usseg-<uid>`` in the system temp folder, created 0700; OSError unless it is ours alone."""
    uid = os.getuid() if hasattr(os, "getuid") else None
    folder = os.path.join(tempfile.gettempdir(), f"usseg-{uid if uid is not None else os.getlogin()}")
    try:
        os.mkdir(folder, 0o700)
    except FileExistsError:
        pass
    info = os.lstat(folder)
    if not stat.S_ISDIR(info.st_mode):
        raise OSError(f"{folder} is not a folder")
    if uid is not None and (info.st_uid != uid or info.st_mode & 0o022):
        raise OSError(f"{folder} is not private to user {uid} (owner {info.st_uid}, mode {info.st_mode & 0o777:o})")
    return folder
