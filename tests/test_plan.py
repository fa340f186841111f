"""Plans from fingerprints: phantom-like (480x640, thin lines) and usgra-like (512x534, blobs) data
sets get different, stated decisions; each rule on its own; budget sizing with a fake timer."""

import json
import re
from dataclasses import fields, replace

import cv2
import numpy as np
import pytest

from usseg.train.budget import Clock, Timing, choose_network, parse_duration, size_run
from usseg.train.config import TrainConfig, resolve_config
from usseg.train.fingerprint import measure
from usseg.train.maskfolder import open_mask_folder, write_classes, write_item, write_split
from usseg.train.plan import Device, make_plan, plan_depth, plan_scale, receptive_field

CPU = Device.cpu(cores=2, memory_gib=24)


def _write(root, masks, classes, val=1):
    splits = {}
    rng = np.random.default_rng(0)
    for k, mask in enumerate(masks):
        image = (30 + 120 * (mask > 0) + rng.normal(0, 10, mask.shape)).clip(0, 255).astype(np.uint8)
        write_item(root, f"f{k}", image, mask)
        splits[f"f{k}"] = "val" if k < val else "train"
    write_classes(root, classes)
    write_split(root / "split.csv", splits)
    return open_mask_folder(root)


@pytest.fixture(scope="module")
def phantom_like(tmp_path_factory):
    """480x640 frames: a 10-px vertical midline (200-260 long), a 150x30 box, a 10-px line; one empty."""
    masks = []
    for k, length in enumerate((200, 220, 240, 260)):
        m = np.zeros((480, 640), np.uint8)
        cv2.line(m, (320 + 5 * k, 40), (320 + 5 * k, 40 + length), 1, 10)  # the seed draws 10-px lines
        cv2.rectangle(m, (250, 330), (400, 360), 2, -1)
        cv2.line(m, (280, 300), (370, 300), 3, 10)
        masks.append(m)
    masks.append(np.zeros((480, 640), np.uint8))
    folder = _write(tmp_path_factory.mktemp("phantom"), masks, ("background", "MID", "VTB", "EPI"))
    return measure(folder)


@pytest.fixture(scope="module")
def usgra_like(tmp_path_factory):
    """512x534 frames (one 632x761) with round nerves and vessels from 24 to 250 px across."""
    masks = []
    for k, (rn, rv) in enumerate(((12, 15), (25, 30), (45, 55), (80, 90), (120, 125))):
        shape = (632, 761) if k == 4 else (512, 534)
        m = np.zeros(shape, np.uint8)
        cv2.circle(m, (150, 250), rn, 1, -1)
        cv2.ellipse(m, (390, 250), (rv, int(rv * 0.8)), 0, 0, 360, 2, -1)
        masks.append(m)
    folder = _write(tmp_path_factory.mktemp("usgra"), masks, ("background", "nerve", "vessel"))
    return measure(folder)


def _size(plan):
    m = plan.config.model_config()
    return m.height, m.width


def test_plans_differ_as_the_data_sets_do(phantom_like, usgra_like):
    phantom, usgra = make_plan(phantom_like, CPU), make_plan(usgra_like, CPU)
    # input: each data set's median frame at about 76,800 pixels, aspect kept within the stride rule
    assert _size(phantom) == (240, 320)                      # 480x640 -> half, 4:3 exactly
    assert _size(usgra) == (272, 288)                        # 512x534 -> 0.53, 1.043 -> 1.059
    for plan, fp in ((phantom, phantom_like), (usgra, usgra_like)):
        h, w = _size(plan)
        step = 2 ** len(plan.config.model_config().strides)
        assert h % step == 0 and w % step == 0
        assert abs(w / h - fp.median_aspect) <= step / h
    # the thin lines are named and keep pixels; the blobs are not thin
    assert "thinnest structures (12 px, p5) keep 6.0 px" in phantom.reasons["model_overrides"]
    kept = re.search(r"thinnest structures \((\d+) px, p5\) keep ([\d.]+) px", usgra.reasons["model_overrides"])
    assert float(kept.group(2)) > 10                          # blobs stay far above THIN_MIN_PX
    # structure sizes vary far more in the blobs: a wider scale range
    assert phantom.config.augment_params().scale == pytest.approx(0.1)
    assert usgra.config.augment_params().scale == pytest.approx(0.2)
    # the boundary loss only for the lines (6 px at input size), never for the blobs
    assert phantom.config.hd_max == 0.2 and "thinnest structures are 6.0 px wide" in phantom.reasons["hd_max"]
    assert usgra.config.hd_max == 0 and usgra.reasons["hd_max"].startswith("0, DiceCE only")
    # intensity changes for the blobs, not for the few-pixel lines
    aug = usgra.config.augment_params()
    assert 0 < aug.intensity < 1 and aug.brightness > 0 and aug.contrast > 0 and aug.gamma > 0
    assert phantom.config.augment_params().intensity == 0
    assert "no brightness or contrast change: the thinnest structures are 6.0 px" in phantom.reasons["augmentation"]
    # every data set: no NLM, the data set's own val split
    for plan in (phantom, usgra):
        assert plan.config.recipe == "realtime"
        assert "val split (1 frames)" in plan.reasons["val_fraction"]
    # no budget: 4,000 optimiser steps of batch 4 (3 and 4 train frames here: one step per epoch)
    assert phantom.config.epochs == usgra.config.epochs == 4000 and phantom.config.batch_size == 4


def test_depth_covers_the_largest_structure(phantom_like, usgra_like):
    for fp in (phantom_like, usgra_like):
        plan = make_plan(fp, CPU)
        mcfg = plan.config.model_config()
        largest = max(c.extent_px["p95"] for c in fp.class_stats) * plan.info["scale"]
        depth = len(mcfg.strides)
        assert receptive_field(depth, mcfg.num_res_units) >= largest
        assert depth == 3 or receptive_field(depth - 1, mcfg.num_res_units) < largest  # no deeper than needed


def test_every_decision_has_a_reason_and_the_plan_loads_as_a_config(usgra_like, tmp_path):
    plan = make_plan(usgra_like, CPU)
    names = {f.name for f in fields(TrainConfig)}
    assert set(plan.reasons) <= names
    assert {"model_overrides", "batch_size", "epochs", "val_every", "patience", "augmentation", "recipe",
            "hd_max", "schedule", "val_fraction"} <= set(plan.reasons)
    path = tmp_path / "plan.json"
    path.write_text(json.dumps(plan.to_dict()))
    assert resolve_config("tiny", path) == plan.config         # reasons and plan info are read past
    edited = json.loads(path.read_text()) | {"epochs": 7}     # a user's edit is what trains
    path.write_text(json.dumps(edited))
    assert resolve_config("tiny", path).epochs == 7
    assert [c["channels"][0] for c in plan.candidates] == [8, 16, 16, 24, 32]  # narrowest first


@pytest.mark.parametrize("depth, res_units, expected", [
    # encoder 2+4 | 4+8 | 8+16 | 16+32 = 90, bottom 2 x 32 = 64, decoder (16+16)+(8+8)+(4+4)+(2+2) = 60
    (4, 2, 1 + 90 + 64 + 60),
    (3, 2, 1 + 42 + 32 + 28),
    # one conv per level: 2+4+8+16 = 30, bottom 32, decoder 60
    (4, 1, 1 + 30 + 32 + 60),
])
def test_receptive_field_by_hand(depth, res_units, expected):
    assert receptive_field(depth, res_units) == expected


def test_thin_structures_raise_the_input_scale(usgra_like):
    big = replace(usgra_like, median_height=1000.0, median_width=1000.0, median_aspect=1.0)
    assert plan_scale(big, CPU)[0] == pytest.approx(np.sqrt(76800 / 1e6))  # blobs: the pixel budget decides
    thin_stats = tuple(replace(c, thickness_px={**c.thickness_px, "p5": 3.0}) for c in big.class_stats)
    scale, why = plan_scale(replace(big, class_stats=thin_stats), CPU)
    assert scale == pytest.approx(5 / 3) or scale == 1.0     # never above full size
    assert "raised so that the thinnest structures (3 px, p5) keep 5 px" in why


def test_depth_is_capped_by_the_bottleneck(usgra_like):
    huge = tuple(replace(c, extent_px={**c.extent_px, "p95": 5000.0}) for c in usgra_like.class_stats)
    depth, why = plan_depth(replace(usgra_like, class_stats=huge), 0.5, 2)
    assert depth == 5  # 256 px short side / 2**5 = 8 px bottleneck
    assert "short of the largest structure" in why


def test_gpu_batch_follows_memory(usgra_like):
    many = replace(usgra_like, frames={"train": 400, "val": 40, "test": 0})
    big = make_plan(many, Device("cuda", 80.0, 16, "big"))
    small = make_plan(many, Device("cuda", 1.0, 16, "small"))
    assert big.config.batch_size in (4, 8, 16, 32) and small.config.batch_size == 2
    assert big.config.model_config().height > 400          # a GPU keeps nearly the full frame
    assert make_plan(usgra_like, CPU).config.batch_size == 4


# -- budget -------------------------------------------------------------------------------------

@pytest.mark.parametrize("text, seconds", [("40m", 2400), ("1h30m", 5400), ("90s", 90), ("45", 2700), ("1.5h", 5400)])
def test_parse_duration(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "soon", "10x", "0m", "5m what"])
def test_parse_duration_refuses(text):
    with pytest.raises(ValueError, match="--budget"):
        parse_duration(text)


def test_size_run_fills_the_budget():
    # 46 steps of 0.5 s = 23 s per epoch; 5 val batches of 0.2 s = 1 s per validation
    size = size_run(600, Timing(step_s=0.5, val_batch_s=0.2), steps_per_epoch=46, val_batches=5)
    assert size.val_every == 1                                  # 26 epochs / 20 validations -> 1
    assert size.epochs == 25                                    # 600 / (23 + 1) = 25
    assert size.seconds <= 600 and size.steps == 25 * 46
    assert size.patience == 8                                   # 30 % of 25 validations
    long = size_run(36000, Timing(0.5, 0.2), 46, 5)
    assert long.val_every == round(long.epochs / 20) and long.seconds <= 36000


def test_choose_network_takes_the_widest_that_fits():
    step = {"a": 0.1, "b": 0.3, "c": 1.0}
    timed = []

    def timer(name):
        timed.append(name)
        return Timing(step[name], 0.01)

    index, _ = choose_network(["a", "b", "c"], timer, seconds=600, steps_per_epoch=10, min_steps=1500)
    assert index == 1 and timed == ["a", "b", "c"]              # 600 / 0.3 = 2000 steps, 600 / 1.0 = 600
    timed.clear()
    index, _ = choose_network(["a", "b", "c"], timer, seconds=200, steps_per_epoch=10, min_steps=1500)
    assert index == 0 and timed == ["a", "b"]                   # none fits: the narrowest; c never timed


def test_clock_shortens_but_never_lengthens():
    now = [0.0]
    clock = Clock(deadline=350.0, now=lambda: now[0])
    clock.start(0)
    assert clock.fit_epochs(0, 10) == 10                        # nothing measured yet
    now[0] = 100.0                                              # one epoch took 100 s
    assert clock.fit_epochs(1, 10) == 3                         # 250 s left: epochs 1 and 2
    assert clock.fit_epochs(1, 2) == 2                          # faster than planned: not lengthened
    now[0] = 400.0                                              # past the deadline
    assert clock.fit_epochs(4, 10) == 5                         # one last, validated epoch
