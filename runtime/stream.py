"""The runtime inside a probe's video loop: capture -> bounded queue -> segment -> result.

Capture runs in its own thread. Policy ``latest`` keeps only the newest frames (stale ones are
dropped and counted), the way a live probe should be shown; ``all`` processes every frame, for
offline files. Bad frames are reported and skipped; a source that breaks ends the stream at once,
one that stalls after a timeout, and ``StreamStats.source_error`` says why; nothing here can hang
the process. The GPU starts frame N+1 while the host finishes frame N (runtime/overlap.py) when
frame N+1 is already waiting; when it is not, frame N is returned as soon as it is finished, so
overlapping never holds a frame back for the next one.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import numpy as np

from .overlap import Overlap
from .preprocess import FrameError
from .result import Result
from .sources import Frame, open_source

log = logging.getLogger("usseg.stream")

POLICIES = ("latest", "all")
_END = object()


@dataclass
class StreamItem:
    index: int               # frame index in the source
    frame: np.ndarray
    result: Result
    latency_ms: float        # capture to result


@dataclass
class StreamStats:
    captured: int = 0
    processed: int = 0
    dropped: int = 0
    failed: int = 0
    started: float = field(default_factory=time.perf_counter)
    latencies_ms: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    ended_by: str = "end of source"
    source_error: str | None = None  # why the source broke or stalled; None when it ended normally

    @property
    def elapsed_s(self) -> float:
        return time.perf_counter() - self.started

    @property
    def fps(self) -> float:
        return self.processed / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def latency(self, q: float) -> float | None:
        return float(np.percentile(self.latencies_ms, q)) if self.latencies_ms else None

    def status(self) -> str:
        p50, p99 = self.latency(50), self.latency(99)
        fmt = lambda v: "-" if v is None else f"{v:.1f}"  # noqa: E731
        return (f"{self.processed} frames, {self.fps:.1f} fps, latency p50 {fmt(p50)} ms p99 {fmt(p99)} ms, "
                f"dropped {self.dropped}, failed {self.failed}")

    def to_dict(self) -> dict[str, Any]:
        return {"captured": self.captured, "processed": self.processed, "dropped": self.dropped,
                "failed": self.failed, "seconds": round(self.elapsed_s, 3), "fps": round(self.fps, 2),
                "latency_ms_p50": self.latency(50), "latency_ms_p99": self.latency(99),
                "ended_by": self.ended_by, "source_error": self.source_error, "errors": self.errors[:20]}

    def source_failed(self, reason: str) -> None:
        self.source_error = reason
        self.ended_by = f"source failed: {reason}"


class GeometrySmoother:
    """Exponential smoothing of line end points and box corners, so the overlay does not jitter.

    End points are put in a fixed order first (MID top to bottom, EPI left to right), and a
    structure that disappears resets its state.
    """

    def __init__(self, alpha: float) -> None:
        if not 0 < alpha <= 1:
            raise ValueError(f"smoothing alpha must be in (0, 1], got {alpha}")
        self.alpha = alpha
        self.state: dict[str, np.ndarray] = {}

    def _blend(self, key: str, value: np.ndarray | None) -> np.ndarray | None:
        if value is None:
            self.state.pop(key, None)
            return None
        prev = self.state.get(key)
        new = value if prev is None or prev.shape != value.shape else self.alpha * value + (1 - self.alpha) * prev
        self.state[key] = new
        return new

    def __call__(self, result: Result) -> Result:
        for name, pts in list(result.lines.items()):
            if pts is not None:
                axis = 1 if name == "MID" else 0
                pts = pts[np.argsort(pts[:, axis])]
            result.lines[name] = self._blend(name, pts)
        if result.box is not None:
            # Start the corner list at the top-left-most corner so successive boxes line up.
            start = int(np.argmin(result.box.sum(axis=1)))
            result.box = np.roll(result.box, -start, axis=0)
        result.box = self._blend("VTB", result.box)
        return result


class _Capture(threading.Thread):
    """Reads the source into a bounded queue; ``latest`` drops the oldest frame when full."""

    def __init__(self, source, q: queue.Queue, policy: str, pace: bool, stats: StreamStats, stop: threading.Event):
        super().__init__(daemon=True, name="usseg-capture")
        self.source, self.q, self.policy, self.pace, self.stats, self.stop = source, q, policy, pace, stats, stop

    def _put(self, item: Any) -> None:
        """``all`` waits for room (checking for a stop); ``latest`` makes room by dropping the oldest."""
        latest = self.policy == "latest" and item is not _END
        while not self.stop.is_set():
            try:
                if latest:
                    self.q.put_nowait(item)
                else:
                    self.q.put(item, timeout=0.1)
                return
            except queue.Full:
                if latest:
                    try:
                        self.q.get_nowait()
                        self.stats.dropped += 1
                    except queue.Empty:
                        pass

    def run(self) -> None:
        period = 1.0 / self.source.fps if self.pace and self.source.fps else 0.0
        next_due = time.perf_counter()
        try:
            for frame in self.source.frames():
                if self.stop.is_set():
                    break
                if period:
                    next_due += period
                    time.sleep(max(0.0, next_due - time.perf_counter()))
                    frame.captured = time.perf_counter()
                self.stats.captured += 1
                self._put(frame)
        except Exception as exc:  # noqa: BLE001  (a source that breaks ends the stream, it does not hang it)
            if not self.stop.is_set():  # not the release of a source the consumer already left
                self.stats.source_failed(str(exc))
                log.error("source %s failed: %s", self.source.name, exc)
        finally:
            self._put(_END)


def stream(segmenter, source: Any, *, policy: str = "latest", queue_size: int | None = None, pace: bool = False,
           fps: float | None = None, smoothing: float | None = None, stall_timeout: float = 5.0,
           same_size: bool = True, stats: StreamStats | None = None) -> Iterator[StreamItem]:
    """Yield a StreamItem per processed frame. ``stats`` (if given) is filled in as it goes.

    ``queue_size`` defaults to 1 for ``latest`` (only the newest frame waits, so latency stays one
    frame's work) and 8 for ``all`` (smooths a bursty reader)."""
    if policy not in POLICIES:
        raise ValueError(f"unknown policy {policy!r}; valid policies are {list(POLICIES)}")
    src = open_source(source, fps)
    stats = stats if stats is not None else StreamStats()
    smoother = GeometrySmoother(smoothing) if smoothing else None
    if queue_size is None:
        queue_size = 1 if policy == "latest" else 8
    q: queue.Queue = queue.Queue(maxsize=max(1, queue_size))
    stop = threading.Event()
    capture = _Capture(src, q, policy, pace, stats, stop)
    capture.start()
    first_shape = None
    overlap = _overlap(segmenter)
    try:
        while True:
            try:
                item = q.get_nowait() if overlap.busy else q.get(timeout=stall_timeout)
            except queue.Empty:
                if overlap.busy:  # no next frame yet: return the one being finished now
                    yield from _items(overlap.flush(), stats, smoother)
                    continue
                stats.source_error = f"no frame for {stall_timeout:.1f} s"
                stats.ended_by = f"source stalled for {stall_timeout:.1f} s"
                log.warning("%s: %s", src.name, stats.ended_by)
                return
            if item is _END:
                yield from _items(overlap.flush(), stats, smoother)
                return
            frame: Frame = item
            if frame.image is None:
                _fail(stats, frame.error or f"frame {frame.index}: missing")
                continue
            if same_size:
                shape = frame.image.shape[:2]
                first_shape = first_shape or shape
                if shape != first_shape:
                    _fail(stats, f"frame {frame.index}: size changed from {first_shape} to {shape}")
                    continue
            yield from _items(overlap.submit(frame, [frame.image]), stats, smoother)
    except KeyboardInterrupt:
        stats.ended_by = "interrupted"
        raise
    finally:
        overlap.close()
        stop.set()
        capture.join(timeout=2.0)
        src.close()


def _overlap(segmenter) -> Overlap:
    """A segmenter's own one-slot pipeline (a Segmenter's GPU half on this thread, its host half
    on the pipeline's); for any other ``frame -> Result`` callable, the call on the worker thread."""
    if hasattr(segmenter, "overlap"):
        return segmenter.overlap()
    return Overlap(lambda frames: frames, lambda frames: [segmenter(frame) for frame in frames])


def _items(done, stats: StreamStats, smoother) -> Iterator[StreamItem]:
    """Finished frames as StreamItems, in order: a bad frame is counted and skipped, any other
    failure raised once the frames before it are out."""
    for frame, out in done:
        if isinstance(out, FrameError):
            _fail(stats, f"frame {frame.index}: {out}")
            continue
        if isinstance(out, BaseException):
            raise out
        result = out[0]
        if smoother is not None:
            result = smoother(result)
        latency = (time.perf_counter() - frame.captured) * 1e3
        stats.processed += 1
        stats.latencies_ms.append(latency)
        yield StreamItem(frame.index, frame.image, result, latency)


def run_stream(segmenter, source: Any, callback: Callable[[StreamItem], Any], **kwargs: Any) -> StreamStats:
    """The callback form: call ``callback(item)`` per processed frame; returns the statistics."""
    stats = kwargs.pop("stats", None) or StreamStats()
    for item in stream(segmenter, source, stats=stats, **kwargs):
        callback(item)
    return stats


def _fail(stats: StreamStats, message: str) -> None:
    stats.failed += 1
    stats.errors.append(message)
    log.warning("skipped: %s", message)
