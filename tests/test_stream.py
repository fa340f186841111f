import json
import threading
import time

import cv2
import numpy as np
import pytest

from usseg.runtime.result import Result
from usseg.runtime.segmenter import Segmenter
from usseg.runtime.stream import GeometrySmoother, StreamStats, stream
from usseg.runtime.stream_cli import main as stream_main

CINE_FRAMES = 24


@pytest.fixture(scope="module")
def seg(tiny_onnx):
    return Segmenter(tiny_onnx, device="cpu")


@pytest.fixture(scope="module")
def cine_video(tmp_path_factory):
    """A phantom probe sweep across the midline, written as a video file; returns (path, frames read back)."""
    from usseg.train.phantom import PhantomConfig, generate_cine

    frames = [img for img, _ in generate_cine(PhantomConfig(height=120, width=160), seed=3, n_frames=CINE_FRAMES)]
    path = tmp_path_factory.mktemp("cine") / "sweep.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 20.0, (160, 120), isColor=False)
    for f in frames:
        writer.write(f)
    writer.release()
    capture = cv2.VideoCapture(str(path))
    decoded = []
    while True:
        ok, img = capture.read()
        if not ok:
            break
        decoded.append(img)
    capture.release()
    assert len(decoded) == CINE_FRAMES
    return path, decoded


def test_video_stream_keeps_count_order_and_results(seg, cine_video):
    path, decoded = cine_video
    stats = StreamStats()
    items = list(seg.stream(str(path), policy="all", stats=stats))
    assert [i.index for i in items] == list(range(CINE_FRAMES))
    for item, frame in zip(items, decoded):
        expected = seg(frame)
        assert np.array_equal(item.result.labels, expected.labels)
        for name in expected.lines:
            a, b = item.result.lines[name], expected.lines[name]
            assert (a is None and b is None) or np.allclose(a, b)
    assert stats.processed == stats.captured == CINE_FRAMES and stats.dropped == 0
    assert all(i.latency_ms > 0 for i in items) and stats.latency(99) >= stats.latency(50)


def test_folder_and_glob_sources_are_read_in_name_order(seg, cine_video, tmp_path):
    _, decoded = cine_video
    for i, frame in enumerate(decoded[:5]):
        cv2.imwrite(str(tmp_path / f"frame_{i:03d}.png"), frame)
    for source in (str(tmp_path), str(tmp_path / "frame_*.png")):
        assert [i.index for i in seg.stream(source, policy="all")] == [0, 1, 2, 3, 4]


def test_bad_frames_are_reported_and_skipped(seg, cine_video):
    _, decoded = cine_video
    frames = [decoded[0], None, np.full((120, 160), np.nan, np.float32), decoded[1],
              np.zeros((60, 80), np.uint8), np.zeros((0, 0), np.uint8), decoded[2]]
    stats = StreamStats()
    items = list(stream(seg, frames, policy="all", stats=stats))
    assert [i.index for i in items] == [0, 3, 6]
    assert stats.failed == 4
    text = " ".join(stats.errors)
    assert "frame 1" in text and "NaN" in text and "size changed" in text


def test_latest_policy_drops_stale_frames_and_counts_them(seg, cine_video):
    _, decoded = cine_video
    stats = StreamStats()
    seen = []
    source_done = threading.Event()

    def source():
        yield from (decoded[i % CINE_FRAMES] for i in range(60))
        source_done.set()

    for item in stream(seg, source(), policy="latest", queue_size=2, stats=stats):
        seen.append(item.index)
        source_done.wait(30)  # the consumer is slower than the source: it waits for the source to finish
    assert stats.dropped > 0
    assert stats.processed + stats.dropped == 60 == stats.captured
    assert seen == sorted(seen) and seen[-1] == 59  # newest frames win, order kept


def test_a_stalled_source_ends_the_stream(seg, cine_video):
    _, decoded = cine_video
    release = threading.Event()

    def stalls():
        yield decoded[0]
        release.wait(10)  # never set: the source hangs
        yield decoded[1]

    stats = StreamStats()
    items = list(stream(seg, stalls(), policy="all", stall_timeout=0.5, stats=stats))
    release.set()
    assert len(items) == 1  # had it waited for the source, the source's second frame (after 10 s) would be here
    assert "stalled" in stats.ended_by


def test_callback_form(seg, cine_video):
    path, _ = cine_video
    got = []
    stats = seg.run_stream(str(path), got.append, policy="all")
    assert len(got) == stats.processed == CINE_FRAMES


def test_smoothing_damps_jitter():
    smoother = GeometrySmoother(alpha=0.5)
    rng = np.random.default_rng(0)
    raw, smooth = [], []
    for _ in range(50):
        line = np.array([[100.0, 20.0], [102.0, 300.0]]) + rng.normal(0, 2, (2, 2))
        r = Result(np.zeros((4, 4), np.uint8), {}, {"MID": line[::-1].copy(), "EPI": None}, None)
        raw.append(line[0, 0])
        smooth.append(smoother(r).lines["MID"][0, 0])  # reordered top first
    assert np.std(smooth[10:]) < 0.75 * np.std(raw[10:])
    r = Result(np.zeros((4, 4), np.uint8), {}, {"MID": None, "EPI": None}, None)
    assert smoother(r).lines["MID"] is None and "MID" not in smoother.state


def test_stream_cli_writes_video_and_json_lines(tiny_onnx, cine_video, tmp_path, capsys):
    path, _ = cine_video
    folder = tmp_path / "out"
    out, jsonl = folder / "overlay.avi", folder / "results.jsonl"
    assert stream_main(["--model", str(tiny_onnx), "--source", str(path), "--out", str(folder), "--video", "avi",
                        "--device", "cpu"]) == 0
    assert sorted(p.name for p in folder.iterdir()) == ["overlay.avi", "results.jsonl", "summary.json"]
    assert json.loads((folder / "summary.json").read_text())["processed"] == CINE_FRAMES
    records = [json.loads(line) for line in jsonl.read_text().splitlines()]
    assert [r["index"] for r in records] == list(range(CINE_FRAMES))
    assert {"geometry", "timings_ms", "latency_ms"} <= set(records[0])
    capture = cv2.VideoCapture(str(out))
    assert int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) == CINE_FRAMES
    capture.release()
    summary = capsys.readouterr().out
    assert f"{CINE_FRAMES} frames" in summary and "dropped 0" in summary
    assert not list(folder.glob(".*"))
    assert stream_main(["--model", str(tiny_onnx), "--source", str(tmp_path / "none.mp4"), "--device", "cpu"]) == 2


def test_ctrl_c_stops_cleanly_and_flushes_the_outputs(tiny_onnx, cine_video, tmp_path):
    import signal
    import subprocess
    import sys

    _, decoded = cine_video
    folder = tmp_path / "frames"
    folder.mkdir()
    for i in range(200):
        cv2.imwrite(str(folder / f"f_{i:04d}.png"), decoded[i % CINE_FRAMES])
    results = tmp_path / "out"
    out, jsonl = results / "overlay.avi", results / "results.jsonl"
    proc = subprocess.Popen([sys.executable, "-m", "usseg.runtime.stream_cli", "--model", str(tiny_onnx),
                             "--source", str(folder), "--pace", "--fps", "20", "--out", str(results),
                             "--video", "avi", "--device", "cpu"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def written() -> int:
        partial = list(results.glob(".results.jsonl.*"))
        return partial[0].read_text().count("\n") if partial else 0

    deadline = time.time() + 60
    while time.time() < deadline and written() < 5:
        time.sleep(0.1)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 0, stderr
    assert "interrupted" in stdout
    lines = jsonl.read_text().splitlines()
    assert 5 <= len(lines) < 200 and all(json.loads(line)["index"] >= 0 for line in lines)
    capture = cv2.VideoCapture(str(out))
    assert int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) == len(lines)
    capture.release()
    assert not list(results.glob(".*"))
