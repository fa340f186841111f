"""One decorator for every Numba kernel of the runtime: cached on disk where possible, never fatal,
never inside the installed package.

Left to itself, Numba's ``cache=True`` writes its cache into the ``__pycache__`` beside the source
file, i.e. into the installed package, which a shared or read-only install should not have
written into. ``kernel`` chooses the folder instead, once per process, before the first kernel is
created, and points ``numba.config.CACHE_DIR`` at it. The first that takes a file wins:

1. ``NUMBA_CACHE_DIR``, when set (Numba's own setting);
2. ``$USSEG_CACHE_DIR/numba``, when set;
3. ``usseg/numba`` in the user's cache folder (``$XDG_CACHE_HOME``, else ``~/.cache``);
4. ``usseg-<uid>/numba`` under the system temp folder, private to the user (Numba loads its
   cache files with pickle).

A folder asked for (1, 2) that cannot be written, and falling back to 4, are logged as warnings;
with none of them writable the kernels compile on every start, with a warning.

Inside the chosen folder the kernels go to a subfolder named by a hash of the runtime's sources
(``sources_key``): Numba checks a cached kernel against its own file only, so a kernel that calls
kernels of another file would otherwise keep their old code when only that other file changed.
"""

from __future__ import annotations

import hashlib
import logging
import os
import stat
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numba

log = logging.getLogger("usseg.runtime")

CACHE_DIR_ENV = "USSEG_CACHE_DIR"


@dataclass
class _CachePlan:
    """This process's answer: the cache folder, or no cache (folder None once chosen)."""

    chosen: bool = False
    folder: str | None = None


_plan = _CachePlan()
_lock = threading.Lock()


def kernel(func: Callable) -> Callable:
    """``numba.njit(nogil=True)`` with an on-disk cache in the folder chosen for this process."""
    with _lock:
        if not _plan.chosen:
            _plan.folder, _plan.chosen = _choose_folder(sources_key(Path(__file__).parent)), True
        if _plan.folder is not None:
            numba.config.CACHE_DIR = _plan.folder  # again each time: Numba resets it when NUMBA_* change
            try:
                return numba.njit(cache=True, nogil=True)(func)
            except RuntimeError as error:  # Numba found no cache folder it can write after all
                log.warning("Numba cannot cache kernels in %s (%s); compiling them on every start", _plan.folder,
                            error)
                _plan.folder = None
        return numba.njit(cache=False, nogil=True)(func)


def _user_cache_folder() -> str:
    """``usseg/numba`` in the user's cache folder (``$XDG_CACHE_HOME``, else ``~/.cache``)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "usseg", "numba")


def sources_key(package: Path) -> str:
    """16 hex digits of a hash of every ``.py`` file under ``package`` (relative names and bytes)."""
    digest = hashlib.sha256()
    for path in sorted(package.rglob("*.py")):
        digest.update(path.relative_to(package).as_posix().encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def _choose_folder(key: str) -> str | None:
    """``key`` inside the first writable folder of the module docstring's list, saying what was
    passed over."""
    asked = [(name, path) for name, path in (("NUMBA_CACHE_DIR", numba.config.CACHE_DIR),
                                             (CACHE_DIR_ENV, os.environ.get(CACHE_DIR_ENV))) if path]
    for name, path in asked:
        folder = path if name == "NUMBA_CACHE_DIR" else os.path.join(path, "numba")
        if _writable(os.path.join(folder, key)):
            return os.path.join(folder, key)
        log.warning("Numba cache: %s=%s cannot be written; looking further", name, path)
    user = _user_cache_folder()
    if _writable(os.path.join(user, key)):
        return os.path.join(user, key)
    try:
        private = os.path.join(_private_temp_folder(), "numba")
    except OSError as error:
        log.debug("Numba cache: no private temp folder: %s", error)
        private = None
    if private is not None and _writable(os.path.join(private, key)):
        log.warning("Numba cannot cache kernels in the user cache folder %s (is HOME writable?); caching them in "
                    "%s (set %s to choose the folder)", user, private, CACHE_DIR_ENV)
        return os.path.join(private, key)
    log.warning("Numba cannot cache kernels: no writable cache folder (%s); compiling them on every start (set "
                "%s to a writable folder to keep them)", user, CACHE_DIR_ENV)
    return None


def _writable(folder: str) -> bool:
    """The folder exists or can be made, and takes a file (the test Numba itself makes)."""
    try:
        os.makedirs(folder, exist_ok=True)
        tempfile.TemporaryFile(dir=folder).close()
    except OSError as error:
        log.debug("Numba cache folder %s refused: %s", folder, error)
        return False
    return True


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
