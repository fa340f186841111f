"""The runtime as a process: sustained streaming over 1,000 frames, and its memory footprint.

Streaming uses the lite configuration with the cheap `bilateral` recipe (a real-time candidate)
so 1,000 frames take seconds; memory uses the seed configuration at 480x640 as the issue asks.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from usseg.runtime.segmenter import Segmenter
from usseg.runtime.stream import StreamStats, stream

from .conftest import device, quick
from .models import seed_onnx

STREAM_FRAMES = 1000


def _stream(benchmark, frames, policy, pace_fps):
    seg = Segmenter(seed_onnx("fp32", recipe="bilateral", config="lite"), device=device())
    source = (frames[i % len(frames)] for i in range(STREAM_FRAMES))
    stats = StreamStats()

    def run():
        for _ in stream(seg, source, policy=policy, pace=pace_fps is not None, fps=pace_fps, stats=stats):
            pass

    benchmark.pedantic(run, rounds=1, iterations=1)
    benchmark.group = "stream"
    variant = f"{policy}, paced at {pace_fps:g} fps" if pace_fps else f"{policy}, unpaced"
    benchmark.extra_info.update(stage="stream", impl="usseg", provider=seg.provider, frames=stats.processed,
                                recipe=variant, policy=policy, pace_fps=pace_fps, **stats.to_dict())
    assert stats.captured == STREAM_FRAMES and stats.failed == 0


def test_stream_sustained_all_frames(benchmark, frames):
    """Every frame, as fast as it goes: sustained frames/s and capture-to-result latency."""
    _stream(benchmark, frames, "all", None)


def test_stream_live_latest_at_30fps(benchmark, frames):
    """A live probe at 30 frames/s: stale frames are dropped, latency stays one frame's work."""
    if quick():
        pytest.skip("33 s of paced input; run without --quick")
    _stream(benchmark, frames, "latest", 30.0)


_MEASURE = """
import json, sys
import numpy as np
from usseg.runtime.segmenter import Segmenter
from usseg.benchmarks.models import phantom_frames

def status_mb(key):
    with open("/proc/self/status") as f:
        return next(int(l.split()[1]) for l in f if l.startswith(key)) / 1024

def rss_mb():
    return status_mb("VmRSS")

frames = phantom_frames(4)
seg = Segmenter(sys.argv[1], device="cpu")
for f in frames * 3:
    seg(f)
after_warm = rss_mb()
for f in frames * 10:
    seg(f)
print(json.dumps({"rss_mb": rss_mb(), "growth_mb": rss_mb() - after_warm,
                  "peak_mb": status_mb("VmHWM")}))  # not ru_maxrss: it keeps the parent's peak across fork
"""


def test_memory_of_the_seed_model_on_cpu(benchmark):
    """RSS of a process that only runs the runtime with the 480x640 seed model: < 400 MB, flat."""
    model = seed_onnx("fp32")
    result = {}

    def run():
        out = subprocess.run([sys.executable, "-c", _MEASURE, str(model)], capture_output=True, text=True, check=True)
        result.update(json.loads(out.stdout.strip().splitlines()[-1]))

    benchmark.pedantic(run, rounds=1, iterations=1)
    benchmark.group = "memory"
    benchmark.extra_info.update(result)
    assert result["peak_mb"] < 400, result
    assert result["growth_mb"] < 5, result
