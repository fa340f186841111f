"""The label-map clean-up chosen on val: the steps against scipy.ndimage, nnU-Net's selection rule
on hand-made val predictions, the finisher and ``usseg evaluate`` applying and stating it, and
``usseg train`` recording it in best.pt's contract."""

import json

import numpy as np
import pytest
import torch
from scipy import ndimage

from usseg.runtime.cleanup import apply_steps, cleanup_plan, content_of, describe, fill_holes, keep_largest
from usseg.runtime.contract import Contract, InputSpec, PostprocessSpec
from usseg.runtime.finish import Finisher
from usseg.runtime.preprocess import Letterbox, get_recipe
from usseg.train.checkpoint import load_checkpoint, save_checkpoint
from usseg.train.evaluate import main as evaluate_main
from usseg.train.evaluate import torch_predictor
from usseg.train.maskfolder import write_classes, write_item, write_split
from usseg.train.model import build_model, get_model_config
from usseg.train.postprocess_choice import ValFrame, choose

CLASSES = ("background", "nerve", "vessel")


def random_map(seed, shape=(40, 48)):
    """Blobs of classes 1 and 2 on background: many regions, holes, regions touching each other."""
    rng = np.random.default_rng(seed)
    noise = ndimage.gaussian_filter(rng.random(shape), 1.5)
    return np.digitize(noise, np.quantile(noise, [0.5, 0.75])).astype(np.uint8)


@pytest.mark.parametrize("seed", range(5))
def test_keep_largest_matches_scipy(seed):
    labels = random_map(seed)
    out = labels.copy()
    keep_largest(out, 1)
    regions, count = ndimage.label(labels == 1, structure=np.ones((3, 3)))
    sizes = ndimage.sum_labels(np.ones_like(regions), regions, index=np.arange(1, count + 1))
    largest = int(np.argmax(sizes)) + 1  # the first of equal sizes, as scipy numbers them
    expected = labels.copy()
    expected[(labels == 1) & (regions != largest)] = 0
    assert count > 1
    np.testing.assert_array_equal(out, expected)


@pytest.mark.parametrize("seed", range(5))
def test_fill_holes_matches_scipy(seed):
    labels = random_map(seed)
    out = labels.copy()
    fill_holes(out, 2)
    holes = ndimage.binary_fill_holes(labels == 2) & (labels == 0)
    expected = np.where(holes, 2, labels).astype(np.uint8)
    np.testing.assert_array_equal(out, expected)


def test_fill_holes_leaves_other_classes_in_a_hole():
    labels = np.zeros((9, 9), np.uint8)
    labels[1:8, 1:8] = 1
    labels[3:6, 3:6] = 0
    labels[4, 4] = 2
    fill_holes(labels, 1)
    assert (labels[3:6, 3:6] == 1).sum() == 8 and labels[4, 4] == 2


def frame(truth, pred):
    """A val frame at model size equal to the frame's own size (an identity letterbox)."""
    h, w = truth.shape
    return ValFrame(pred.astype(np.uint8), Letterbox.fit(h, w, h, w), truth.astype(np.uint8))


def test_choice_keeps_a_step_only_where_val_dice_does_not_fall():
    """nerve: one structure, predicted with a stray blob and a hole -> both steps raise its Dice,
    both kept. vessel: two structures, predicted exactly, one of them a ring whose hole is
    background in the truth -> keeping the largest or filling the hole lowers its Dice: neither."""
    truth = np.zeros((30, 40), np.uint8)
    truth[2:12, 2:12] = 1
    truth[20:28, 2:10] = 2
    truth[18:29, 20:31] = 2
    truth[21:26, 23:28] = 0  # the ring's hole is a real one
    pred = truth.copy()
    pred[5:7, 5:7] = 0       # a hole in the nerve
    pred[2:5, 30:34] = 1     # a stray nerve blob
    kept, report = choose([frame(truth, pred)], CLASSES)
    assert kept == {"largest_component": ["nerve"], "fill_holes": ["nerve"]}
    nerve, vessel = report["nerve"], report["vessel"]
    assert nerve["largest_component"]["dice_after"] > nerve["largest_component"]["dice_before"]
    assert nerve["fill_holes"]["dice_after"] == pytest.approx(1.0)
    assert vessel["largest_component"]["dice_after"] < vessel["largest_component"]["dice_before"] == 1.0
    assert vessel["fill_holes"]["dice_after"] < 1.0 and not vessel["fill_holes"]["kept"]


def test_choice_skips_a_step_that_changes_nothing_and_a_class_without_truth():
    truth = np.zeros((20, 20), np.uint8)
    truth[5:10, 5:10] = 1
    pred = truth.copy()
    pred[15:18, 15:18] = 2  # vessel predicted where no val truth has it: its Dice is undefined
    kept, report = choose([frame(truth, pred)], CLASSES)
    assert kept == {"largest_component": [], "fill_holes": []}
    assert report["nerve"]["largest_component"] == {"dice_before": 1.0, "dice_after": 1.0, "changed": False,
                                                    "kept": False}
    assert report["vessel"]["largest_component"]["dice_before"] is None


def test_choice_scores_at_frame_size_inside_the_letterbox():
    """A model-size map letterboxed from a wider frame: a blob in the padding is not the frame's."""
    box = Letterbox.fit(10, 40, 20, 40)  # content rows 5..14
    truth = np.zeros((10, 40), np.uint8)
    truth[2:8, 2:20] = 1
    labels = box.apply_mask(truth)
    labels[0:5, 10:40] = 1  # in the padding, larger than the nerve (150 px against 108): left alone
    labels[6:8, 30:33] = 1  # a stray blob in the content
    kept, _ = choose([ValFrame(labels, box, truth)], CLASSES)
    assert kept["largest_component"] == ["nerve"]
    cleaned = apply_steps(labels, cleanup_plan(CLASSES, ["nerve"], []), content_of(box))
    assert (cleaned[0:5, 10:40] == 1).all() and not cleaned[6:8, 30:33].any()
    assert (cleaned[7:13, 2:20] == 1).all()


def contract_with(**cleanup):
    return Contract(classes=CLASSES, input=InputSpec(height=32, width=40), recipe=get_recipe("none"),
                    postprocess=PostprocessSpec(kind="none", **cleanup))


def test_finisher_applies_the_contract_cleanup():
    labels = np.zeros((32, 40), np.uint8)
    labels[4:14, 4:14] = 1
    labels[8:10, 8:10] = 0   # a hole
    labels[20:23, 30:33] = 1  # a stray blob
    labels[20:30, 2:8] = 2
    labels[25:27, 20:24] = 2
    box = Letterbox.fit(32, 40, 32, 40)
    plain = Finisher(contract_with())(labels, box)
    np.testing.assert_array_equal(plain.labels, labels)
    result = Finisher(contract_with(largest_component=["nerve"], fill_holes=["nerve"]))(labels, box)
    expected = labels.copy()
    expected[8:10, 8:10] = 1
    expected[20:23, 30:33] = 0
    np.testing.assert_array_equal(result.labels, expected)
    np.testing.assert_array_equal(result.masks["nerve"], expected == 1)
    np.testing.assert_array_equal(result.masks["vessel"], labels == 2)  # not listed: as it was


def tiny_checkpoint(path, **cleanup):
    cfg = get_model_config("tiny")
    torch.manual_seed(0)
    model = build_model(cfg, len(CLASSES))
    contract = Contract(classes=CLASSES, input=InputSpec(height=cfg.height, width=cfg.width),
                        recipe=get_recipe("none"), postprocess=PostprocessSpec(kind="none", **cleanup))
    save_checkpoint(path, {"epoch": 0, "model_state_dict": model.state_dict(), "model_config": cfg.to_dict(),
                           "contract": contract.to_dict()})
    return model.eval(), contract


def test_checkpoint_predictor_applies_the_cleanup(tmp_path):
    model, plain = tiny_checkpoint(tmp_path / "a.pt")
    _, cleaned = tiny_checkpoint(tmp_path / "b.pt", largest_component=["nerve", "vessel"])
    frame_ = np.random.default_rng(3).integers(0, 255, (64, 80), dtype=np.uint8)  # model size: no padding
    raw = torch_predictor(model, plain)(frame_)
    expected = apply_steps(raw, cleanup_plan(CLASSES, ["nerve", "vessel"], []))
    assert not np.array_equal(raw, expected)  # the untrained model's map has stray regions to remove
    np.testing.assert_array_equal(torch_predictor(model, cleaned)(frame_), expected)


def test_evaluate_states_the_cleanup(tmp_path, capsys):
    mask = np.zeros((40, 50), np.uint8)
    mask[10:20, 10:20] = 1
    write_item(tmp_path / "data", "a", (mask * 100).astype(np.uint8), mask)
    write_classes(tmp_path / "data", CLASSES)
    write_split(tmp_path / "data" / "split.csv", {"a": "test"})
    tiny_checkpoint(tmp_path / "m.pt", fill_holes=["vessel"])
    assert evaluate_main(["--model", str(tmp_path / "m.pt"), "--data", str(tmp_path / "data"),
                          "--out", str(tmp_path / "eval")]) == 0
    assert "post-processing chosen on val, applied: largest component: none; fill holes: vessel" in \
        capsys.readouterr().out
    result = json.loads((tmp_path / "eval" / "eval_test.json").read_text())
    assert result["postprocess_chosen_on_val"] == {"largest_component": [], "fill_holes": ["vessel"]}


def test_describe_names_every_step():
    assert describe({"largest_component": ["MID", "EPI"]}) == "largest component: MID, EPI; fill holes: none"


def test_train_records_the_choice_in_best_checkpoint(tiny_run):
    """The tiny run's best.pt carries what the end of training chose on val, and metrics.json why."""
    final = json.loads((tiny_run / "metrics.json").read_text())["final"]
    chosen = final["postprocess"]
    assert chosen["frames"] == final["frames"]["val"] > 0
    contract = Contract.from_dict(load_checkpoint(tiny_run / "best.pt")["contract"])
    for step in ("largest_component", "fill_holes"):
        assert list(getattr(contract.postprocess, step)) == chosen[step]
        for name, steps in chosen["classes"].items():
            entry = steps[step]
            assert entry["kept"] == (name in chosen[step])
            if entry["kept"]:
                assert entry["changed"] and entry["dice_after"] >= entry["dice_before"]
