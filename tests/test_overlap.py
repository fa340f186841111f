"""The one-slot pipeline (runtime/overlap.py) and its users: a call is finished on the host while
the next call's GPU half runs, results come back in order, a bad frame does not end the loop.
Fake halves stand in for the engine; the Segmenter's own halves run on a tiny CPU model."""

import threading

import numpy as np
import pytest
from onnx_tiny import tiny_model

from usseg.runtime.errors import UsageError
from usseg.runtime.overlap import Overlap
from usseg.runtime.preprocess import FrameError
from usseg.runtime.result import Result
from usseg.runtime.segmenter import Segmenter
from usseg.runtime.stream import StreamStats, stream

GUARD_S = 20


class FakeEngine:
    """``start`` records the frames it was given (a frame equal to ``bad_start`` raises FrameError);
    ``finish`` of call k waits until call k+1 has started (so a pipeline that does not overlap
    times out) unless it is the last, and raises FrameError for ``bad_finish``."""

    def __init__(self, calls, bad_start=-1, bad_finish=-1):
        self.last, self.bad_start, self.bad_finish = calls - 1, bad_start, bad_finish
        self.started = [threading.Event() for _ in range(calls)]
        self.order, self.finish_threads = [], set()

    def start(self, frames):
        k = int(frames[0])
        self.order.append(("start", k))
        self.started[k].set()
        if k == self.bad_start:
            raise FrameError(f"frame {k}: unreadable")
        return k

    def finish(self, k):
        self.finish_threads.add(threading.current_thread().name)
        if k < self.last:
            assert self.started[k + 1].wait(GUARD_S), f"call {k} was finished before call {k + 1} started"
        self.order.append(("finish", k))
        if k == self.bad_finish:
            raise FrameError(f"frame {k}: no labels")
        return [f"result {k}"]


def run_all(engine, calls):
    out = []
    with Overlap(engine.start, engine.finish) as overlap:
        for k in range(calls):
            out += overlap.submit(k, [k])
        out += overlap.flush()
        assert not overlap.busy
    return out


def test_each_call_is_finished_while_the_next_one_starts_and_results_keep_their_order():
    engine = FakeEngine(6)
    out = run_all(engine, 6)
    assert out == [(k, [f"result {k}"]) for k in range(6)]
    assert engine.finish_threads == {"usseg-finish_0"}
    # call k+1 starts before call k is finished, for every k
    for k in range(5):
        assert engine.order.index(("start", k + 1)) < engine.order.index(("finish", k))


@pytest.mark.parametrize("where", ["start", "finish"])
def test_a_frame_that_fails_comes_back_in_its_place_and_the_loop_goes_on(where):
    engine = FakeEngine(6, bad_start=2 if where == "start" else -1, bad_finish=3 if where == "finish" else -1)
    out = run_all(engine, 6)
    bad = 2 if where == "start" else 3
    assert [tag for tag, _ in out] == list(range(6))
    for tag, got in out:
        if tag == bad:
            assert isinstance(got, FrameError) and f"frame {bad}" in str(got)
        else:
            assert got == [f"result {tag}"]


def test_any_failure_comes_back_after_the_calls_before_it():
    def start(frames):
        if frames[0] == 2:
            raise MemoryError()
        return frames[0]

    def finish(k):
        if k == 1:
            raise ValueError("bug")
        return [k]

    with Overlap(start, finish) as overlap:
        done = overlap.submit(0, [0]) + overlap.submit(1, [1]) + overlap.submit(2, [2]) + overlap.flush()
    assert [tag for tag, _ in done] == [0, 1, 2] and done[0][1] == [0]
    assert isinstance(done[1][1], ValueError) and isinstance(done[2][1], MemoryError)


class FakeSegmenter:
    """A segmenter's two halves for the stream: frames whose first pixel is 13 are unreadable."""

    def __init__(self):
        self.finished = []

    def overlap(self):
        return Overlap(self.start, self.finish)

    def start(self, frames):
        if frames[0][0, 0] == 13:
            raise FrameError("unreadable")
        return frames[0]

    def finish(self, frame):
        self.finished.append(int(frame[0, 1]))
        return [Result(np.zeros(frame.shape, np.uint8), {}, {}, None, timings={"total": 1.0})]


def test_stream_overlaps_reports_each_frames_latency_and_survives_a_bad_frame():
    frames = [np.full((8, 10), 0, np.uint8) for _ in range(12)]
    for i, f in enumerate(frames):
        f[0, 1] = i
    frames[5][0, 0] = 13
    stats, fake = StreamStats(), FakeSegmenter()
    items = list(stream(fake, iter(frames), policy="all", stats=stats))
    assert [item.index for item in items] == [i for i in range(12) if i != 5]
    assert fake.finished == [i for i in range(12) if i != 5]
    assert all(item.latency_ms > 0 for item in items) and len(stats.latencies_ms) == 11
    assert stats.processed == 11 and stats.failed == 1 and "frame 5: unreadable" in stats.errors[0]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("overlap")
    return tiny_model(root / "one.onnx"), tiny_model(root / "dynamic.onnx", batch=None)


def test_segmenter_batch_frame_by_frame_equals_single_calls_with_timings(tiny):
    one, dynamic = tiny
    rng = np.random.default_rng(4)
    frames = [rng.integers(0, 256, (24, 32), dtype=np.uint8) for _ in range(5)]
    seg = Segmenter(one, device="cpu")
    batched = seg.batch(frames)
    assert len({r.labels.tobytes() for r in batched}) == 5  # the order check means something
    for frame, result in zip(frames, batched):
        np.testing.assert_array_equal(result.labels, seg(frame).labels)
        assert set(result.timings) == {"preprocess", "inference", "postprocess", "total"}
        assert result.timings["total"] == pytest.approx(sum(v for k, v in result.timings.items() if k != "total"))
    with seg.overlap() as overlap:
        (tag, refused), = overlap.submit(0, frames[:2])
    assert tag == 0 and isinstance(refused, UsageError) and "one frame a call" in str(refused)
    multi = Segmenter(dynamic, device="cpu")
    with multi.overlap() as overlap:
        done = overlap.submit("a", frames[:2]) + overlap.submit("b", frames[2:]) + overlap.flush()
    assert [tag for tag, _ in done] == ["a", "b"]
    for frame, result in zip(frames, done[0][1] + done[1][1]):
        np.testing.assert_array_equal(result.labels, seg(frame).labels)
    seg.close()
    multi.close()
