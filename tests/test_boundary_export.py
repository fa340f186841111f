"""usseg export at its input boundary: a calibration folder that cannot give frames, and an --out
that cannot be the model file, are one line and exit code 2 before any tracing; nothing written."""

import cv2
import numpy as np
import pytest
from boundary_support import no_traceback, tree_digest

from usseg.export import pipeline
from usseg.export.cli import main as export_main
from usseg.train.prepare import main as prepare_main


@pytest.fixture
def checkpoint(tmp_path):
    path = tmp_path / "best.pt"
    path.write_bytes(b"never read: every check here comes before loading")
    return path


def empty_mask_folder(root):
    root.mkdir()
    (root / "images").mkdir()
    (root / "classes.json").write_text('{"0": "background", "1": "MID"}')
    (root / "split.csv").write_text("id,split\n")
    return root


@pytest.mark.parametrize("calibration, words", [
    ("missing", "--calibration {path}: folder not found"),
    ("empty", "--calibration {path}: no images (.png, .jpg, .jpeg, .tif, .tiff, .bmp)"),
    ("file", "--calibration {path}: not a folder"),
    ("empty mask folder", "--calibration {path}: the mask folder lists no frames"),
    ("broken mask folder", "--calibration {path}: {path}/classes.json: malformed JSON"),
])
def test_export_calibration_that_cannot_give_frames_is_one_line(tmp_path, checkpoint, capsys, calibration, words):
    path = tmp_path / calibration.replace(" ", "_")
    if calibration == "empty":
        path.mkdir()
    elif calibration == "file":
        path.write_text("not a folder")
    elif calibration != "missing":
        empty_mask_folder(path)
        if calibration == "broken mask folder":
            (path / "classes.json").write_text("{bad")
    before = tree_digest(tmp_path)
    assert export_main(["--model", str(checkpoint), "--out", str(tmp_path / "models"), "--int8",
                        "--calibration", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: " + words.format(path=path)) and len(err.strip().splitlines()) == 1
    assert tree_digest(tmp_path) == before


def test_export_calibration_from_a_mask_folder_passes_the_check(tmp_path, checkpoint):
    seed = tmp_path / "seed"
    (seed / "images").mkdir(parents=True)
    for i in range(4):
        cv2.imwrite(str(seed / "images" / f"f{i}.png"), np.full((32, 48), 40 * i, np.uint8))
    (seed / "annotations.json").write_text('{"f0": [], "f1": [], "f2": [], "f3": []}')
    assert prepare_main(["--annotations", str(seed / "annotations.json"), "--images", str(seed / "images"),
                         "--out", str(tmp_path / "data"), "--val", "0", "--test", "0"]) == 0
    opts = pipeline.ExportOptions(checkpoint=checkpoint, out=tmp_path / "m.onnx", precision="int8",
                                  calibration=tmp_path / "data")
    pipeline.check_inputs(opts)  # no error: the train split's four frames are there


@pytest.mark.parametrize("out, words", [
    ("folder.onnx", "{out}: is a folder; the model file must end in .onnx"),
    ("a-file", "--out {out}: exists and is not a folder"),
])
def test_export_out_that_cannot_be_the_model_file_is_one_line(tmp_path, checkpoint, capsys, out, words):
    target = tmp_path / out
    if out.endswith(".onnx"):
        target.mkdir()
    else:
        target.write_text("something")
    before = tree_digest(tmp_path)
    assert export_main([str(checkpoint), "-o", str(target)]) == 2
    err = capsys.readouterr().err
    assert words.format(out=target) in err and no_traceback(err)
    assert tree_digest(tmp_path) == before
