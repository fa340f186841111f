"""The live view (usseg.runtime.view): the server's behaviour over HTTP, a viewer that never reads,
``usseg stream --view`` end to end, and the page itself in headless Chromium."""

import hashlib
import http.client
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from itertools import cycle
from pathlib import Path

import cv2
import numpy as np
import pytest

from usseg.runtime.measurements import measure
from usseg.runtime.postprocess import postprocess_spine
from usseg.runtime.result import Result
from usseg.runtime.stream import StreamStats, stream
from usseg.runtime.view import FrameSlot, LiveView

ROOT = Path(__file__).resolve().parents[1]
GUARD_S = 60  # hang guard for waits below: never a timing assertion


def wait_until(condition, what: str, timeout: float = GUARD_S):
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"never happened: {what}")
        time.sleep(0.02)


class Item:
    def __init__(self, index, result, latency_ms=10.0):
        self.index, self.result, self.latency_ms = index, result, latency_ms


def spine_result(epi_y: float, shape=(120, 160), spacing=0.25) -> Result:
    lines = {"MID": np.array([[80.0, 10.0], [80.0, 100.0]]), "EPI": np.array([[60.0, epi_y], [100.0, epi_y]])}
    return Result(np.zeros(shape, np.uint8), {}, lines, None, timings={"total": 3.0}, spacing_mm=spacing)


def noise_overlay(seed: int, shape=(120, 160, 3)) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def get(url: str, host: str | None = None) -> tuple[int, bytes, str]:
    request = urllib.request.Request(url, headers={"Host": host} if host else {})
    try:
        with urllib.request.urlopen(request, timeout=GUARD_S) as r:
            return r.status, r.read(), r.headers.get("Content-Type", "")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read(), exc.headers.get("Content-Type", "")


def read_parts(url: str, count: int) -> list[tuple[dict, bytes]]:
    """The first ``count`` parts of an MJPEG stream: (headers, JPEG bytes)."""
    host, port = url.split("//")[1].rstrip("/").rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=GUARD_S)
    conn.request("GET", "/stream.mjpg")
    response = conn.getresponse()
    assert response.status == 200
    assert response.getheader("Content-Type") == "multipart/x-mixed-replace; boundary=usseg-frame"
    parts = []
    for _ in range(count):
        assert response.fp.readline().strip() == b"--usseg-frame"
        headers = {}
        while (line := response.fp.readline().strip()):
            key, value = line.decode().split(":", 1)
            headers[key.strip().lower()] = value.strip()
        data = response.fp.read(int(headers["content-length"]))
        assert response.fp.read(2) == b"\r\n"
        parts.append((headers, data))
    conn.close()
    return parts


# -- the frame holder -------------------------------------------------------------------------------
def test_slot_keeps_the_newest_frame_and_encodes_it_once():
    slot = FrameSlot()
    assert slot.jpeg() == (0, b"", {})
    slot.publish(None, {"index": 0})                       # no viewer: a record, nothing to encode
    assert not slot.wait_newer(0, 0.01) and slot.encodes == 0 and slot.record == {"index": 0}
    slot.publish(noise_overlay(1), {"index": 1})
    slot.publish(noise_overlay(2), {"index": 2})
    assert slot.wait_newer(0, 0.01)
    seq, data, record = slot.jpeg()
    assert (seq, record) == (3, {"index": 2})
    decoded = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    assert decoded.shape == (120, 160, 3)
    assert np.abs(decoded.astype(int) - noise_overlay(2)).mean() < np.abs(decoded.astype(int) - noise_overlay(1)).mean()
    for _ in range(3):
        assert slot.jpeg()[0] == 3
    assert slot.encodes == 1                               # several viewers, one encoding
    assert not slot.wait_newer(3, 0.01)


# -- the server -------------------------------------------------------------------------------------
@pytest.fixture
def view():
    stats = StreamStats()
    v = LiveView(port=0, info={"model": {"model": "m.onnx", "sha256": "0" * 64}, "source": "test",
                               "calibration": {"spacing_mm": 0.25, "spacing_source": "user", "skin_y": 0.0}},
                 stats=stats)
    yield v
    v.close()


def test_page_status_and_snapshot(view):
    status, page, kind = get(view.url)
    assert status == 200 and kind.startswith("text/html")
    for name in ("epidural_depth", "vertebral_body_depth", "midline_angle", "midline_offset"):
        assert f'id="readout-{name}"' in page.decode()
    assert not view.wants_frame()
    view.publish(Item(7, spine_result(40.0), latency_ms=20.0), None)
    view.publish(Item(8, spine_result(48.0), latency_ms=30.0), None)
    doc = json.loads(get(view.url + "status.json")[1])
    assert doc["running"] and doc["seq"] == 2 and doc["viewers"] == 0
    assert doc["frame"]["index"] == 8
    assert doc["frame"]["measurements"]["epidural_depth"] == {"value": 12.0, "unit": "mm", "display": "12.0"}
    assert doc["stats"]["latency_ms_p50"] == 25.0 and doc["stats"]["window"] == 2
    assert doc["model"]["sha256"] == "0" * 64 and doc["calibration"]["spacing_source"] == "user"
    # A snapshot request makes the pipeline draw overlays for a while; the first one is served.
    thread = threading.Thread(target=lambda: results.append(get(view.url + "frame.jpg")))
    results: list = []
    thread.start()
    wait_until(view.wants_frame, "the snapshot request registers")
    view.publish(Item(9, spine_result(50.0)), noise_overlay(9))
    thread.join(GUARD_S)
    status, data, kind = results[0]
    assert status == 200 and kind == "image/jpeg" and data[:2] == b"\xff\xd8"


def test_foreign_host_names_and_unknown_paths_are_refused(view):
    assert get(view.url + "status.json", host="attacker.example:8080")[0] == 403
    assert get(view.url + "status.json", host=f"localhost:{view.port}")[0] == 200
    assert get(view.url + "status.json", host="10.1.2.3:9")[0] == 200   # an address, not a rebindable name
    assert get(view.url + "nothing")[0] == 404


def test_port_in_use_is_a_usage_error(view):
    from usseg.runtime.errors import UsageError

    with pytest.raises(UsageError, match=f"127.0.0.1:{view.port}"):
        LiveView(port=view.port)


def test_stream_viewers_get_the_newest_frames_with_their_records(view):
    parts: list = []
    reader = threading.Thread(target=lambda: parts.extend(read_parts(view.url, 3)))
    reader.start()
    wait_until(lambda: view.viewers, "the viewer connects")
    assert view.wants_frame()
    n = 0
    while reader.is_alive() and n < 10_000:
        view.publish(Item(n, spine_result(40.0 + n % 7)), noise_overlay(n))
        n += 1
        time.sleep(0.005)
    reader.join(GUARD_S)
    assert len(parts) == 3
    seqs = [int(h["x-frame-seq"]) for h, _ in parts]
    assert seqs == sorted(set(seqs))
    for headers, data in parts:
        record = json.loads(headers["x-frame-record"])
        assert record["measurements"]["epidural_depth"]["value"] == pytest.approx((40.0 + record["index"] % 7) * 0.25)
        assert cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR).shape == (120, 160, 3)
    assert view.slot.encodes <= view.slot.seq
    wait_until(lambda: not view.viewers, "the viewer is gone after disconnecting")


def test_a_viewer_that_never_reads_does_not_hold_up_the_stream():
    """Big frames fill the socket buffers of a client that never reads: its thread blocks, the
    pipeline does not. Counted, not timed."""
    frames = [noise_overlay(i, (480, 640)) for i in range(4)]
    count = 80

    class Fake:
        def __call__(self, frame):
            return spine_result(40.0, shape=frame.shape[:2])

    stats = StreamStats()
    with LiveView(port=0, stats=stats) as view:
        stuck = socket.socket()
        stuck.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        stuck.connect(("127.0.0.1", view.port))
        stuck.sendall(b"GET /stream.mjpg HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        wait_until(lambda: view.viewers, "the stuck viewer connects")
        viewer = view.viewers[0]
        done = threading.Event()

        def run():
            for item in stream(Fake(), (frames[i % 4] for i in range(count)), policy="all", stats=stats):
                view.publish(item, item.frame)
            done.set()

        threading.Thread(target=run, daemon=True).start()
        assert done.wait(GUARD_S), "the stream was held up by a viewer that does not read"
        assert stats.processed == count and stats.dropped == 0
        assert view.slot.seq == count
        assert viewer.sent < count        # it skipped (or is still stuck on) the frames it could not take
        view.close()
        wait_until(lambda: not view.viewers, "closing the view ends the stuck viewer's thread")
        stuck.close()


# -- usseg stream --view, as a user runs it -----------------------------------------------------------
@pytest.fixture(scope="module")
def long_cine(tmp_path_factory):
    """A phantom sweep, 400 frames of 120x160 at 20 fps (the stream is interrupted long before its end)."""
    from usseg.train.phantom import PhantomConfig, generate_cine

    frames = [img for img, _ in generate_cine(PhantomConfig(height=120, width=160), seed=4, n_frames=24)]
    path = tmp_path_factory.mktemp("view_cine") / "sweep.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 20.0, (160, 120), isColor=False)
    for i in range(400):
        writer.write(frames[i % len(frames)])
    writer.release()
    return path


def test_usseg_stream_view_serves_the_live_stream_and_ctrl_c_keeps_the_outputs(tiny_onnx, long_cine, tmp_path):
    out = tmp_path / "out"
    process = subprocess.Popen(
        [sys.executable, "-m", "usseg.runtime.cli", "stream", "--model", str(tiny_onnx), "--source", str(long_cine),
         "--device", "cpu", "--pace", "--view", "--port", "0", "--spacing", "0.3", "--out", str(out)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    lines: list[str] = []
    found = threading.Event()

    def read_stderr():
        for line in process.stderr:
            lines.append(line)
            if "live view at" in line:
                found.set()

    threading.Thread(target=read_stderr, daemon=True).start()
    try:
        assert found.wait(GUARD_S), "".join(lines)
        url = re.search(r"live view at (http://\S+)", "".join(lines)).group(1)
        wait_until(lambda: json.loads(get(url + "status.json")[1])["stats"]["processed"] >= 3, "frames processed")
        parts = read_parts(url, 2)
        assert all(p[1][:2] == b"\xff\xd8" for p in parts)
        status = json.loads(get(url + "status.json")[1])
        assert status["running"] and status["stats"]["fps"] > 0 and status["stats"]["latency_ms_p99"] > 0
        assert status["model"]["sha256"] == hashlib.sha256(Path(tiny_onnx).read_bytes()).hexdigest()
        assert status["model"]["provider"] == "CPUExecutionProvider" and status["model"]["time"]
        assert status["calibration"] == {"spacing_mm": 0.3, "spacing_source": "user", "skin_y": 0.0}
        assert set(status["frame"]["measurements"]) == {"epidural_depth", "vertebral_body_depth", "midline_angle",
                                                        "midline_offset"}
    finally:
        process.send_signal(signal.SIGINT)
        process.communicate(timeout=GUARD_S)
    assert process.returncode == 0, "".join(lines)
    from results_schema import validate

    summary = json.loads((out / "summary.json").read_text())
    validate(summary, "stream_summary")
    assert summary["ended_by"].startswith("interrupted") and 0 < summary["processed"] < 400
    assert summary["spacing_source"] == "user" and summary["spacing_mm"] == 0.3
    assert summary["provenance"]["sha256"] == status["model"]["sha256"]
    first = json.loads((out / "results.jsonl").read_text().splitlines()[0])
    validate(first, "stream_line")
    assert first["measurements"]["midline_offset"]["unit"] == "mm"


# -- the page in a real headless browser ---------------------------------------------------------------
class PhantomTruth:
    """A frame pipeline that answers with the phantom's own annotations, drawn the seed's way and run
    through the runtime's post-processing: geometry (and readouts) that move with the sweep."""

    def __init__(self, n_frames=40, height=480, width=640, spacing=0.1):
        from usseg.train.phantom import PhantomConfig, generate_cine
        from usseg.train.seedformat import draw_mask, parse_shapes

        self.frames, self.results, self.spacing = [], {}, spacing
        for image, shapes in generate_cine(PhantomConfig(height=height, width=width), seed=6, n_frames=n_frames):
            labels = draw_mask(parse_shapes(shapes, "phantom"), height, width)
            geo = postprocess_spine(labels)
            masks = {name: geo.masks[i].astype(bool) for i, name in enumerate(("MID", "VTB", "EPI"))}
            key = hashlib.sha1(image.tobytes()).hexdigest()
            self.results[key] = (labels, masks, {"MID": geo.mid, "EPI": geo.epi}, geo.vtb)
            self.frames.append(image)

    def expected(self, index: int) -> dict:
        labels, _, lines, box = self.results[hashlib.sha1(self.frames[index % len(self.frames)].tobytes()).hexdigest()]
        return {k: r.value for k, r in measure(lines, box, labels.shape, self.spacing).items()}

    def __call__(self, frame):
        labels, masks, lines, box = self.results[hashlib.sha1(frame.tobytes()).hexdigest()]
        lines = {k: None if v is None else v.copy() for k, v in lines.items()}
        return Result(labels, masks, lines, None if box is None else box.copy(), timings={"total": 1.0},
                      spacing_mm=self.spacing)


def run_pipeline(truth: PhantomTruth, view: LiveView, stats: StreamStats, stop: threading.Event) -> threading.Thread:
    """The same loop usseg stream runs with --view: paced at 15 fps, until ``stop``."""
    from usseg.runtime.overlay import draw_overlay

    def frames():
        for frame in cycle(truth.frames):
            if stop.is_set():
                return
            yield frame

    def run():
        for item in stream(truth, frames(), policy="latest", pace=True, fps=15.0, stats=stats):
            view.publish(item, draw_overlay(item.frame, item.result) if view.wants_frame() else None)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


PIXELS_JS = """(() => { const img = document.getElementById('frame');
  if (!img.complete || !img.naturalWidth) return null;
  const c = document.createElement('canvas'); c.width = img.naturalWidth; c.height = img.naturalHeight;
  const g = c.getContext('2d'); g.drawImage(img, 0, 0);
  const d = g.getImageData(0, 0, c.width, c.height).data; let h = 0;
  for (let i = 0; i < d.length; i += 4) h = (h * 31 + d[i] + 7 * d[i + 1]) % 1000000007;
  return [c.width, c.height, h]; })()"""

READOUTS_JS = """(() => { const out = {index: window.usseg.index, frames: window.usseg.frames};
  for (const name of ['epidural_depth', 'vertebral_body_depth', 'midline_angle', 'midline_offset']) {
    const box = document.getElementById('readout-' + name);
    out[name] = [box.querySelector('.value').textContent, box.querySelector('.unit').textContent]; }
  return out; })()"""


def test_live_page_in_headless_chromium(tmp_path):
    from chromium import Browser, find_chromium

    executable = find_chromium()
    if executable is None:
        pytest.skip("chromium not found (.ci/run installs Debian's chromium; apt-get install -y chromium)")
    truth = PhantomTruth()
    stats, stop = StreamStats(), threading.Event()
    info = {"model": {"model": "phantom annotations (through the runtime's post-processing)", "sha256": "-",
                      "classes": ["background", "MID", "VTB", "EPI"], "recipe": {"name": "none"},
                      "provider": "none", "usseg": "test", "onnxruntime": "-", "time": "now"},
            "source": "phantom sweep, 15 fps", "calibration": {"spacing_mm": 0.1, "spacing_source": "user"}}
    view = LiveView(port=0, info=info, stats=stats)
    pipeline = run_pipeline(truth, view, stats, stop)
    try:
        with Browser(executable) as browser:
            page = browser.open(view.url)
            # Frames arrive...
            page.wait_for("window.usseg && window.usseg.frames >= 3")
            first = page.wait_for(PIXELS_JS)
            seq0 = page.evaluate("window.usseg.seq")
            # ... and change.
            page.wait_for(f"window.usseg.frames >= 10 && window.usseg.seq > {seq0 + 5}")
            second = page.wait_for(PIXELS_JS)
            assert first[:2] == second[:2] == [640, 480] and first[2] != second[2]
            # Readouts show each frame's values, and update as the probe sweeps.
            seen = set()
            deadline = time.monotonic() + GUARD_S
            while len(seen) < 3 and time.monotonic() < deadline:
                shown = page.evaluate(READOUTS_JS)
                expected = truth.expected(shown["index"])
                for name, (text, unit) in ((k, v) for k, v in shown.items() if k not in ("index", "frames")):
                    if expected[name] is None:
                        assert text == "-" and unit == ""
                    else:  # the text the overlay shows for this frame
                        assert text == f"{expected[name]:.1f}"
                        assert unit == ("deg" if name == "midline_angle" else "mm")
                if expected["midline_offset"] is not None:
                    seen.add(shown["midline_offset"][0])
                time.sleep(0.15)
            assert len(seen) >= 3, seen
            page.wait_for("window.usseg.statusUpdates >= 2 && document.getElementById('stat-fps').textContent !== '-'")
            assert page.evaluate("document.getElementById('state').textContent") == "live"
            assert page.evaluate("document.getElementById('stat-spacing').textContent") == "0.1000 mm/px (user)"
            png = page.screenshot()
            shot = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)
            assert shot.shape[0] > 400 and shot.shape[1] > 600 and shot.std() > 10
            (tmp_path / "live_view.png").write_bytes(png)
            if os.environ.get("USSEG_DOCS_SCREENSHOT"):
                (ROOT / "docs" / "live_view.png").write_bytes(png)
            # Closing the page leaves the stream running.
            page.close()
            wait_until(lambda: not view.viewers, "the closed page's viewer is gone")
            processed = stats.processed
            wait_until(lambda: stats.processed > processed + 5, "the stream goes on after the page closed")
            assert pipeline.is_alive()
    finally:
        stop.set()
        pipeline.join(GUARD_S)
        view.close()


def test_provenance_of_a_pipeline_without_model_info():
    """The Triton client has no model file here: its provenance comes from its contract."""
    from types import SimpleNamespace

    from usseg.runtime.preprocess import get_recipe
    from usseg.runtime.provenance import provenance

    contract = SimpleNamespace(classes=("background", "MID"), recipe=get_recipe("realtime"), output="labels",
                               provenance={"precision": "fp16"})
    seg = SimpleNamespace(path="http://triton:8000/v2/models/usseg", contract=contract, provider="triton triton:8000")
    prov = provenance(seg)
    assert prov["sha256"] is None and prov["model"] == seg.path and prov["provider"] == "triton triton:8000"
    assert prov["recipe"] == get_recipe("realtime").to_dict() and prov["precision"] == "fp16"
    assert prov["onnxruntime"] and prov["time"].endswith("+00:00")
    from results_schema import validate

    validate(prov, "provenance")
