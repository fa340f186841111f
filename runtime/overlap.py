"""One call finished on the host while the next call's GPU work runs (a one-slot pipeline).

A call has two halves: ``start(frames)`` -- preparation, the graph, the labels read back (the GPU's
part, on the caller's thread) -- and ``finish(started)`` -- post-processing and the mapping back
onto the frames (the host's part, on this object's one worker thread). :meth:`Overlap.submit`
starts call k+1 and only then waits for call k's finish, which ran meanwhile; so the GPU works on
frame N+1 while the host finishes frame N, and the results come back in the order submitted.

A call that fails, in either half, comes back as its exception in its place, after the calls
before it: a loop over many frames skips a bad frame (``FrameError``) and goes on, and one that
must stop (out of memory, say) still has every result before the failure.

    with Overlap(seg.start_call, seg.finish_call) as overlap:
        for tag, frames in calls:
            for done_tag, results in overlap.submit(tag, frames): ...   # the call before, done
        for done_tag, results in overlap.flush(): ...                    # the last one
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

Done = list[tuple[Any, Any]]  # (tag, the call's results, or the exception it raised)


class Overlap:
    """See the module docstring. ``start(frames) -> started``; ``finish(started) -> results``."""

    def __init__(self, start: Callable[[Sequence[Any]], Any], finish: Callable[[Any], Any]) -> None:
        self._start, self._finish = start, finish
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="usseg-finish")
        self._pending: tuple[Any, Future] | None = None

    @property
    def busy(self) -> bool:
        """A call is being finished (``flush`` would wait for it)."""
        return self._pending is not None

    def submit(self, tag: Any, frames: Sequence[Any]) -> Done:
        """Start ``frames``, hand their finish to the worker, and return the call before (if any)."""
        try:
            started = self._start(frames)
        except Exception as exc:  # noqa: BLE001 - handed back in its place, after the call before
            return self.flush() + [(tag, exc)]
        done = self.flush()
        self._pending = (tag, self._executor.submit(self._finish, started))
        return done

    def flush(self) -> Done:
        """Wait for the call being finished and return it (nothing when none is)."""
        if self._pending is None:
            return []
        (tag, future), self._pending = self._pending, None
        try:
            return [(tag, future.result())]
        except Exception as exc:  # noqa: BLE001 - handed back in its place
            return [(tag, exc)]

    def close(self) -> None:
        self._pending = None
        self._executor.shutdown(wait=True)

    def __enter__(self) -> Overlap:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
