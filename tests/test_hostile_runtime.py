"""The runtime against size bombs, running out of memory, shared output folders, full disks and
SIGTERM: each a failure of one input or one line naming what happened, never a traceback or lost
results (usseg predict and usseg stream)."""

import errno
import json
import os
import struct
import tracemalloc
import zlib

import cv2
import numpy as np
import pytest
from boundary_support import no_traceback, tree_digest
from hostile_support import lock_held, terminated
from onnx_tiny import tiny_model
from test_dicom import write_dicom

from usseg.runtime import fileio, imageio, sources
from usseg.runtime.errors import WriteError
from usseg.runtime.imageio import DEFAULT_MAX_PIXELS, read_image
from usseg.runtime.infer import main as infer_main
from usseg.runtime.preprocess import to_grey8
from usseg.runtime.stream_cli import main as stream_main


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return tiny_model(tmp_path_factory.mktemp("model") / "tiny.onnx")


def frame(seed, shape=(48, 64), dtype=np.uint8):
    top = 255 if dtype == np.uint8 else 65535
    return np.random.default_rng(seed).integers(0, top, shape, dtype=dtype)


def predict(model, *args):
    return infer_main(["--model", str(model), *map(str, args), "--device", "cpu", "--no-progress"])


@pytest.fixture
def decodes(monkeypatch):
    """The shapes cv2.imdecode was asked to decode (a bomb must never get there)."""
    calls, real = [], cv2.imdecode

    def recording(data, flags):
        image = real(data, flags)
        calls.append(None if image is None else image.shape[:2])
        return image

    monkeypatch.setattr(imageio.cv2, "imdecode", recording)
    return calls


# -- size bombs ------------------------------------------------------------------------------------
@pytest.mark.parametrize("name, image", [
    ("grey8.png", frame(1, (120, 100))),
    ("deep.png", frame(2, (120, 100), np.uint16)),
    ("colour.jpg", frame(3, (120, 100, 3))),
    ("deep.tif", frame(4, (120, 100), np.uint16)),
    ("colour.bmp", frame(5, (120, 100, 3))),
])
def test_an_image_over_the_pixel_budget_is_refused_from_its_header(model, tmp_path, decodes, capsys, name, image):
    """Each kind, made small with a low --max-pixels: refused before decoding, the others go on."""
    cv2.imwrite(str(tmp_path / name), image)
    cv2.imwrite(str(tmp_path / "small.png"), frame(6, (40, 50)))
    out = tmp_path / "out"
    assert predict(model, tmp_path / name, tmp_path / "small.png", "--out", out, "--max-pixels", "10000") == 1
    doc = json.loads((out / "results.json").read_text())
    message = (f"{tmp_path / name}: a frame of 100x120 (12,000 pixels) is over the limit of 10,000 pixels per frame "
               f"(--max-pixels N to allow more)")
    assert doc["failures"] == [{"file": str(tmp_path / name), "error": message}]
    assert [r["file"] for r in doc["frames"]] == [str(tmp_path / "small.png")]
    assert decodes == [(40, 50)]                                  # the bomb was never decoded
    assert no_traceback(capsys.readouterr().err)


def png_header_claiming(width, height):
    """A PNG whose header declares width x height 16-bit grey pixels, with one tiny data chunk."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 16, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
            + chunk(b"IEND", b""))


def test_the_default_budget_refuses_a_32768_square_png_without_decoding_it(tmp_path, decodes):
    path = tmp_path / "bomb.png"
    path.write_bytes(png_header_claiming(32768, 32768))
    with pytest.raises(imageio.FrameTooLarge, match=r"bomb.png: a frame of 32768x32768 \(1,073,741,824 pixels\) "
                                                    r"is over the limit of 16,777,216 pixels"):
        read_image(path)
    assert decodes == [] and DEFAULT_MAX_PIXELS == 4096 * 4096
    small = tmp_path / "ok.png"
    cv2.imwrite(str(small), frame(1, (4096, 8)))
    assert read_image(small).shape == (4096, 8)                      # within the budget: read as ever


def test_a_file_too_large_to_hold_a_frame_within_the_budget_is_not_read(tmp_path, decodes):
    path = tmp_path / "padded.png"
    with open(path, "wb") as f:
        f.write(png_header_claiming(2, 2))
        f.truncate(imageio.FILE_SLACK + 8 * 100 + 1)   # sparse: nothing really written
    with pytest.raises(imageio.FrameTooLarge, match=r"padded.png: a file of 16,778,017 bytes is larger than an image "
                                                    r"within the limit of 100 pixels per frame can be"):
        read_image(path, max_pixels=100)
    assert decodes == []


def test_a_dicom_over_the_budget_is_refused_before_its_pixels_are_decoded(model, tmp_path, monkeypatch):
    import pydicom.pixels

    write_dicom(tmp_path / "big.dcm", frame(1, (2, 120, 100), np.uint16), bits_stored=12)
    monkeypatch.setattr(pydicom.pixels, "pixel_array", lambda *a, **k: pytest.fail("pixels decoded"))
    out = tmp_path / "out"
    assert predict(model, tmp_path / "big.dcm", "--out", out, "--max-pixels", "11999") == 1
    [failure] = json.loads((out / "results.json").read_text())["failures"]
    assert failure["error"] == (f"{tmp_path / 'big.dcm'}: a frame of 100x120 (12,000 pixels) is over the limit of "
                                f"11,999 pixels per frame (--max-pixels N to allow more)")


def write_video(path, frames, fps=20.0):
    height, width = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (width, height))
    for f in frames:
        writer.write(f)
    writer.release()
    return path


def test_a_video_whose_frames_are_over_the_budget_is_refused_before_the_first_frame(model, tmp_path, capsys):
    video = write_video(tmp_path / "clip.avi", [frame(i, (48, 64, 3)) for i in range(4)])
    before = tree_digest(tmp_path)
    assert stream_main(["--model", str(model), "--source", str(video), "--out", str(tmp_path / "out"),
                        "--device", "cpu", "--max-pixels", "3000"]) == 2
    err = capsys.readouterr().err
    assert f"{video}: a frame of 64x48 (3,072 pixels) is over the limit of 3,000 pixels" in err and no_traceback(err)
    assert tree_digest(tmp_path) == before                          # nothing written, no folder made


def test_a_large_frame_in_a_folder_stream_fails_alone(model, tmp_path):
    folder = tmp_path / "frames"
    folder.mkdir()
    for i in range(4):
        cv2.imwrite(str(folder / f"f{i}.png"), frame(i, (96, 128) if i == 2 else (48, 64)))
    out = tmp_path / "out"
    assert stream_main(["--model", str(model), "--source", str(folder), "--out", str(out), "--video", "none",
                        "--device", "cpu", "--max-pixels", "5000"]) == 1
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["processed"], summary["failed"]) == (3, 1)
    assert summary["errors"] == [f"{folder / 'f2.png'}: a frame of 128x96 (12,288 pixels) is over the limit of "
                                 f"5,000 pixels per frame (--max-pixels N to allow more)"]


@pytest.mark.parametrize("value, words", [("0", "must be at least 4"), ("many", "is not a whole number")])
def test_max_pixels_is_checked_as_an_option(model, tmp_path, capsys, value, words):
    with pytest.raises(SystemExit) as stop:
        predict(model, tmp_path, "--out", tmp_path / "out", "--max-pixels", value)
    assert stop.value.code == 2 and words in capsys.readouterr().err


# -- deep frames: exact, and no float64 copy ---------------------------------------------------------
@pytest.mark.parametrize("bits", [10, 12, 16])
def test_deep_frames_are_scaled_exactly_without_a_float64_copy(bits):
    top = (1 << bits) - 1
    levels = np.arange(top + 1, dtype=np.uint16)
    exact = np.array([(510 * v + top) // (2 * top) for v in range(top + 1)], np.uint8)  # round(v * 255 / top)
    assert np.array_equal(to_grey8(np.tile(levels, (2, 1)), bits)[0], exact)
    big = np.random.default_rng(bits).integers(0, top + 1, (1000, 1500), dtype=np.uint16)
    tracemalloc.start()
    grey = to_grey8(big, bits)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert np.array_equal(grey, exact[big])
    assert peak < 2 * big.size  # the 8-bit result and a level table; float64 would be 8 bytes a pixel


# -- out of memory ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("error", [MemoryError(), cv2.error("OpenCV(4.x) Insufficient memory")])
def test_out_of_memory_on_one_file_is_that_files_failure(model, tmp_path, monkeypatch, error):
    if isinstance(error, cv2.error):
        error.code = cv2.Error.StsNoMem
    for name in ("a", "b", "c"):
        cv2.imwrite(str(tmp_path / f"{name}.png"), frame(ord(name)))
    real = sources.read_image

    def failing(path, max_pixels):
        if path.name == "b.png":
            raise error
        return real(path, max_pixels)

    monkeypatch.setattr(sources, "read_image", failing)
    out = tmp_path / "out"
    assert predict(model, tmp_path / "a.png", tmp_path / "b.png", tmp_path / "c.png", "--out", out) == 1
    doc = json.loads((out / "results.json").read_text())
    assert [r["file"] for r in doc["frames"]] == [str(tmp_path / "a.png"), str(tmp_path / "c.png")]
    assert doc["failures"] == [{"file": str(tmp_path / "b.png"), "error": f"{tmp_path / 'b.png'}: out of memory while "
                                f"segmenting it (a smaller --max-pixels refuses such frames up front)"}]


# -- one run per output folder ----------------------------------------------------------------------------
def test_a_second_predict_into_the_same_folder_is_refused_naming_the_first(model, tmp_path, capsys):
    cv2.imwrite(str(tmp_path / "a.png"), frame(1))
    out = tmp_path / "out"
    with lock_held(out, "usseg predict first.png --out out") as pid:
        before = tree_digest(out)
        assert predict(model, tmp_path / "a.png", "--out", out) == 2
        assert tree_digest(out) == before
    err = capsys.readouterr().err
    assert f"{out}: another usseg run is writing into this folder (pid {pid} on " in err
    assert "usseg predict first.png --out out" in err and no_traceback(err)
    assert predict(model, tmp_path / "a.png", "--out", out) == 0     # the holder is gone: a stale lock is taken
    assert "taking over the lock left by pid" in capsys.readouterr().err
    assert not (out / fileio.LOCK_NAME).exists()


def test_stream_takes_the_same_lock(model, tmp_path, capsys):
    video = write_video(tmp_path / "clip.avi", [frame(i, (48, 64, 3)) for i in range(3)])
    with lock_held(tmp_path / "out", "usseg predict x --out out") as pid:
        assert stream_main(["--model", str(model), "--source", str(video), "--out", str(tmp_path / "out"),
                            "--device", "cpu"]) == 2
    assert f"(pid {pid} on " in capsys.readouterr().err


def test_the_lock_nests_within_a_process_and_leaves_no_folder_it_made(tmp_path):
    out = tmp_path / "a" / "b"
    with fileio.output_lock(out, "outer"):
        with fileio.output_lock(out, "inner"):  # the demo runs other commands into its own folder
            assert (out / fileio.LOCK_NAME).is_file()
        assert (out / fileio.LOCK_NAME).is_file()
    assert not (tmp_path / "a").exists()


def test_a_lock_file_that_is_a_link_is_not_followed(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    target = tmp_path / "precious.txt"
    target.write_text("keep")
    (out / fileio.LOCK_NAME).symlink_to(target)
    with pytest.raises(fileio.OutputLockedError, match="cannot be used as the run's lock file"):
        with fileio.output_lock(out, "usseg predict"):
            pass
    assert target.read_text() == "keep"


# -- full disk --------------------------------------------------------------------------------------------
def no_space(monkeypatch, module, name_part):
    """Writes through fileio.write_bytes / write_text whose target's name holds ``name_part`` fail with ENOSPC."""
    real_bytes, real_text = fileio.Path.write_bytes, fileio.Path.write_text

    def check(path):
        if name_part in path.name:
            raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(fileio.Path, "write_bytes", lambda self, data: (check(self), real_bytes(self, data))[1])
    monkeypatch.setattr(fileio.Path, "write_text", lambda self, text, **k: (check(self), real_text(self, text, **k))[1])


def test_predict_on_a_full_disk_names_results_json_and_keeps_the_old_one(model, tmp_path, monkeypatch, capsys):
    cv2.imwrite(str(tmp_path / "a.png"), frame(1))
    out = tmp_path / "out"
    out.mkdir()
    (out / "results.json").write_text('{"old": true}')
    no_space(monkeypatch, fileio, "results.json")
    assert predict(model, tmp_path / "a.png", "--out", out) == 1
    err = capsys.readouterr().err
    assert err.strip().splitlines()[-1] == f"error: {out / 'results.json'}: cannot be written (No space left on device)"
    assert (out / "results.json").read_text() == '{"old": true}'
    assert sorted(p.name for p in out.iterdir()) == ["a_overlay.png", "results.json"]  # no temporaries


def test_predict_stops_at_a_full_disk_instead_of_failing_every_file(model, tmp_path, monkeypatch, caplog):
    for name in ("a", "b", "c"):
        cv2.imwrite(str(tmp_path / f"{name}.png"), frame(ord(name)))
    no_space(monkeypatch, fileio, "b_overlay")
    out = tmp_path / "out"
    assert predict(model, tmp_path / "a.png", tmp_path / "b.png", tmp_path / "c.png", "--out", out) == 1
    doc = json.loads((out / "results.json").read_text())
    assert [r["file"] for r in doc["frames"]] == [str(tmp_path / "a.png")]
    assert doc["failures"] == [
        {"file": str(tmp_path / "b.png"),
         "error": f"{tmp_path / 'b.png'}: {out / 'b_overlay.png'}: cannot be written (No space left on device)"},
        {"file": str(tmp_path / "c.png"), "error": f"{tmp_path / 'c.png'}: not segmented: the disk was full"}]


def test_stream_on_a_full_disk_names_the_file_and_keeps_the_old_outputs(model, tmp_path, monkeypatch, capsys):
    video = write_video(tmp_path / "clip.avi", [frame(i, (48, 64, 3)) for i in range(6)])
    out = tmp_path / "out"
    out.mkdir()
    (out / "results.jsonl").write_text('{"index": 0}\n')
    (out / "summary.json").write_text('{"old": true}\n')
    before = tree_digest(out)
    no_space(monkeypatch, fileio, "summary.json")
    assert stream_main(["--model", str(model), "--source", str(video), "--out", str(out), "--video", "avi",
                        "--device", "cpu"]) == 1
    err = capsys.readouterr().err
    assert f"error: {out / 'summary.json'}: cannot write the stream's summary (No space left on device)" in err
    assert no_traceback(err)
    assert tree_digest(out) == before  # results.jsonl and the video were not put in place without their summary


# -- SIGTERM ----------------------------------------------------------------------------------------------
@pytest.fixture
def many_frames(tmp_path):
    folder = tmp_path / "frames"
    folder.mkdir()
    image = frame(1, (96, 128))
    for i in range(400):
        cv2.imwrite(str(folder / f"f{i:03d}.png"), image)
    return folder


def test_sigterm_stops_predict_like_ctrl_c_with_results_json(model, tmp_path, many_frames):
    out = tmp_path / "out"
    done = terminated(["predict", "--model", str(model), str(many_frames), "--out", str(out), "--device", "cpu",
                       "--no-progress"], tmp_path, ready=lambda: (out / "f002_overlay.png").exists())
    assert done.returncode == 143, done.stderr
    doc = json.loads((out / "results.json").read_text())
    assert doc["interrupted"] is True and doc["stopped_by"] == "SIGTERM" and 3 <= len(doc["frames"]) < 400
    # the stop came between two files: every overlay written is listed, every frame listed has its overlay
    assert sorted(p.name for p in out.glob("*_overlay.png")) == sorted(r["overlay"] for r in doc["frames"])
    assert f"error: stopped (SIGTERM) after {len(doc['frames'])} frames; wrote {out / 'results.json'}" in done.stderr
    assert no_traceback(done.stderr) and not (out / fileio.LOCK_NAME).exists()


def test_sigterm_stops_a_stream_like_ctrl_c_with_its_outputs(model, tmp_path, many_frames):
    out = tmp_path / "out"
    done = terminated(["stream", "--model", str(model), "--source", str(many_frames), "--out", str(out),
                       "--video", "avi", "--device", "cpu", "--pace", "--fps", "50"], tmp_path,
                      ready=lambda: any(p.name.startswith(".results.jsonl") for p in out.glob(".*")))
    assert done.returncode == 0, done.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["ended_by"] == "interrupted (SIGTERM)" and 0 < summary["processed"] < 400
    lines = (out / "results.jsonl").read_text().splitlines()
    # every line whole; the frame in flight when the signal came may be counted and not written, as with Ctrl-C
    assert summary["processed"] - 1 <= len(lines) <= summary["processed"] and all(json.loads(line) for line in lines)
    assert (out / "overlay.avi").stat().st_size > 0
    assert no_traceback(done.stderr) and not (out / fileio.LOCK_NAME).exists()


def test_an_atomic_write_on_a_full_disk_names_the_file_and_keeps_the_old_one(tmp_path, monkeypatch):
    target = tmp_path / "results.json"
    target.write_text("old")
    no_space(monkeypatch, fileio, "results.json")
    with pytest.raises(WriteError, match=r"results.json: cannot be written \(No space left on device\)$") as caught:
        fileio.write_json(target, {"new": 1})
    assert caught.value.exit_code == 1 and caught.value.errno == errno.ENOSPC
    assert target.read_text() == "old" and os.listdir(tmp_path) == ["results.json"]


def test_a_folder_replaced_on_a_full_disk_names_the_folder_and_the_file(tmp_path, monkeypatch):
    data = tmp_path / "data"
    (data / "images").mkdir(parents=True)
    (data / "split.csv").write_text("old")
    no_space(monkeypatch, fileio, "b.png")
    with pytest.raises(WriteError) as caught:
        with fileio.replace_dir(data) as tmp:
            fileio.write_bytes(tmp / "images" / "a.png", b"a")
            fileio.write_bytes(tmp / "images" / "b.png", b"b")
    assert str(caught.value) == (f"{data}: cannot write this folder (No space left on device, writing "
                                 f"{os.path.join('images', 'b.png')})")
    assert sorted(os.listdir(tmp_path)) == ["data"] and (data / "split.csv").read_text() == "old"


def test_a_stream_that_runs_out_of_memory_keeps_what_it_did(model, tmp_path, monkeypatch):
    from usseg.runtime.segmenter import Segmenter

    real, calls = Segmenter.__call__, []

    def running_out(self, image):
        calls.append(1)
        if len(calls) == 3:
            raise MemoryError()
        return real(self, image)

    monkeypatch.setattr(Segmenter, "__call__", running_out)
    video = write_video(tmp_path / "clip.avi", [frame(i, (48, 64, 3)) for i in range(6)])
    out = tmp_path / "out"
    assert stream_main(["--model", str(model), "--source", str(video), "--out", str(out), "--video", "none",
                        "--device", "cpu", "--policy", "all"]) == 1
    summary = json.loads((out / "summary.json").read_text())
    assert summary["ended_by"].startswith("out of memory after 2 frames") and summary["processed"] == 2
    assert len((out / "results.jsonl").read_text().splitlines()) == 2
