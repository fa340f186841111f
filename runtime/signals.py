"""SIGTERM (a service manager's stop, ``kill``) turned into an exception in the main thread, so
that a command cleans up or flushes on the way out as it does for Ctrl-C, instead of ending
where it stands with temporaries left behind."""

from __future__ import annotations

import signal
import threading
from contextlib import contextmanager
from typing import Iterator

from .errors import UssegError


class Terminated(UssegError):
    """The run was stopped by SIGTERM."""

    exit_code = 143  # 128 + SIGTERM, as a shell reports it


@contextmanager
def sigterm_raises(message: str) -> Iterator[None]:
    """Within the block, SIGTERM raises :class:`Terminated` with ``message`` (main thread only:
    Python runs signal handlers there; elsewhere the block runs unchanged)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum, frame):  # noqa: ARG001 (the signal handler's signature)
        raise Terminated(message)

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
