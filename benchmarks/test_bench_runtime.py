"""The runtime as a process: streaming, and its memory footprint.

Streaming uses the last (fastest) model of the benchmark chain, trained, on the run's frames:
- policy ``all`` as fast as it goes: sustained frames/s (every frame processed);
- policy ``latest`` fed at the source's rate (30 frames/s, like a live probe): capture-to-result
  latency p50 / p99 and the frames dropped.
Memory runs the first model of the chain (the seed network in the full run) in a fresh process.
"""

from __future__ import annotations

import json
import subprocess
import sys

from usseg.runtime.segmenter import Segmenter
from usseg.runtime.stream import StreamStats, stream

from .figures import median, p99, p99_note
from .pipelines import model_info


def _stream(plan, frames, policy: str, pace_fps: float | None) -> dict:
    m = plan.models[-1]
    seg = Segmenter(m.export("fp32"), device=plan.device)
    count = plan.stream_frames
    images = frames.images
    source = (images[i % len(images)] for i in range(count))
    stats = StreamStats()
    for _ in stream(seg, source, policy=policy, pace=pace_fps is not None, fps=pace_fps, stats=stats):
        pass
    assert stats.captured == count and stats.failed == 0, stats.to_dict()
    lat = stats.latencies_ms
    source_rate = f"fed at {pace_fps:g} frames/s" if pace_fps else "fed as fast as it goes"
    return {"id": f"stream/{policy}", "group": "stream", "pipeline": f"usseg:{m.name}", "stage": "stream",
            **model_info(m), "impl": "usseg", "provider": seg.provider, "precision": "fp32", "batch": 1,
            "variant": f"policy {policy}, {source_rate}", "policy": policy, "source_fps": pace_fps,
            "metric": "capture-to-result latency", "median_ms": round(median(lat), 4),
            "p99_ms": None if p99(lat) is None else round(p99(lat), 4), "p99_note": p99_note(len(lat)),
            "samples": len(lat), "frames": stats.processed, "fps": round(stats.fps, 3),
            "captured": stats.captured, "processed": stats.processed, "dropped": stats.dropped,
            "weights": m.weights}


def test_stream_sustained_all_frames(plan, frames, results):
    """Every frame, as fast as it goes: sustained frames/s."""
    row = _stream(plan, frames, "all", None)
    assert row["processed"] == plan.stream_frames and row["dropped"] == 0
    results({"group": "stream", "rows": [row]})


def test_stream_live_latest_at_source_rate(plan, frames, results):
    """A live probe: stale frames are dropped, latency stays about one frame's work."""
    row = _stream(plan, frames, "latest", plan.source_fps)
    assert row["processed"] + row["dropped"] == plan.stream_frames
    results({"group": "stream", "rows": [row]})


_MEASURE = """
import json, sys
from usseg.runtime.segmenter import Segmenter
from usseg.benchmarks.models import phantom_frames

def status_mb(key):
    with open("/proc/self/status") as f:
        return next(int(l.split()[1]) for l in f if l.startswith(key)) / 1024

frames = phantom_frames(4, height=int(sys.argv[2]), width=int(sys.argv[3]))
seg = Segmenter(sys.argv[1], device="cpu")
for f in frames * 3:
    seg(f)
after_warm = status_mb("VmRSS")
for f in frames * 10:
    seg(f)
print(json.dumps({"rss_mb": status_mb("VmRSS"), "growth_mb": status_mb("VmRSS") - after_warm,
                  "peak_mb": status_mb("VmHWM")}))  # not ru_maxrss: it keeps the parent's peak across fork
"""


def test_memory_of_the_first_model_on_cpu(plan, results):
    """RSS of a process that only runs the runtime with the chain's first model on the CPU: flat."""
    m = plan.models[0]
    out = subprocess.run([sys.executable, "-c", _MEASURE, str(m.export("fp32")), str(plan.frames["height"]),
                          str(plan.frames["width"])], capture_output=True, text=True, check=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    results({"group": "memory", "memory": {**model_info(m), **{k: round(v, 1) for k, v in result.items()}}})
    assert result["peak_mb"] < 400, result
    assert result["growth_mb"] < 5, result
