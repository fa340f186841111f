"""Spine post-processing alone, per label map, on one CPU core: usseg (Numba) vs the seed's cv2 +
scikit-image rules (reference_postprocess).

Run: usseg-bench -k postprocess (or pytest benchmarks/test_bench_postprocess.py --benchmark-enable)
The process is pinned to one core and OpenCV to one thread while it runs (both restored
afterwards); the kernels use no Numba threads. Both run interleaved in the harness on the same
label maps: the label maps the plan's first trained network gives on the timed frames (what issue
30's 0.3 ms target is read on; group postprocess-trained), and synthetic 480x640 spine maps (a MID
line, an EPI line, a VTB box, stray blobs, ragged edges; reference_postprocess.synthetic_spine_labels).
The pipeline's own post-processing stage, which also maps labels, masks and geometry back to the
frame, is timed in test_bench_pipeline.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest

from usseg.benchmarks.reference_postprocess import (
    reference_postprocess,
    synthetic_spine_labels,
)
from usseg.runtime.contract import PostprocessSpec
from usseg.runtime.postprocess import postprocess_spine, warmup

from .conftest import quick
from .harness import Harness, Pipeline
from .pipelines import Group, collect
from .plan import FULL_ROUNDS, FULL_WARMUP, QUICK_ROUNDS, QUICK_WARMUP
from .tables import shares

SPEC = PostprocessSpec()
FRAMES = 24
SYNTHETIC = {"trained": False, "note": "no network: synthetic spine label maps (reference_postprocess.py)"}


@pytest.fixture(scope="module")
def label_maps() -> list[np.ndarray]:
    rng = np.random.default_rng(1234)
    return [synthetic_spine_labels(rng) for _ in range(FRAMES)]


@pytest.fixture
def one_core():
    """One CPU and one OpenCV thread for the duration of a benchmark."""
    cpus = os.sched_getaffinity(0)
    threads = cv2.getNumThreads()
    os.sched_setaffinity(0, {min(cpus)})
    cv2.setNumThreads(1)
    yield
    cv2.setNumThreads(threads)
    os.sched_setaffinity(0, cpus)


def _time_both(group: str, label_maps: list[np.ndarray], common: dict, weights: dict, results) -> dict:
    """The seed-style rules and usseg's, interleaved on ``label_maps``; the group's JSON."""
    warmup()
    out = np.empty((3,) + label_maps[0].shape, np.uint8)
    g = Group(group)
    g.pipelines = [Pipeline("seed-style:cv2+skimage", lambda labels: reference_postprocess(labels, SPEC),
                            {**common, "impl": "seed-style"}),
                   Pipeline("usseg:numba", lambda labels: postprocess_spine(labels, SPEC, out=out),
                            {**common, "impl": "usseg"})]
    g.ratio(g.row("usseg:numba", "end-to-end"), g.row("seed-style:cv2+skimage", "end-to-end"),
            "implementation only: Numba kernels vs cv2 + scikit-image, same label maps, one core")
    rounds = QUICK_ROUNDS if quick() else FULL_ROUNDS
    timing = Harness(g.pipelines, label_maps).run(rounds, QUICK_WARMUP if quick() else FULL_WARMUP)
    data = collect(g, timing, None)
    for row in data["rows"]:
        row["stage"], row["weights"] = "postprocess", weights
    results(data)
    assert all(r["samples"] == rounds for r in data["rows"])
    return data


def test_postprocess_one_core(label_maps, one_core, results):
    common = {"stage": "postprocess", "provider": "CPU, 1 core", "precision": "-", "batch": 1, "model": "",
              "network": "-", "input": "480x640", "recipe": "-", "variant": "synthetic label maps"}
    _time_both("postprocess-1core", label_maps, common, SYNTHETIC, results)


def test_postprocess_one_core_trained_label_maps(plan, frames, one_core, results):
    """The label maps the plan's first (trained) network gives on the timed frames, at its own size."""
    from usseg.runtime import Segmenter

    m = plan.models[0]
    seg = Segmenter(m.export("fp32", "1") if m.checkpoint is not None else m.onnx, device="cpu")
    maps = [seg(frame).labels for frame in frames.images]
    seg.close()
    common = {"stage": "postprocess", "provider": "CPU, 1 core", "precision": "-", "batch": 1, "model": m.name,
              "network": m.network, "input": m.input, "recipe": m.recipe,
              "variant": f"{m.name} label maps ({shares(label_shares(maps))})"}
    data = _time_both("postprocess-trained", maps, common, m.weights, results)
    assert {r["model"] for r in data["rows"]} == {m.name}


def label_shares(maps: list[np.ndarray]) -> list[float]:
    """Background, MID, VTB, EPI shares of the pixels of ``maps``."""
    counts = sum(np.bincount(m.ravel(), minlength=4)[:4] for m in maps)
    return [float(c) for c in counts / counts.sum()]


_FRESH_PROCESS = """
import json, time
t0 = time.perf_counter()
import numpy as np
from usseg.runtime.postprocess import postprocess_spine, warmup
t1 = time.perf_counter()
warmup()
t2 = time.perf_counter()
from usseg.benchmarks.reference_postprocess import synthetic_spine_labels
labels = synthetic_spine_labels(np.random.default_rng(5))
t3 = time.perf_counter()
postprocess_spine(labels)
t4 = time.perf_counter()
postprocess_spine(labels)
t5 = time.perf_counter()
print(json.dumps({"import_ms": 1e3 * (t1 - t0), "warmup_ms": 1e3 * (t2 - t1),
                  "first_frame_ms": 1e3 * (t4 - t3), "second_frame_ms": 1e3 * (t5 - t4)}))
"""


def _fresh_process() -> dict:
    env = dict(os.environ, NUMBA_NUM_THREADS="1", OMP_NUM_THREADS="1")
    done = subprocess.run([sys.executable, "-c", _FRESH_PROCESS], env=env, check=True,
                          capture_output=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_start_up_with_warm_cache(benchmark, one_core, results):
    """A new process: import, warmup() loading the cached kernels, then its first frames."""
    _fresh_process()  # fills the on-disk kernel cache if it was cold
    timings: list[dict] = []
    benchmark.group = "postprocess start-up, fresh process, warm cache"
    benchmark.pedantic(lambda: timings.append(_fresh_process()), rounds=3, iterations=1)
    best = {key: round(min(t[key] for t in timings), 2) for key in timings[0]}
    benchmark.extra_info.update(best)
    results({"group": "startup", "startup": best})
    assert best["first_frame_ms"] < 50, best  # no JIT compile left for the first frame
