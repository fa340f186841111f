"""Stopping a run from outside: SIGTERM (a service manager's stop, ``kill``) is handled as Ctrl-C is.

Inside :func:`stop_signals`, SIGTERM raises :class:`Terminated`, a KeyboardInterrupt, in the main
thread, so what a command does after Ctrl-C (flush its outputs, write its summary, say how to
resume) it does for SIGTERM too. Further SIGTERMs are ignored until that is done. With
``deferred=True`` the stop waits for the next :func:`stop_point`, so that a unit of work (one
frame and its outputs) is either done and recorded or not started.
"""

from __future__ import annotations

import signal
import threading
from contextlib import contextmanager
from typing import Iterator

EXIT_CODES = {"Ctrl-C": 130, "SIGTERM": 143}  # 128 + the signal's number, as a shell reports them


class Terminated(KeyboardInterrupt):
    """The process was sent SIGTERM."""


_pending = threading.Event()  # SIGTERM came while stops were deferred


def _terminate(signum: int, frame: object) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # one stop is enough: let the outputs be written
    raise Terminated()


def _defer(signum: int, frame: object) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    _pending.set()


def stop_point() -> None:
    """Where a deferred SIGTERM stops the run: raises Terminated if one came."""
    if _pending.is_set():
        _pending.clear()
        raise Terminated()


@contextmanager
def stop_signals(deferred: bool = False) -> Iterator[None]:
    """SIGTERM as Ctrl-C for the duration, at once or (``deferred``) at the next stop_point
    (only the main thread can take signals; elsewhere a no-op)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    _pending.clear()
    previous = signal.signal(signal.SIGTERM, _defer if deferred else _terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
        _pending.clear()


def stopped_by(exc: BaseException) -> str:
    """'SIGTERM' or 'Ctrl-C': what stopped the run, for its messages and summary."""
    return "SIGTERM" if isinstance(exc, Terminated) else "Ctrl-C"
