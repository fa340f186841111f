"""The figures of a benchmark row, and the two checks the report makes on them.

- median and p99 per frame: p99 is the nearest-rank 99th percentile, given only from at least
  ``MIN_P99_SAMPLES`` timed calls (from fewer it would be the maximum or next to it); otherwise
  None with the reason;
- frames/s: frames timed / time they took (the mean rate, i.e. throughput, not 1000 / median);
- a ratio: the reference row's median / the row's median (> 1: the row is faster), only between
  rows that exist, and always with the text of what differs between them;
- consistency: a pipeline's end-to-end median against the sum of its stage medians measured in
  the same run; more than ``CONSISTENCY_TOLERANCE`` apart flags the row.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

MIN_P99_SAMPLES = 200
CONSISTENCY_TOLERANCE = 0.15
# issue 30: the spine post-processing of a trained network's 480x640 label map, one core
POSTPROCESS_TARGET_MS = 0.3


def median(values: Sequence[float]) -> float:
    if not values:
        raise ValueError("median of no values")
    ordered = sorted(values)
    n, mid = len(ordered), len(ordered) // 2
    return float(ordered[mid] if n % 2 else 0.5 * (ordered[mid - 1] + ordered[mid]))


def p99(values: Sequence[float], minimum: int = MIN_P99_SAMPLES) -> float | None:
    """Nearest-rank 99th percentile (the ceil(0.99 n)-th smallest), None from fewer than ``minimum``."""
    if len(values) < minimum or not values:
        return None
    ordered = sorted(values)
    return float(ordered[math.ceil(0.99 * len(ordered)) - 1])


def p99_note(samples: int, minimum: int = MIN_P99_SAMPLES) -> str | None:
    return None if samples >= minimum else f"{samples} timed calls (< {minimum}): no p99"


@dataclass(frozen=True)
class Summary:
    median_ms: float         # per frame
    p99_ms: float | None     # per frame, None with p99_note
    p99_note: str | None
    samples: int             # timed calls
    frames: int              # timed frames (samples x frames per call)
    fps: float               # frames / seconds they took

    def to_dict(self) -> dict:
        return {"median_ms": round(self.median_ms, 4), "p99_ms": None if self.p99_ms is None else round(self.p99_ms, 4),
                "p99_note": self.p99_note, "samples": self.samples, "frames": self.frames, "fps": round(self.fps, 3)}


def summarise(call_ms: Sequence[float], batch: int = 1) -> Summary:
    """Per-call times (ms) of calls of ``batch`` frames each -> per-frame figures."""
    if not call_ms:
        raise ValueError("no timed calls")
    if batch < 1:
        raise ValueError(f"batch must be >= 1, got {batch}")
    per_frame = [t / batch for t in call_ms]
    total = sum(call_ms)
    frames = len(call_ms) * batch
    top = p99(per_frame)
    return Summary(median(per_frame), top, p99_note(len(call_ms)), len(call_ms), frames,
                   frames * 1e3 / total if total > 0 else float("nan"))


def speedup(reference_ms: float | None, row_ms: float | None) -> float | None:
    """reference / row: how many times faster the row is; None when either is missing."""
    if reference_ms is None or row_ms is None or not row_ms > 0 or not reference_ms > 0:
        return None
    return reference_ms / row_ms


def consistency(end_to_end_ms: float, stage_ms: dict[str, float],
                tolerance: float = CONSISTENCY_TOLERANCE) -> dict:
    """End to end against the sum of the stages: deviation = end to end / sum - 1."""
    total = sum(stage_ms.values())
    deviation = end_to_end_ms / total - 1.0 if total > 0 else float("inf")
    return {"end_to_end_ms": round(end_to_end_ms, 4), "stages_ms": {k: round(v, 4) for k, v in stage_ms.items()},
            "sum_ms": round(total, 4), "deviation": round(deviation, 4), "tolerance": tolerance,
            "ok": abs(deviation) <= tolerance}
