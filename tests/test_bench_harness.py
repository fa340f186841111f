"""The benchmark harness on a fake clock: interleaving, warm-up, same frames, stage chain, labels."""

import numpy as np
import pytest

from usseg.benchmarks.harness import ROUND_SUM, Harness, Pipeline, Variant, call_frames, rotated


class FakeClock:
    """Time moves only when a fake stage says so, and every call is logged in order."""

    def __init__(self):
        self.now, self.log = 0.0, []

    def __call__(self):
        return self.now

    def work(self, name, ms, result=None):
        def fn(*args):
            self.log.append((name, args[0] if args else None))
            self.now += ms / 1e3
            return result
        return fn


def staged(clock, name, pre, inf, post, e2e, labels):
    return Pipeline(name, clock.work(f"{name}.e2e", e2e), {"impl": name},
                    preprocess=clock.work(f"{name}.pre", pre), inference=clock.work(f"{name}.inf", inf, labels),
                    postprocess=clock.work(f"{name}.post", post))


@pytest.mark.parametrize("items, step, expected", [
    ("ABC", 0, list("ABC")), ("ABC", 1, list("BCA")), ("ABC", 5, list("CAB")), ("", 3, []),
])
def test_rotated(items, step, expected):
    assert rotated(items, step) == expected


def test_call_frames_gives_every_batch_one_pipeline_frame_r():
    frames = list(range(5))
    assert [call_frames(frames, r, 1) for r in range(7)] == [0, 1, 2, 3, 4, 0, 1]
    assert call_frames(frames, 1, 3) == [3, 4, 0]


def test_rounds_are_interleaved_on_the_same_frame_and_warmup_is_not_recorded():
    clock = FakeClock()
    labels = np.array([[0, 1], [2, 3]], np.uint8)
    a = staged(clock, "A", 1, 2, 3, 7, labels)
    b = staged(clock, "B", 10, 20, 30, 70, labels)
    timing = Harness([a, b], ["f0", "f1", "f2"], clock=clock).run(rounds=4, warmup=1)
    assert timing.samples["A/end-to-end"] == pytest.approx([7.0] * 4)
    assert timing.samples["B/preprocess"] == pytest.approx([10.0] * 4)
    assert timing.samples["B/postprocess"] == pytest.approx([30.0] * 4)
    assert timing.samples[f"A/{ROUND_SUM}"] == pytest.approx([6.0] * 4)    # 1 + 2 + 3, variants not included
    timed = clock.log[8:]                 # warm-up: one round of 2 pipelines x 4 calls
    firsts = [name for name, _ in timed[::4]]
    # the pipelines take turns first, and end to end and the stage chain swap places each round
    assert firsts == ["A.e2e", "B.e2e", "B.pre", "A.pre", "A.e2e", "B.e2e", "B.pre", "A.pre"]
    frames_of_round = [{f for _, f in timed[8 * r:8 * r + 8] if isinstance(f, str)} for r in range(4)]
    assert frames_of_round == [{"f0"}, {"f1"}, {"f2"}, {"f0"}]   # both pipelines on frame r
    assert timing.class_shares("A/inference") == pytest.approx([0.25] * 4)
    assert timing.label_frames["A/inference"] == 4


def test_variants_run_on_the_stage_input_with_untimed_setup():
    clock = FakeClock()
    labels = np.zeros((2, 2), np.uint8)
    seen = []
    p = staged(clock, "P", 1, 2, 3, 6, labels)
    p.variants = [Variant("int8", "inference", clock.work("int8", 5, labels + 1), {"precision": "int8"},
                          setup=lambda state: (seen.append(state), setattr(clock, "now", clock.now + 100))[0]),
                  Variant("fast", "preprocess", clock.work("fast", 0.5))]
    timing = Harness([p], ["f0", "f1"], clock=clock).run(rounds=2, warmup=0)
    assert timing.samples["P/inference/int8"] == pytest.approx([5.0, 5.0])   # setup's 100 ms not counted
    assert timing.samples["P/preprocess/fast"] == pytest.approx([0.5, 0.5])
    assert seen == [None, None]                                                # the preprocess state
    assert timing.class_shares("P/inference/int8") == pytest.approx([0, 1, 0, 0])
    assert timing.samples[f"P/{ROUND_SUM}"] == pytest.approx([6.0, 6.0])       # 1 + 2 + 3 without the variants


def test_end_to_end_only_pipelines_and_bad_input():
    clock = FakeClock()
    p = Pipeline("batch", clock.work("b", 8), batch=4)
    timing = Harness([p], list(range(6)), clock=clock).run(rounds=3, warmup=0)
    assert list(timing.samples) == ["batch/end-to-end"]
    assert [args for _, args in clock.log] == [[0, 1, 2, 3], [4, 5, 0, 1], [2, 3, 4, 5]]
    with pytest.raises(ValueError, match="unique"):
        Harness([p, p], [0])
    with pytest.raises(ValueError, match="at least one frame"):
        Harness([p], [])
