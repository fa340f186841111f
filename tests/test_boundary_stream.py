"""usseg stream at its input boundary: a source that never delivers a frame writes nothing and
leaves --out as it was; a frame that cannot be read is one failed frame; a source that breaks
ends the stream saying so, with exit code 1; every option and the video container are checked
before the model loads."""

import json
import threading

import cv2
import numpy as np
import pytest
from boundary_support import no_traceback, run_usseg, tree_digest
from onnx_tiny import tiny_model

from usseg.runtime import sources
from usseg.runtime.segmenter import Segmenter
from usseg.runtime.stream import StreamStats, stream
from usseg.runtime.stream_cli import main as stream_main

FRAMES = 12


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return tiny_model(tmp_path_factory.mktemp("model") / "tiny.onnx")


def frames(n=FRAMES):
    rng = np.random.default_rng(5)
    return [rng.integers(0, 255, (48, 64, 3), dtype=np.uint8) for _ in range(n)]


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    path = tmp_path_factory.mktemp("video") / "clip.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 20.0, (64, 48))
    for f in frames():
        writer.write(f)
    writer.release()
    return path


@pytest.fixture
def old_out(tmp_path):
    """An --out folder holding a previous run's outputs."""
    out = tmp_path / "out"
    out.mkdir()
    (out / "results.jsonl").write_text('{"index": 0}\n')
    (out / "summary.json").write_text('{"processed": 1}\n')
    (out / "overlay.avi").write_bytes(b"previous video")
    return out


def run_stream(model, source, out, *more):
    return stream_main(["--model", str(model), "--source", str(source), "--out", str(out), "--video", "avi",
                        "--device", "cpu", *more])


@pytest.mark.parametrize("kind, words", [
    ("missing", "video file not found"),
    ("corrupt", "cannot be opened as a video source"),
    ("camera", "camera 99: cannot be opened as a video source"),
    ("empty folder", "no image files"),
    ("glob", "no image files"),
])
def test_stream_source_that_never_opens_leaves_out_as_it_was(model, tmp_path, old_out, capsys, kind, words):
    (tmp_path / "corrupt.avi").write_bytes(np.random.default_rng(0).integers(0, 255, 3000, dtype=np.uint8).tobytes())
    (tmp_path / "empty").mkdir()
    source = {"missing": tmp_path / "missing.mp4", "corrupt": tmp_path / "corrupt.avi", "camera": "99",
              "empty folder": tmp_path / "empty", "glob": tmp_path / "nothing_*.png"}[kind]
    before = tree_digest(tmp_path)
    assert run_stream(model, source, old_out) == 2
    err = capsys.readouterr().err
    assert words in err and no_traceback(err)
    assert tree_digest(tmp_path) == before


class FakeCamera:
    """cv2.VideoCapture for a camera that delivers ``count`` frames and then goes away."""

    def __init__(self, count):
        self.left = frames(count)

    def __call__(self, target):
        return self

    def isOpened(self):
        return True

    def get(self, prop):
        return 30.0 if prop == cv2.CAP_PROP_FPS else 0.0

    def read(self):
        return (True, self.left.pop(0)) if self.left else (False, None)

    def release(self):
        pass


def test_stream_camera_that_opens_but_delivers_no_frame_writes_nothing(model, old_out, monkeypatch, capsys):
    monkeypatch.setattr(sources.cv2, "VideoCapture", FakeCamera(0))
    before = tree_digest(old_out)
    assert run_stream(model, "0", old_out) == 2
    err = capsys.readouterr().err
    assert "camera 0: no frame could be read (source failed: camera 0: stopped delivering frames after 0" in err
    assert tree_digest(old_out) == before


def test_stream_camera_that_stops_ends_with_source_failed(model, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(sources.cv2, "VideoCapture", FakeCamera(3))
    assert run_stream(model, "0", tmp_path / "out", "--policy", "all") == 1
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["processed"] == 3 and summary["failed"] == 0
    assert summary["ended_by"] == "source failed: camera 0: stopped delivering frames after 3 (unplugged or failed)"
    assert summary["source_error"] == "camera 0: stopped delivering frames after 3 (unplugged or failed)"
    assert len((tmp_path / "out" / "results.jsonl").read_text().splitlines()) == 3
    assert "ended by source failed" in capsys.readouterr().out


def test_stream_truncated_video_ends_with_source_failed(model, video, tmp_path):
    data = video.read_bytes()
    cut = tmp_path / "cut.avi"
    cut.write_bytes(data[: len(data) // 2])
    assert run_stream(model, cut, tmp_path / "out") == 1
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert 0 < summary["processed"] < FRAMES - 1
    assert summary["source_error"] == (f"{cut}: could read only {summary['processed']} of the {FRAMES} frames the "
                                       f"file declares (truncated or damaged)")
    assert summary["ended_by"].startswith("source failed: ")


def test_stream_whole_video_ends_by_end_of_source(model, video, tmp_path):
    assert run_stream(model, video, tmp_path / "out") == 0
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert (summary["processed"], summary["ended_by"], summary["source_error"]) == (FRAMES, "end of source", None)


def test_stream_unreadable_frame_is_counted_and_the_stream_goes_on(model, tmp_path):
    folder = tmp_path / "frames"
    folder.mkdir()
    for i, f in enumerate(frames(5)):
        cv2.imwrite(str(folder / f"f{i}.png"), f)
    (folder / "f1.png").chmod(0)
    (folder / "f3.png").write_bytes(b"\x89PNG damaged")
    try:
        done = run_usseg(["stream", "--model", str(model), "--source", "frames", "--out", "out", "--video", "avi",
                          "--device", "cpu"], cwd=tmp_path)
    finally:
        (folder / "f1.png").chmod(0o644)
    assert done.returncode == 1, done.stderr
    assert no_traceback(done.stderr)
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert (summary["captured"], summary["processed"], summary["failed"]) == (5, 3, 2)
    assert (summary["ended_by"], summary["source_error"]) == ("end of source", None)
    assert summary["errors"] == ["frames/f1.png: cannot be read (Permission denied)",
                                 "frames/f3.png: not a readable image"]
    records = [json.loads(line) for line in (tmp_path / "out" / "results.jsonl").read_text().splitlines()]
    assert [r["index"] for r in records] == [0, 2, 4]


@pytest.mark.parametrize("option, value, words", [
    ("--smooth", "2", "--smooth 2.0: alpha must be in (0, 1]"),
    ("--smooth", "nan", "--smooth nan: alpha must be in (0, 1]"),
    ("--stall-timeout", "-1", "--stall-timeout -1.0: must be a number of seconds > 0"),
    ("--stall-timeout", "0", "--stall-timeout 0.0: must be a number of seconds > 0"),
    ("--stall-timeout", "inf", "--stall-timeout inf: must be a number of seconds > 0"),
    ("--fps", "0", "--fps 0.0: must be a number > 0"),
    ("--spacing", "inf", "--spacing inf: must be a number > 0 (mm per pixel)"),
])
def test_stream_arguments_are_checked_before_the_model_loads(tmp_path, video, capsys, option, value, words):
    rc = stream_main(["--model", str(tmp_path / "no-model.onnx"), "--source", str(video), "--out", str(tmp_path / "out"),
                      option, value])
    assert rc == 2
    err = capsys.readouterr().err
    assert err.strip() == f"error: {words}"
    assert not (tmp_path / "out").exists()


def test_stream_out_that_is_a_file_is_refused_before_the_model_loads(tmp_path, video, capsys):
    (tmp_path / "out").write_text("a file")
    rc = stream_main(["--model", str(tmp_path / "no-model.onnx"), "--source", str(video), "--out", str(tmp_path / "out")])
    assert rc == 2
    assert capsys.readouterr().err.strip() == f"error: --out {tmp_path / 'out'}: exists and is not a folder"


@pytest.mark.parametrize("video", ["gif", "mkv", ""])
def test_stream_video_container_must_be_one_it_can_write(tmp_path, video, capsys):
    with pytest.raises(SystemExit) as stop:
        stream_main(["--model", str(tmp_path / "m.onnx"), "--source", "0", "--out", str(tmp_path / "out"),
                     "--video", video])
    assert stop.value.code == 2
    assert "invalid choice" in capsys.readouterr().err and not (tmp_path / "out").exists()


class RefusingWriter:
    """cv2.VideoWriter that cannot write this container (or, with ``size``, frames other than it)."""

    def __init__(self, size=None):
        self.size = size

    def __call__(self, path, fourcc, fps, size):
        self.opened = self.size is not None and tuple(size) == self.size
        self.path = path
        return self

    def isOpened(self):
        return self.opened

    def write(self, frame):
        with open(self.path, "ab") as f:
            f.write(frame.tobytes())

    def release(self):
        pass


def test_stream_video_container_that_cannot_be_written_is_refused_before_the_first_frame(model, video, old_out,
                                                                                         monkeypatch, capsys):
    monkeypatch.setattr(cv2, "VideoWriter", RefusingWriter())
    before = tree_digest(old_out.parent)
    assert run_stream(model, video, old_out) == 2
    err = capsys.readouterr().err
    assert "--video avi: this OpenCV build cannot write avi (MJPG); use --video mp4 or --video none" in err
    assert tree_digest(old_out.parent) == before


def test_stream_video_that_fails_at_the_first_frame_keeps_the_old_outputs(model, video, old_out, monkeypatch, capsys):
    monkeypatch.setattr(cv2, "VideoWriter", RefusingWriter(size=(64, 48)))  # the check passes, 64x48 frames do not
    real_capture = cv2.VideoCapture
    monkeypatch.setattr(sources.cv2, "VideoCapture", lambda target: _Scaled(real_capture(target)))
    before = tree_digest(old_out)
    assert run_stream(model, video, old_out) == 2
    err = capsys.readouterr().err
    assert f"{old_out / 'overlay.avi'}: OpenCV cannot write 128x96 frames" in err and no_traceback(err)
    assert tree_digest(old_out) == before


class _Scaled:
    """A capture whose frames are twice the size."""

    def __init__(self, capture):
        self.capture = capture

    def __getattr__(self, name):
        return getattr(self.capture, name)

    def read(self):
        ok, image = self.capture.read()
        return ok, (cv2.resize(image, None, fx=2, fy=2) if ok else image)


def test_iterable_that_raises_ends_the_stream_as_a_source_failure(model):
    seg = Segmenter(model, device="cpu")

    def grabber():
        yield from frames(2)
        raise OSError(5, "Input/output error")

    stats = StreamStats()
    items = list(stream(seg, grabber(), policy="all", stats=stats))
    assert len(items) == 2
    assert stats.source_error == "[Errno 5] Input/output error"
    assert stats.ended_by == "source failed: [Errno 5] Input/output error"


def test_stalled_source_ends_the_stream_as_a_source_failure(model):
    seg = Segmenter(model, device="cpu")
    release = threading.Event()

    def stalls():
        yield frames(1)[0]
        release.wait(10)  # a grabber that stops answering
        yield frames(1)[0]

    stats = StreamStats()
    try:
        items = list(stream(seg, stalls(), policy="all", stall_timeout=0.3, stats=stats))
    finally:
        release.set()
    assert len(items) == 1
    assert (stats.ended_by, stats.source_error) == ("source stalled for 0.3 s", "no frame for 0.3 s")
