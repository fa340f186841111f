"""usseg predict at its input boundary: every input its own outputs, a file that fails is that
file's failure alone, results.json always written, bad values one line and exit code 2, outputs
with the user's umask, and nothing outside --out changed."""

import json
import os
import stat

import cv2
import numpy as np
import pytest
from boundary_support import no_traceback, run_usseg, tree_digest
from onnx_tiny import tiny_model

from usseg.runtime.infer import main as infer_main
from usseg.runtime.segmenter import Segmenter


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return tiny_model(tmp_path_factory.mktemp("model") / "tiny.onnx")


@pytest.fixture(scope="module")
def seg(model):
    return Segmenter(model, device="cpu")


def frame(seed, shape=(48, 64)):
    return np.random.default_rng(seed).integers(0, 255, shape, dtype=np.uint8)


def write(path, image):
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), image)
    return path


def predict(model, *args):
    return infer_main(["--model", str(model), *map(str, args), "--device", "cpu", "--no-progress"])


def test_predict_gives_same_named_inputs_their_own_outputs(model, seg, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    inputs = [write(tmp_path / "a" / "x.png", frame(1)), write(tmp_path / "b" / "x.png", frame(2)),
              write(tmp_path / "a" / "x.tiff", frame(3))]
    given = ["a/x.png", "b/x.png", "a/x.tiff", "./a/x.png"]  # the last is the first again
    before = tree_digest(tmp_path)
    assert predict(model, *given, "--out", "out", "--save-masks") == 0
    assert tree_digest(tmp_path, skip=tmp_path / "out") == before
    doc = json.loads((tmp_path / "out" / "results.json").read_text())
    assert doc["outputs"] == {"a/x.png": ["x_overlay.png", "x_mask.png"], "b/x.png": ["x-2_overlay.png", "x-2_mask.png"],
                              "a/x.tiff": ["x-3_overlay.png", "x-3_mask.png"]}
    assert [(r["file"], r["overlay"], r["mask"]) for r in doc["frames"]] == [
        ("a/x.png", "x_overlay.png", "x_mask.png"), ("b/x.png", "x-2_overlay.png", "x-2_mask.png"),
        ("a/x.tiff", "x-3_overlay.png", "x-3_mask.png")]
    for path, record in zip(inputs, doc["frames"]):  # each mask is its own input's
        mask = cv2.imread(str(tmp_path / "out" / record["mask"]), cv2.IMREAD_UNCHANGED)
        assert np.array_equal(mask, seg(cv2.imread(str(path), cv2.IMREAD_UNCHANGED)).labels)


def test_predict_never_overwrites_an_input_lying_in_out(model, tmp_path):
    out = tmp_path / "out"
    write(out / "x.png", frame(1))
    write(out / "x_overlay.png", frame(2))
    before = tree_digest(out)
    assert predict(model, out / "x.png", out / "x_overlay.png", "--out", out) == 0
    after = tree_digest(out)
    assert {k: v for k, v in after.items() if k in before} == before
    doc = json.loads((out / "results.json").read_text())
    assert doc["outputs"] == {str(out / "x.png"): ["x-2_overlay.png"],
                              str(out / "x_overlay.png"): ["x_overlay_overlay.png"]}


def test_predict_file_that_cannot_be_written_is_that_files_failure(model, tmp_path, capsys):
    write(tmp_path / "in" / "a.png", frame(1))
    write(tmp_path / "in" / "b.png", frame(2))
    (tmp_path / "out" / "a_overlay.png").mkdir(parents=True)  # a folder where a's overlay goes
    assert predict(model, tmp_path / "in", "--out", tmp_path / "out") == 1
    doc = json.loads((tmp_path / "out" / "results.json").read_text())
    assert [r["file"] for r in doc["frames"]] == [str(tmp_path / "in" / "b.png")]
    assert doc["failures"] == [{"file": str(tmp_path / "in" / "a.png"),
                                "error": f"{tmp_path / 'in' / 'a.png'}: {tmp_path / 'out' / 'a_overlay.png'}: "
                                         f"cannot be written (Is a directory)"}]
    captured = capsys.readouterr()
    assert "1 frames, 1 failed" in captured.out and no_traceback(captured.err)


def test_predict_unreadable_file_and_folder_are_failures_and_the_batch_goes_on(model, tmp_path):
    good = write(tmp_path / "in" / "good.png", frame(1))
    locked = write(tmp_path / "in" / "locked.png", frame(2))
    closed = tmp_path / "closed"
    write(closed / "hidden.png", frame(3))
    locked.chmod(0)
    closed.chmod(0)
    try:
        before = tree_digest(tmp_path / "in")
        done = run_usseg(["predict", "--model", str(model), "in", "closed", "closed/hidden.png", "--out", "out",
                          "--device", "cpu", "--no-progress"], cwd=tmp_path)
        assert tree_digest(tmp_path / "in") == before
    finally:
        locked.chmod(0o644)
        closed.chmod(0o755)
    assert done.returncode == 1, done.stderr
    assert no_traceback(done.stderr)
    doc = json.loads((tmp_path / "out" / "results.json").read_text())
    assert [r["file"] for r in doc["frames"]] == ["in/good.png"] and (tmp_path / "out" / "good_overlay.png").is_file()
    assert doc["failures"] == [
        {"file": "closed", "error": "closed: cannot list this folder (Permission denied)"},
        {"file": "in/locked.png", "error": "in/locked.png: cannot be read (Permission denied)"},
        {"file": "closed/hidden.png", "error": "closed/hidden.png: cannot be read (Permission denied)"}]
    assert "1 frames, 3 failed" in done.stdout
    assert good.is_file()


def test_predict_unwritable_out_is_one_line(model, tmp_path):
    write(tmp_path / "in" / "a.png", frame(1))
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        done = run_usseg(["predict", "--model", str(model), "in", "--out", "locked/out", "--device", "cpu"],
                         cwd=tmp_path)
    finally:
        locked.chmod(0o755)
    assert done.returncode == 2
    assert done.stderr.strip() == "error: locked/out: cannot create this folder (Permission denied)"
    assert not (locked / "out").exists()


@pytest.mark.parametrize("spacing", ["nan", "inf", "-1", "0"])
def test_predict_checks_spacing_before_the_model_loads(tmp_path, capsys, spacing):
    write(tmp_path / "in" / "a.png", frame(1))
    rc = infer_main(["--model", str(tmp_path / "missing.onnx"), str(tmp_path / "in"), "--out", str(tmp_path / "out"),
                     "--spacing", spacing])
    assert rc == 2
    assert f"--spacing {float(spacing)}: must be a number > 0" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_predict_with_no_usable_input_is_a_setup_error(model, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert predict(model, tmp_path / "empty", "--out", tmp_path / "out") == 2
    assert "no input images found" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_predict_outputs_follow_the_umask(model, tmp_path, umask):
    write(tmp_path / "in" / "a.png", frame(1))
    old = os.umask(umask)
    try:
        assert predict(model, tmp_path / "in", "--out", tmp_path / "out" / "deep", "--save-masks") == 0
    finally:
        os.umask(old)
    written = sorted(p.name for p in (tmp_path / "out" / "deep").iterdir())
    assert written == ["a_mask.png", "a_overlay.png", "results.json"]
    for name in written:
        assert stat.S_IMODE((tmp_path / "out" / "deep" / name).stat().st_mode) == 0o666 & ~umask
    for folder in (tmp_path / "out", tmp_path / "out" / "deep"):
        assert stat.S_IMODE(folder.stat().st_mode) == 0o777 & ~umask
