"""Stopping a run from outside: SIGTERM (a service manager's stop, ``kill``) is handled as Ctrl-C is.

Inside :func:`stop_signals`, SIGTERM raises :class:`Terminated`, a KeyboardInterrupt, in the main
thread, so what a command does after Ctrl-C (flush its outputs, write its summary, say how to
resume) it does for SIGTERM too. Further SIGTERMs are ignored until that is done.
"""

from __future__ import annotations

import signal
import threading
from contextlib import contextmanager
from typing import Iterator

EXIT_CODES = {"Ctrl-C": 130, "SIGTERM": 143}  # 128 + the signal's number, as a shell reports them


class Terminated(KeyboardInterrupt):
    """The process was sent SIGTERM."""


def _terminate(signum: int, frame: object) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # one stop is enough: let the outputs be written
    raise Terminated()


@contextmanager
def stop_signals() -> Iterator[None]:
    """SIGTERM as Ctrl-C for the duration (only the main thread can take signals; elsewhere a no-op)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def stopped_by(exc: BaseException) -> str:
    """'SIGTERM' or 'Ctrl-C': what stopped the run, for its messages and summary."""
    return "SIGTERM" if isinstance(exc, Terminated) else "Ctrl-C"
