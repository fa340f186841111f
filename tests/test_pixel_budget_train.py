"""The pixel budget on the training side: prepare, plan, train and evaluate refuse a frame over the
budget by its header, naming the file and --max-pixels, and take it when --max-pixels allows it."""

import json

import cv2
import numpy as np
import pytest

from usseg.runtime.cli import main as usseg_main
from usseg.train import io as train_io
from usseg.train.evaluate import main as evaluate_main
from usseg.train.maskfolder import open_mask_folder, write_classes, write_item, write_split
from usseg.train.prepare import main as prepare_main
from usseg.train.train_cli import main as train_main

BIG = (4100, 4200)  # 17,220,000 pixels: over the default budget of 4096 x 4096 = 16,777,216
ALLOW = ["--max-pixels", "20000000"]


@pytest.fixture(autouse=True)
def default_budget(monkeypatch):
    """Each test starts from the default budget, and the one a command set ends with the test."""
    monkeypatch.setattr(train_io, "_budget", [train_io.DEFAULT_MAX_PIXELS])


def seed_set(root):
    """A seed-format set: one small frame and one over the default budget (a black PNG: small file)."""
    (root / "images").mkdir(parents=True)
    cv2.imwrite(str(root / "images" / "small.png"), np.full((60, 80), 90, np.uint8))
    cv2.imwrite(str(root / "images" / "big.png"), np.zeros(BIG, np.uint8))
    shapes = [["MID", "line", [[20, 5], [22, 50]]]]
    (root / "annotations.json").write_text(json.dumps({"small": shapes, "big": shapes}))
    return ["--annotations", str(root / "annotations.json"), "--images", str(root / "images")]


def big_mask_folder(root):
    """A mask folder whose one frame is over the default budget."""
    image = np.zeros(BIG, np.uint8)
    image[1000:2000, 1000:2000] = 200
    mask = (image > 0).astype(np.uint8)
    write_item(root, "big", image, mask)
    small = np.full((60, 80), 90, np.uint8)
    small[20:40, 30:50] = 200
    for item_id in ("small", "other"):
        write_item(root, item_id, small, (small > 100).astype(np.uint8))
    write_classes(root, ("background", "thing"))
    write_split(root / "split.csv", {"big": "train", "small": "val", "other": "test"})
    return root


def test_prepare_refuses_a_frame_over_the_budget_and_takes_it_when_allowed(tmp_path, caplog):
    source = seed_set(tmp_path / "src")
    prepare_main([*source, "--out", str(tmp_path / "default")])
    said = " ".join(r.getMessage() for r in caplog.records)
    assert "big.png" in said and "--max-pixels N to allow more" in said
    assert open_mask_folder(tmp_path / "default").ids() == ["small"]
    assert prepare_main([*source, "--out", str(tmp_path / "allowed"), *ALLOW]) == 0
    folder = open_mask_folder(tmp_path / "allowed")
    assert folder.ids() == ["big", "small"] and folder.load("big")[0].shape == BIG


def test_plan_reads_a_mask_folder_within_the_budget_it_is_given(tmp_path, caplog):
    data = big_mask_folder(tmp_path / "data")
    assert usseg_main(["plan", "--data", str(data), "--out", str(tmp_path / "p1"), "--device", "cpu"]) == 2
    assert any("big.png" in r.getMessage() and "--max-pixels" in r.getMessage() for r in caplog.records)
    assert usseg_main(["plan", "--data", str(data), "--out", str(tmp_path / "p2"), "--device", "cpu", *ALLOW]) == 0
    fingerprint = json.loads((tmp_path / "p2" / "fingerprint.json").read_text())
    assert fingerprint["frames"]["train"] == 1


def test_train_and_evaluate_refuse_without_the_option_and_work_with_it(tmp_path, caplog):
    data, run = big_mask_folder(tmp_path / "data"), tmp_path / "run"
    train = ["--data", str(data), "--out", str(run), "--profile", "tiny", "--device", "cpu", "--no-progress",
             "--epochs", "1"]
    assert train_main(train) == 2
    said = " ".join(r.getMessage() for r in caplog.records if r.levelname == "ERROR")
    assert "big.png" in said and "--max-pixels N to allow more" in said, said
    assert train_main([*train, *ALLOW]) == 0 and (run / "last.pt").is_file()
    caplog.clear()
    evaluate = ["--model", str(run / "last.pt"), "--data", str(data), "--split", "train", "--device", "cpu",
                "--out", str(tmp_path / "eval")]
    assert evaluate_main(evaluate) == 2
    said = " ".join(r.getMessage() for r in caplog.records if r.levelname == "ERROR")
    assert "big.png" in said and "--max-pixels N to allow more" in said, said
    assert evaluate_main([*evaluate, *ALLOW]) == 0
    assert json.loads((tmp_path / "eval" / "eval_train.json").read_text())["frames"] == 1
