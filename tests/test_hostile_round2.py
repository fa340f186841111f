"""Hostile and clumsy inputs beyond the ones issue 31 listed, each one case: damaged files of every
kind, degenerate frame shapes, non-finite float frames, odd paths (links that loop, pipes, folders
named like options, Unicode, names too long to extend), lock files that are not what they should
be, and an output folder on a file system that fills up. No traceback, every other input still
processed, nothing written outside the output folder."""

import json
import os
import struct
import subprocess
import sys

import cv2
import numpy as np
import pytest
from boundary_support import no_traceback, tree_digest
from onnx_tiny import tiny_model
from test_dicom import write_dicom

from usseg.runtime import fileio
from usseg.runtime.infer import main as infer_main
from usseg.runtime.stream_cli import main as stream_main


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return tiny_model(tmp_path_factory.mktemp("model") / "tiny.onnx")


def frame(seed, shape=(48, 64), dtype=np.uint8):
    return np.random.default_rng(seed).integers(0, 255, shape, dtype=dtype)


def encoded(suffix, image):
    ok, data = cv2.imencode(suffix, image)
    assert ok
    return data.tobytes()


def damaged_inputs(folder):
    """{file name: what it is}; each written into ``folder``."""
    png, jpg, bmp = encoded(".png", frame(1)), encoded(".jpg", frame(2)), encoded(".bmp", frame(3))
    tif = bytearray(encoded(".tif", frame(4)))
    tif[4:8] = struct.pack("<I", 10**9)                                        # first directory far past the end
    cases = {
        "cut.png": png[: len(png) // 2],                                       # truncated PNG
        "cut.bmp": bmp[:200],                                                  # BMP shorter than its header says
        "lost-ifd.tif": bytes(tif),                                            # TIFF pointing outside itself
        "empty.png": b"",                                                      # zero bytes
        "text.jpg": b"this is not a picture at all",                           # wrong content
        "half.jpg": jpg[:30],                                                  # JPEG cut inside its header
    }
    for name, data in cases.items():
        (folder / name).write_bytes(data)
    ds = write_dicom(folder / "whole.dcm", frame(5, (2, 40, 48)))
    (folder / "cut.dcm").write_bytes(ds.read_bytes()[:-1500])                  # truncated DICOM pixel data
    os.unlink(ds)
    return sorted(cases) + ["cut.dcm"]


def test_damaged_files_of_every_kind_are_each_a_failure_of_their_own(model, tmp_path, capsys):
    folder = tmp_path / "in"
    folder.mkdir()
    names = damaged_inputs(folder)
    cv2.imwrite(str(folder / "good.png"), frame(9))
    out = tmp_path / "out"
    assert infer_main(["--model", str(model), str(folder), "--out", str(out), "--device", "cpu", "--no-progress"]) == 1
    doc = json.loads((out / "results.json").read_text())
    assert [r["file"] for r in doc["frames"]] == [str(folder / "good.png")]
    failed = {f["file"]: f["error"] for f in doc["failures"]}
    assert sorted(failed) == sorted(str(folder / n) for n in names)
    for name in names:
        assert failed[str(folder / name)].startswith(f"{folder / name}: ") and "\n" not in failed[str(folder / name)]
    assert no_traceback(capsys.readouterr().err)


@pytest.mark.parametrize("shape, ok", [
    ((1, 5000), False),     # one row: too small to be a frame
    ((5000, 1), False),     # one column
    ((2, 60000), True),     # 30000:1 wide: letterboxed into a sliver, still segmented
    ((60000, 2), True),     # 1:30000 tall
    ((3, 8000), True),
])
def test_degenerate_shapes_and_extreme_aspect_ratios(model, tmp_path, shape, ok):
    cv2.imwrite(str(tmp_path / "odd.png"), frame(1, shape))
    out = tmp_path / "out"
    code = infer_main(["--model", str(model), str(tmp_path / "odd.png"), "--out", str(out), "--device", "cpu",
                       "--no-progress", "--save-masks"])
    doc = json.loads((out / "results.json").read_text())
    if ok:
        assert code == 0 and doc["frames"][0]["size"] == list(shape)
        assert cv2.imread(str(out / "odd_mask.png"), cv2.IMREAD_UNCHANGED).shape == shape
    else:
        assert code == 1 and doc["failures"][0]["error"].endswith("frame is empty or too small")


@pytest.mark.parametrize("dtype, poison", [(np.float32, np.nan), (np.float32, np.inf), (np.float64, -np.inf)])
def test_float_tiffs_with_non_finite_values_are_refused_by_name(model, tmp_path, dtype, poison):
    image = np.random.default_rng(0).random((48, 64)).astype(dtype)
    image[3, 4] = poison
    assert cv2.imwrite(str(tmp_path / "float.tif"), image)
    out = tmp_path / "out"
    assert infer_main(["--model", str(model), str(tmp_path / "float.tif"), "--out", str(out), "--device", "cpu",
                       "--no-progress"]) == 1
    [failure] = json.loads((out / "results.json").read_text())["failures"]
    assert failure["error"] == f"{tmp_path / 'float.tif'}: frame has NaN or infinite values"


def test_links_that_loop_pipes_and_folders_are_named_for_what_they_are(model, tmp_path, capsys):
    (tmp_path / "a.png").symlink_to("b.png")
    (tmp_path / "b.png").symlink_to("a.png")
    os.mkfifo(tmp_path / "pipe.png")                # reading it would block for ever
    (tmp_path / "folder.png").mkdir()
    out = tmp_path / "out"
    code = infer_main(["--model", str(model), *(str(tmp_path / n) for n in ("a.png", "pipe.png")), "--out", str(out),
                       "--device", "cpu", "--no-progress"])
    assert code == 1
    errors = [f["error"] for f in json.loads((out / "results.json").read_text())["failures"]]
    assert errors == [f"{tmp_path / 'a.png'}: a symbolic link that leads nowhere (broken, or a loop)",
                      f"{tmp_path / 'pipe.png'}: not a regular file (a pipe, socket or device)"]
    for source, words in (("a.png", "a symbolic link that leads nowhere"), ("pipe.png", "not a regular file")):
        assert stream_main(["--model", str(model), "--source", str(tmp_path / source), "--out", str(tmp_path / "s"),
                            "--device", "cpu"]) == 2
        assert f"{tmp_path / source}: {words}" in capsys.readouterr().err
    assert not (tmp_path / "s").exists()


@pytest.mark.parametrize("kind, words", [
    ("folder", "a folder, not a file"),
    ("pipe", "not a regular file (a pipe, socket or device)"),
    ("loop", "a symbolic link that leads nowhere (broken, or a loop)"),
])
def test_a_model_that_is_not_a_file_is_named_before_anything_starts(tmp_path, capsys, kind, words):
    model = tmp_path / "model.onnx"
    if kind == "folder":
        model.mkdir()
    elif kind == "pipe":
        os.mkfifo(model)                             # reading it would block for ever
    else:
        model.symlink_to(model)
    cv2.imwrite(str(tmp_path / "a.png"), frame(1))
    assert infer_main(["--model", str(model), str(tmp_path / "a.png"), "--out", str(tmp_path / "out")]) == 2
    assert stream_main(["--model", str(model), "--source", str(tmp_path), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.count(f"error: --model {model}: {words}") == 2 and not (tmp_path / "out").exists()


def test_unicode_paths_and_a_folder_named_like_an_option(model, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    folder = tmp_path / "--help"
    folder.mkdir()
    cv2.imwrite(str(folder / "x.png"), frame(1))
    name = "日本語 ünïcødé 🩻.png"
    (folder / name).write_bytes(encoded(".png", frame(2)))
    out = tmp_path / "résultats ✓"
    assert infer_main(["--model", str(model), "--out", str(out), "--device", "cpu", "--no-progress", "--", "--help"]) == 0
    doc = json.loads((out / "results.json").read_text())
    assert doc["outputs"] == {"--help/x.png": ["x_overlay.png"], f"--help/{name}": [f"{name[:-4]}_overlay.png"]}
    assert (out / f"{name[:-4]}_overlay.png").is_file()


def test_an_input_whose_output_name_would_be_too_long_fails_alone(model, tmp_path):
    long_name = "x" * 240 + ".png"                  # 240 + "_overlay.png" is past the 255-byte limit
    cv2.imwrite(str(tmp_path / long_name), frame(1))
    cv2.imwrite(str(tmp_path / "short.png"), frame(2))
    out = tmp_path / "out"
    assert infer_main(["--model", str(model), str(tmp_path / long_name), str(tmp_path / "short.png"), "--out",
                       str(out), "--device", "cpu", "--no-progress"]) == 1
    doc = json.loads((out / "results.json").read_text())
    assert [r["file"] for r in doc["frames"]] == [str(tmp_path / "short.png")]
    assert doc["failures"][0]["error"].endswith("_overlay.png: cannot be written (File name too long)")
    assert sorted(os.listdir(out)) == ["results.json", "short_overlay.png"]   # no temporaries


def test_a_lock_file_that_is_a_folder_is_refused_and_left_alone(model, tmp_path, capsys):
    out = tmp_path / "out"
    (out / fileio.LOCK_NAME).mkdir(parents=True)
    cv2.imwrite(str(tmp_path / "a.png"), frame(1))
    assert infer_main(["--model", str(model), str(tmp_path / "a.png"), "--out", str(out), "--device", "cpu",
                       "--no-progress"]) == 2
    assert f"{out / fileio.LOCK_NAME}: cannot be used as the run's lock file" in capsys.readouterr().err
    assert (out / fileio.LOCK_NAME).is_dir() and os.listdir(out) == [fileio.LOCK_NAME]


def test_a_lock_file_usseg_did_not_write_is_taken_over_saying_so(tmp_path, caplog):
    out = tmp_path / "out"
    out.mkdir()
    (out / fileio.LOCK_NAME).write_bytes(b"\x00garbage\x1b[31m not json")
    with fileio.output_lock(out, "usseg predict"):
        record = json.loads((out / fileio.LOCK_NAME).read_text())
        assert record["pid"] == os.getpid() and record["command"] == "usseg predict"
    assert caplog.messages == [f"{out}: taking over {fileio.LOCK_NAME}, which no running usseg holds and usseg "
                               f"did not write"]
    assert not (out / fileio.LOCK_NAME).exists()


def test_an_output_folder_on_a_small_file_system_that_fills_up(model, tmp_path):
    """--out on another file system, a 64 KiB tmpfs (root only): the overlays that fit are kept and
    listed, the rest are listed as not segmented, the old results.json stays."""
    small = tmp_path / "small"
    small.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(small)], capture_output=True,
                             check=False)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        folder = tmp_path / "in"
        folder.mkdir()
        for i in range(12):
            cv2.imwrite(str(folder / f"f{i:02d}.png"), frame(i, (120, 160)))
        out = small / "out"
        done = subprocess.run([sys.executable, "-m", "usseg.runtime.cli", "predict", "--model", str(model), str(folder),
                               "--out", str(out), "--device", "cpu", "--no-progress"], capture_output=True, text=True,
                              timeout=300, check=False)
        assert done.returncode == 1 and no_traceback(done.stderr), done.stderr
        assert "No space left on device" in done.stderr
        if (out / "results.json").exists():  # it fitted after the overlays that did
            doc = json.loads((out / "results.json").read_text())
            assert len(doc["frames"]) + len(doc["failures"]) == 12
        assert not [p for p in os.listdir(out) if p.startswith(".")]   # no temporaries, no lock
    finally:
        subprocess.run(["umount", str(small)], check=False)


def test_nothing_outside_the_output_folder_changes(model, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    damaged_inputs(folder)
    cv2.imwrite(str(folder / "good.png"), frame(9))
    before = tree_digest(tmp_path)
    infer_main(["--model", str(model), str(folder), "--out", str(tmp_path / "out"), "--device", "cpu", "--no-progress"])
    assert tree_digest(tmp_path, skip=tmp_path / "out") == before
