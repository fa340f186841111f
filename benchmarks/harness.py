"""The timing harness behind usseg-bench's latency and throughput rows.

pytest-benchmark times one test's rounds back to back, so two rows of a ratio are measured
minutes apart and a change in machine load lands on one side only. Here every pipeline of a
group is timed in the same loop, round by round, on the same frame: round r times each pipeline
on frame r, in an order rotated by one each round (A B C, B C A, C A B...), and inside a pipeline
the end-to-end call and the stage-by-stage call swap places every round. A load change therefore
falls on every row of a group alike.

Each pipeline is timed twice per round: once as the product runs it (``end_to_end``) and once
stage by stage (``preprocess`` -> ``inference`` -> ``postprocess``, each timed on its own, on the
same frame). The stage chain's label maps are the real network's output on that frame, so the
post-processing is timed on what a trained network gives; their class shares are kept so the
report can show what the post-processing had to do. ``variants`` time an alternative for one
stage on the same input (another precision, bare ONNX Runtime, another recipe) right inside the
chain. Warm-up calls come first and are not recorded.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

STAGES = ("preprocess", "inference", "postprocess")
ROUND_SUM = "stages-summed-per-round"  # not a row: the three stages of one round added up


@dataclass
class Variant:
    """Another implementation of one stage, timed on the same input as the pipeline's own.

    ``fn`` takes the preprocess state (stage ``preprocess``: the frame); for ``inference`` it
    returns a label map. ``setup`` (not timed) runs first, e.g. to copy the input into the
    variant's own buffer.
    """

    name: str
    stage: str
    fn: Callable[[Any], Any]
    info: dict[str, Any] = field(default_factory=dict)
    setup: Callable[[Any], None] | None = None


@dataclass
class Pipeline:
    """One row family: an end-to-end call and, optionally, its stages.

    ``end_to_end`` takes one frame (``batch`` 1) or a list of ``batch`` frames. ``preprocess``
    returns a state that ``inference`` turns into a label map; ``postprocess(labels, state)``
    finishes the frame. Without stages only the end-to-end row is timed.
    """

    name: str
    end_to_end: Callable[[Any], Any]
    info: dict[str, Any] = field(default_factory=dict)
    preprocess: Callable[[Any], Any] | None = None
    inference: Callable[[Any], np.ndarray] | None = None
    postprocess: Callable[[np.ndarray, Any], Any] | None = None
    variants: list[Variant] = field(default_factory=list)
    batch: int = 1

    @property
    def staged(self) -> bool:
        return self.preprocess is not None and self.inference is not None and self.postprocess is not None


def row_key(pipeline: str, stage: str, variant: str | None = None) -> str:
    return f"{pipeline}/{stage}" + (f"/{variant}" if variant else "")


@dataclass
class GroupTiming:
    """Per-call times (ms) of every row of one group, and the class counts of its label maps."""

    samples: dict[str, list[float]] = field(default_factory=dict)
    class_counts: dict[str, np.ndarray] = field(default_factory=dict)
    label_frames: dict[str, int] = field(default_factory=dict)
    load_before: float | None = None
    load_after: float | None = None
    seconds: float = 0.0

    def add(self, key: str, ms: float) -> None:
        self.samples.setdefault(key, []).append(ms)

    def count_labels(self, key: str, labels: np.ndarray, num_classes: int) -> None:
        counts = np.bincount(np.asarray(labels, np.uint8).ravel(), minlength=num_classes)[:num_classes]
        self.class_counts[key] = self.class_counts.get(key, 0) + counts
        self.label_frames[key] = self.label_frames.get(key, 0) + 1

    def class_shares(self, key: str) -> list[float] | None:
        counts = self.class_counts.get(key)
        if counts is None or counts.sum() == 0:
            return None
        return [float(c) for c in counts / counts.sum()]


def rotated(items: Sequence[Any], step: int) -> list[Any]:
    """``items`` started at position ``step`` (mod its length): round r's order."""
    if not items:
        return []
    k = step % len(items)
    return list(items[k:]) + list(items[:k])


def call_frames(frames: Sequence[Any], round_index: int, batch: int) -> Any:
    """The frame (batch 1) or frames of one round: every batch-1 pipeline gets frame r."""
    if batch == 1:
        return frames[round_index % len(frames)]
    return [frames[(round_index * batch + j) % len(frames)] for j in range(batch)]


def loadavg() -> float | None:
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return None


class Harness:
    """Runs one group of pipelines interleaved; ``clock`` returns seconds (tests pass a fake)."""

    def __init__(self, pipelines: Sequence[Pipeline], frames: Sequence[Any], num_classes: int = 4,
                 clock: Callable[[], float] = time.perf_counter) -> None:
        names = [p.name for p in pipelines]
        if len(set(names)) != len(names):
            raise ValueError(f"pipeline names must be unique, got {names}")
        if not frames:
            raise ValueError("the harness needs at least one frame")
        self.pipelines, self.frames, self.num_classes, self.clock = list(pipelines), list(frames), num_classes, clock

    def run(self, rounds: int, warmup: int = 2) -> GroupTiming:
        timing = GroupTiming(load_before=loadavg())
        scratch = GroupTiming()
        for r in range(warmup):  # every call path once or more, nothing recorded
            for p in self.pipelines:
                self._round(p, r, scratch, record=False)
        start = self.clock()
        for r in range(rounds):
            for p in rotated(self.pipelines, r):
                self._round(p, r, timing, record=True)
        timing.seconds = self.clock() - start
        timing.load_after = loadavg()
        return timing

    def _round(self, p: Pipeline, r: int, timing: GroupTiming, record: bool) -> None:
        data = call_frames(self.frames, r, p.batch)
        steps = [lambda: self._end_to_end(p, data, timing, record)]
        if p.staged:
            steps.append(lambda: self._stages(p, data, r, timing, record))
        for step in rotated(steps, r):
            step()

    def _time(self, fn: Callable[[], Any]) -> tuple[Any, float]:
        t0 = self.clock()
        out = fn()
        return out, (self.clock() - t0) * 1e3

    def _end_to_end(self, p: Pipeline, data: Any, timing: GroupTiming, record: bool) -> None:
        _, ms = self._time(lambda: p.end_to_end(data))
        if record:
            timing.add(row_key(p.name, "end-to-end"), ms)

    def _stages(self, p: Pipeline, frame: Any, r: int, timing: GroupTiming, record: bool) -> None:
        state, ms = self._time(lambda: p.preprocess(frame))
        rows = [(row_key(p.name, "preprocess"), ms)]
        for v in (v for v in p.variants if v.stage == "preprocess"):
            if v.setup is not None:
                v.setup(frame)
            _, ms = self._time(lambda fn=v.fn: fn(frame))
            rows.append((row_key(p.name, "preprocess", v.name), ms))
        # the pipeline's own inference and its variants, in a rotating order, on the same input
        runs: list[tuple[str, Variant | None]] = [(row_key(p.name, "inference"), None)]
        runs += [(row_key(p.name, "inference", v.name), v) for v in p.variants if v.stage == "inference"]
        labels = None
        for key, v in rotated(runs, r):
            if v is not None and v.setup is not None:
                v.setup(state)
            fn = p.inference if v is None else v.fn
            out, ms = self._time(lambda fn=fn: fn(state))
            rows.append((key, ms))
            if record:
                timing.count_labels(key, out, self.num_classes)
            if v is None:
                labels = out
        _, ms = self._time(lambda: p.postprocess(labels, state))
        rows.append((row_key(p.name, "postprocess"), ms))
        chain = [value for key, value in rows if key in {row_key(p.name, s) for s in STAGES}]
        rows.append((row_key(p.name, ROUND_SUM), sum(chain)))
        if record:
            for key, value in rows:
                timing.add(key, value)
