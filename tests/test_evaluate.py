"""Evaluation: hand-made predictions with known Dice / HD95, geometry scores, the CLI."""

import json

import cv2
import numpy as np
import pytest
import torch

from usseg.runtime.contract import Contract, InputSpec, PostprocessSpec, default_postprocess
from usseg.runtime.preprocess import get_recipe
from usseg.train.checkpoint import save_checkpoint
from usseg.train.evaluate import (
    box_iou,
    endpoint_error,
    evaluate,
    flip_average,
    format_report,
    main,
    torch_predictor,
)
from usseg.train.maskfolder import open_mask_folder, write_classes, write_item, write_split
from usseg.train.metrics import label_dice
from usseg.train.model import build_model, get_model_config

CLASSES = ("background", "nerve", "vessel")


@pytest.fixture
def two_frames(tmp_path):
    """Frame a: nerve 10x10 (100 px), no vessel. Frame b: nerve 10x10, vessel 5x8 (40 px)."""
    a = np.zeros((40, 50), np.uint8)
    a[10:20, 10:20] = 1
    b = np.zeros((30, 60), np.uint8)
    b[5:15, 5:15] = 1
    b[20:25, 30:38] = 2
    for item, mask in (("a", a), ("b", b)):
        write_item(tmp_path, item, (mask * 100).astype(np.uint8), mask)
    write_classes(tmp_path, CLASSES)
    write_split(tmp_path / "split.csv", {"a": "test", "b": "test"})
    return open_mask_folder(tmp_path)


def known_predictor(frame):
    """a: nerve shifted by 5 columns (overlap 50 of 100 -> Dice 0.5) plus a stray vessel
    (vessel absent from a's truth: skipped); b: vessel exact (1.0), nerve missed (0.0)."""
    out = np.zeros(frame.shape, np.uint8)
    if frame.shape == (40, 50):
        out[10:20, 15:25] = 1
        out[30:35, 30:35] = 2
    else:
        out[20:25, 30:38] = 2
    return out


def test_dice_of_a_known_prediction(two_frames):
    result = evaluate(known_predictor, two_frames, "test")
    assert result["frames"] == 2
    assert result["dice"]["nerve"] == pytest.approx((0.5 + 0.0) / 2)  # mean over frames
    assert result["dice"]["vessel"] == pytest.approx(1.0)             # frame a skipped (absent)
    assert result["mean_dice"] == pytest.approx((0.25 + 1.0) / 2)
    assert result["missed"] == {"nerve": 1, "vessel": 0}
    per_frame = {f["id"]: f["dice"] for f in result["per_frame"]}
    assert per_frame["a"] == {"nerve": pytest.approx(0.5), "vessel": None}


def test_the_other_figures_of_a_known_prediction(two_frames):
    result = evaluate(known_predictor, two_frames, "test")
    # any frame with truth or prediction: nerve a 0.5, b 0.0; vessel a 0 (false positive), b 1.0
    assert result["dice_any_frame"] == {"nerve": pytest.approx(0.25), "vessel": pytest.approx(0.5)}
    # all pixels: nerve TP 50 of 100 predicted + 200 true; vessel TP 40 of 25 + 40 predicted + 40 true
    assert result["dice_aggregate"]["nerve"] == pytest.approx(2 * 50 / 300)
    assert result["dice_aggregate"]["vessel"] == pytest.approx(2 * 40 / 105)
    assert result["mean_dice_aggregate"] == pytest.approx((100 / 300 + 80 / 105) / 2)
    # the vessel is absent from frame a, predicted there: 1 false-positive frame of 1
    assert result["false_positive"]["vessel"] == {"frames": 1, "absent": 1, "share": 1.0}
    assert result["false_positive"]["nerve"] == {"frames": 0, "absent": 0, "share": None}  # never absent
    assert result["detection_rate"] == {"nerve": 0.5, "vessel": 1.0}
    assert set(result["definitions"]) >= {"dice", "dice_any_frame", "dice_aggregate", "false_positive",
                                          "detection_rate", "hd95_px"}
    per_frame = {f["id"]: f for f in result["per_frame"]}
    assert per_frame["a"]["dice_any_frame"] == {"nerve": pytest.approx(0.5), "vessel": 0.0}
    report = format_report(result)
    for head in ("Dice present", "Dice any", "Dice pixels", "FP frames", "detected"):
        assert head in report
    assert "    1/1   " in report  # vessel: 1 false-positive frame of 1 without a vessel


@pytest.mark.parametrize("pred, true, expected", [
    ([[0, 0]], [[0, 0]], [np.nan, np.nan]),     # neither has anything: undefined, not 1
    ([[1, 0]], [[0, 0]], [0.0, np.nan]),        # a false positive scores 0
    ([[1, 2]], [[1, 1]], [2 / 3, 0.0]),          # 1 of 1 + 2 for nerve; vessel only predicted
])
def test_label_dice_of_empty_maps_is_undefined(pred, true, expected):
    np.testing.assert_equal(label_dice(np.array(pred), np.array(true), 3), np.array(expected))


def test_hd95_of_a_known_prediction(two_frames):
    result = evaluate(known_predictor, two_frames, "test", spacing=0.5)
    # nerve: only frame a counts (b missed); its prediction is the square shifted by 5 px,
    # so no boundary point is further than 5 px from the other boundary, and some are 5 px away.
    assert 0 < result["hd95_px"]["nerve"] <= 5.0
    assert result["hd95_px"]["vessel"] == 0.0  # exact where present
    assert result["hd95_mm"]["nerve"] == pytest.approx(0.5 * result["hd95_px"]["nerve"])


def test_predictor_must_return_frame_size(two_frames):
    with pytest.raises(ValueError, match="predictor returned"):
        evaluate(lambda f: np.zeros((8, 8), np.uint8), two_frames, "test")


def test_missing_split_is_named(two_frames):
    with pytest.raises(ValueError, match=r"no 'val' frames; this data set has \['test'\]"):
        evaluate(known_predictor, two_frames, "val")


@pytest.mark.parametrize("pred, true, expected", [
    ([[0, 0], [10, 0]], [[0, 0], [10, 0]], 0.0),   # identical
    ([[10, 0], [0, 0]], [[0, 0], [10, 0]], 0.0),   # same line, end points listed the other way
    ([[0, 3], [10, 3]], [[0, 0], [10, 0]], 3.0),   # parallel, 3 px apart
    ([[0, 0], [10, 4]], [[0, 0], [10, 0]], 2.0),   # one end 4 px off: mean of 0 and 4
])
def test_endpoint_error(pred, true, expected):
    assert endpoint_error(np.array(pred, float), np.array(true, float)) == pytest.approx(expected)


def test_box_iou():
    square = np.array([[0, 0], [10, 0], [10, 10], [0, 10]], float)
    assert box_iou(square, square) == pytest.approx(1.0)
    assert box_iou(square, square + [5, 0]) == pytest.approx(50 / 150)
    assert box_iou(square, square + [20, 0]) == pytest.approx(0.0)


def test_spine_geometry_of_a_perfect_prediction(tmp_path):
    pytest.importorskip("usseg.runtime.postprocess")
    mask = np.zeros((240, 320), np.uint8)
    cv2.line(mask, (160, 20), (163, 200), 1, 10)
    cv2.rectangle(mask, (100, 200), (220, 225), 2, -1)
    cv2.line(mask, (130, 110), (195, 110), 3, 10)
    write_item(tmp_path, "x", mask * 60, mask)
    write_classes(tmp_path, ("background", "MID", "VTB", "EPI"))
    write_split(tmp_path / "split.csv", {"x": "test"})
    folder = open_mask_folder(tmp_path)
    result = evaluate(lambda f: mask.copy(), folder, "test", PostprocessSpec())
    geo = result["geometry"]
    assert geo["MID"]["endpoint_error_px"] == pytest.approx(0.0) and geo["MID"]["frames_both"] == 1
    assert geo["EPI"]["endpoint_error_px"] == pytest.approx(0.0)
    assert geo["VTB"]["box_iou"] == pytest.approx(1.0)


def _tiny_checkpoint(path, **extra):
    cfg = get_model_config("tiny")
    torch.manual_seed(0)
    model = build_model(cfg, len(CLASSES))
    contract = Contract(classes=CLASSES, input=InputSpec(height=cfg.height, width=cfg.width),
                        recipe=get_recipe("none"), postprocess=default_postprocess(CLASSES))
    save_checkpoint(path, {"epoch": 0, "model_state_dict": model.state_dict(), "model_config": cfg.to_dict(),
                           "contract": contract.to_dict(), **extra})
    return model.eval(), contract


@pytest.fixture
def carved(two_frames):
    """two_frames with both frames in train and no val split: a run carves its val out of train."""
    write_split(two_frames.root / "split.csv", {"a": "train", "b": "train"})
    return open_mask_folder(two_frames.root)


def test_val_of_a_set_without_one_is_the_frames_the_run_chose_on(carved, tmp_path, capsys):
    _tiny_checkpoint(tmp_path / "m.pt", val_ids=["b"])
    assert main(["--model", str(tmp_path / "m.pt"), "--data", str(carved.root), "--split", "val",
                 "--out", str(tmp_path / "eval")]) == 0
    result = json.loads((tmp_path / "eval" / "eval_val.json").read_text())
    assert result["frames"] == 1 and [f["id"] for f in result["per_frame"]] == ["b"]
    assert result["frames_from"] == f"the val {tmp_path / 'm.pt'} was chosen on"
    assert "1 frames from the val" in capsys.readouterr().out


@pytest.mark.parametrize(("val_ids", "message"), [
    (None, "does not record its val frames"),
    (["b", "../../etc/passwd"], "1 of its 2 val frames are not train frames"),
    ("b", "expected a non-empty list of frame ids"),
    ([], "expected a non-empty list of frame ids"),
])
def test_val_ids_from_a_checkpoint_are_checked_against_the_data_set(carved, tmp_path, capsys, val_ids, message):
    _tiny_checkpoint(tmp_path / "m.pt", **({} if val_ids is None else {"val_ids": val_ids}))
    assert main(["--model", str(tmp_path / "m.pt"), "--data", str(carved.root), "--split", "val"]) == 2
    err = capsys.readouterr().err
    assert message in err and str(tmp_path / "m.pt") in err and "Traceback" not in err


def test_an_exported_model_cannot_say_which_val_its_run_carved(carved, tmp_path, capsys):
    (tmp_path / "m.onnx").write_bytes(b"not read")
    assert main(["--model", str(tmp_path / "m.onnx"), "--data", str(carved.root), "--split", "val"]) == 2
    assert "evaluate the checkpoint (RUN/best.pt) instead" in capsys.readouterr().err


def test_a_val_split_of_the_data_set_wins_over_the_checkpoint(two_frames, tmp_path):
    write_split(two_frames.root / "split.csv", {"a": "val", "b": "test"})
    _tiny_checkpoint(tmp_path / "m.pt", val_ids=["b"])
    assert main(["--model", str(tmp_path / "m.pt"), "--data", str(two_frames.root), "--split", "val",
                 "--out", str(tmp_path / "eval")]) == 0
    result = json.loads((tmp_path / "eval" / "eval_val.json").read_text())
    assert [f["id"] for f in result["per_frame"]] == ["a"] and result["frames_from"] == "split.csv"


def test_torch_predictor_answers_at_frame_size(tmp_path):
    model, contract = _tiny_checkpoint(tmp_path / "m.pt")
    predict = torch_predictor(model, contract)
    for shape in ((50, 70), (120, 90)):  # other aspect ratios than the model's 64x80
        labels = predict(np.random.default_rng(0).integers(0, 255, shape, dtype=np.uint8))
        assert labels.shape == shape and labels.dtype == np.uint8 and labels.max() < len(CLASSES)


def test_cli_writes_json(two_frames, tmp_path, capsys):
    _tiny_checkpoint(tmp_path / "m.pt")
    assert main(["--model", str(tmp_path / "m.pt"), "--data", str(two_frames.root), "--spacing", "0.2",
                 "--out", str(tmp_path / "eval")]) == 0
    result = json.loads((tmp_path / "eval" / "eval_test.json").read_text())
    assert set(result["dice"]) == {"nerve", "vessel"} and "hd95_mm" in result and len(result["per_frame"]) == 2
    assert "nerve" in capsys.readouterr().out


def test_mirror_tta_is_mirror_symmetric(tmp_path):
    model, contract = _tiny_checkpoint(tmp_path / "m.pt")
    frame = np.random.default_rng(1).integers(0, 255, (64, 80), dtype=np.uint8)  # the model's size: no padding
    with_tta = torch_predictor(model, contract, tta=True)
    # the average of a frame's scores and its mirror's is the same for the frame and its mirror
    np.testing.assert_array_equal(with_tta(frame[:, ::-1].copy()), with_tta(frame)[:, ::-1])
    x = torch.rand(1, 1, 64, 80)
    with torch.no_grad():  # the scores are the mean of two softmaxes: still a distribution per pixel
        torch.testing.assert_close(flip_average(model, x).sum(1), torch.ones(1, 64, 80))


def test_cli_tta_is_recorded(two_frames, tmp_path, capsys):
    _tiny_checkpoint(tmp_path / "m.pt")
    assert main(["--model", str(tmp_path / "m.pt"), "--data", str(two_frames.root), "--tta",
                 "--out", str(tmp_path / "eval")]) == 0
    result = json.loads((tmp_path / "eval" / "eval_test_tta.json").read_text())
    assert result["tta"] is True and result["ms_per_frame"] > 0
    assert "mirror TTA" in capsys.readouterr().out


def test_cli_refuses_class_mismatch(two_frames, tmp_path):
    cfg = get_model_config("tiny")
    spine = ("background", "MID", "VTB", "EPI")
    contract = Contract(classes=spine, input=InputSpec(height=64, width=80), recipe=get_recipe("none"))
    save_checkpoint(tmp_path / "s.pt", {"epoch": 0, "model_state_dict": build_model(cfg, 4).state_dict(),
                                        "model_config": cfg.to_dict(), "contract": contract.to_dict()})
    assert main(["--model", str(tmp_path / "s.pt"), "--data", str(two_frames.root)]) == 2
