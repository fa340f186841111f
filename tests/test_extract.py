"""usseg extract: a recording (video, DICOM cine, camera) -> PNG frames to label, with the DICOM
spacing kept beside them; and back in through usseg prepare."""

import itertools
import json

import cv2
import numpy as np
import pytest
from test_dicom import grey_cine, region, write_dicom

from usseg.runtime import extract
from usseg.runtime.extract import main as extract_main
from usseg.runtime.sources import ArraySource
from usseg.train.maskfolder import open_mask_folder
from usseg.train.prepare import main as prepare_main


@pytest.fixture
def sweep(tmp_path):
    """12 grey frames at 20 frames/s, frame i at brightness 20 * i."""
    path = tmp_path / "rec" / "sweep.avi"
    path.parent.mkdir()
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 20.0, (64, 48), isColor=False)
    for i in range(12):
        writer.write(np.full((48, 64), 20 * i, np.uint8))
    writer.release()
    return path


def manifest(out):
    return json.loads((out / "extract.json").read_text())


def test_every_nth_frame_of_a_video_is_written_with_its_index_and_time(sweep, tmp_path, capsys):
    out = tmp_path / "frames"
    assert extract_main(["--source", str(sweep), "--every", "5", "--out", str(out)]) == 0
    doc = manifest(out)
    assert [f["file"] for f in doc["frames"]] == ["sweep_000000.png", "sweep_000005.png", "sweep_000010.png"]
    assert [f["time_s"] for f in doc["frames"]] == [0.0, 0.25, 0.5] and doc["fps"] == pytest.approx(20)
    assert doc["spacing_mm"] is None and doc["spacing_source"] == "none" and doc["ended_by"] == "end of source"
    for f in doc["frames"]:
        image = cv2.imread(str(out / f["file"]), cv2.IMREAD_GRAYSCALE)
        assert image.shape == (48, 64) and abs(float(image.mean()) - 20 * f["frame"]) < 3
    assert sorted(p.name for p in out.iterdir()) == ["extract.json", *[f["file"] for f in doc["frames"]]]
    assert "wrote 3 frames" in capsys.readouterr().out


def test_a_dicom_cine_keeps_its_frames_exactly_and_its_spacing_beside_them(tmp_path, capsys):
    frames = grey_cine(n=4)
    path = write_dicom(tmp_path / "cine.dcm", frames, PixelSpacing=[0.2, 0.2], FrameTime=50.0,
                       SequenceOfUltrasoundRegions=[region(0, 6, 47, 39, 0.015, 0.015)])
    out = tmp_path / "frames"
    assert extract_main(["--source", str(path), "--every", "2", "--out", str(out)]) == 0
    doc = manifest(out)
    assert doc["spacing_mm"] == pytest.approx(0.15) and doc["spacing_source"] == "ultrasound-regions"
    assert doc["skin_y"] == 6.0 and doc["fps"] == pytest.approx(20)
    assert [f["frame"] for f in doc["frames"]] == [0, 2]
    for f in doc["frames"]:
        assert np.array_equal(cv2.imread(str(out / f["file"]), cv2.IMREAD_UNCHANGED), frames[f["frame"]])
    assert "pixel spacing 0.15 mm (ultrasound-regions)" in capsys.readouterr().out


def test_a_source_without_end_stops_at_count(tmp_path, monkeypatch):
    endless = (np.full((24, 32), i % 256, np.uint8) for i in itertools.count())
    monkeypatch.setattr(extract, "open_source", lambda source: ArraySource(endless, "camera 0", fps=None))
    out = tmp_path / "frames"
    assert extract_main(["--source", "0", "--every", "3", "--count", "4", "--out", str(out)]) == 0
    doc = manifest(out)
    assert [f["file"] for f in doc["frames"]] == [f"camera0_{i:06d}.png" for i in (0, 3, 6, 9)]
    assert doc["ended_by"] == "--count 4"


def test_unreadable_frames_are_counted_and_the_rest_kept(tmp_path, monkeypatch, caplog):
    frames = [np.zeros((24, 32), np.uint8), None, np.ones((24, 32), np.uint8)]
    monkeypatch.setattr(extract, "open_source", lambda source: ArraySource(frames, "frames"))
    out = tmp_path / "frames"
    assert extract_main(["--source", "0", "--out", str(out)]) == 1
    assert [f["frame"] for f in manifest(out)["frames"]] == [0, 2] and manifest(out)["failed"] == 1
    assert "frame 1: frame 1: got NoneType, not an array" in caplog.text


@pytest.mark.parametrize("where, words", [
    ("source folder", "contains the source"),
    ("documents", "exists and is not a frame folder (no extract.json)"),
])
def test_out_is_refused_before_anything_is_written(sweep, tmp_path, capsys, where, words):
    out = sweep.parent if where == "source folder" else tmp_path / "documents"
    out.mkdir(exist_ok=True)
    (out / "notes.txt").write_text("keep me")
    assert extract_main(["--source", str(sweep), "--out", str(out), "--overwrite"]) == 2
    assert words in capsys.readouterr().err and (out / "notes.txt").read_text() == "keep me"


def test_a_missing_source_and_bad_options_are_one_line(tmp_path, capsys):
    assert extract_main(["--source", str(tmp_path / "none.mp4"), "--out", str(tmp_path / "f")]) == 2
    assert extract_main(["--source", "x.mp4", "--every", "0", "--out", str(tmp_path / "f")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: {tmp_path / 'none.mp4'}: video file not found", "error: --every 0: must be 1 or more"]
    assert not (tmp_path / "f").exists()


def test_from_a_recording_to_a_labelling_tool_and_back(tmp_path):
    """extract -> label (LabelMe files naming the extracted frames) -> prepare --from labelme."""
    path = write_dicom(tmp_path / "cine.dcm", grey_cine(n=6, h=32, w=48), PixelSpacing=[0.1, 0.1])
    frames = tmp_path / "frames"
    assert extract_main(["--source", str(path), "--every", "2", "--out", str(frames)]) == 0
    labels = tmp_path / "labelme"
    labels.mkdir()
    for f in manifest(frames)["frames"]:
        doc = {"shapes": [{"label": "nerve", "shape_type": "rectangle", "points": [[4, 4], [20, 16]]}],
               "imagePath": f["file"], "imageData": None, "imageHeight": 32, "imageWidth": 48}
        (labels / f["file"].replace(".png", ".json")).write_text(json.dumps(doc))
    assert prepare_main(["--from", "labelme", "--annotations", str(labels), "--images", str(frames),
                         "--out", str(tmp_path / "data"), "--val", "0", "--test", "0"]) == 0
    folder = open_mask_folder(tmp_path / "data")
    assert folder.ids() == ["cine_000000", "cine_000002", "cine_000004"]
    image, mask = folder.load("cine_000002")
    assert np.array_equal(image, cv2.imread(str(frames / "cine_000002.png"), cv2.IMREAD_GRAYSCALE))
    assert (mask[4:16, 4:20] == 1).all() and mask.sum() == 12 * 16
