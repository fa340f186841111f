"""Data set fingerprint: sizes, bit depth, intensities, class shares and objects on a hand-made mask folder."""

import json

import cv2
import numpy as np
import pytest

from usseg.train.fingerprint import Fingerprint, measure, object_stats, png_depth, read_fingerprint, write_fingerprint
from usseg.train.maskfolder import open_mask_folder, write_classes, write_item, write_split

CLASSES = ("background", "nerve", "vessel")


@pytest.fixture
def folder(tmp_path):
    """a: 40x60, nerve 10x20 box + vessel disc; b: 40x60, two nerve boxes; c: 50x50, empty;
    t (test split): 40x60, all vessel (must not be measured)."""
    a = np.zeros((40, 60), np.uint8)
    a[5:15, 10:30] = 1                       # 200 px, longest side 20, 10 thick
    cv2.circle(a, (45, 28), 6, 2, -1)         # a disc of radius 6
    b = np.zeros((40, 60), np.uint8)
    b[2:6, 2:42] = 1                          # 160 px, 40 long, 4 thick
    b[20:30, 40:50] = 1                       # 100 px, 10 long, 10 thick
    c = np.zeros((50, 50), np.uint8)
    t = np.full((40, 60), 2, np.uint8)
    for item, mask, split in (("a", a, "train"), ("b", b, "train"), ("c", c, "val"), ("t", t, "test")):
        write_item(tmp_path, item, (50 + 100 * (mask > 0)).astype(np.uint8), mask)
    write_classes(tmp_path, CLASSES)
    write_split(tmp_path / "split.csv", {"a": "train", "b": "train", "c": "val", "t": "test"})
    return open_mask_folder(tmp_path)


def test_fingerprint_measures_train_and_val_only(folder):
    fp = measure(folder)
    assert fp.frames == {"train": 2, "val": 1, "test": 1} and fp.measured_frames == 3
    assert fp.measured_splits == ("train", "val")
    assert fp.sizes == [{"height": 40, "width": 60, "count": 2}, {"height": 50, "width": 50, "count": 1}]
    assert (fp.median_height, fp.median_width, fp.median_aspect) == (40, 60, 1.5)
    assert fp.empty_frames == 1 and fp.empty_share == pytest.approx(1 / 3)
    assert fp.stored == [{"bit_depth": 8, "channels": 1, "count": 3}]
    nerve, vessel = fp.class_stats
    total = 2 * 40 * 60 + 50 * 50
    assert nerve.pixel_share == pytest.approx((200 + 160 + 100) / total, abs=1e-6)
    assert vessel.frames_present == 1  # the all-vessel test frame was not read
    assert nerve.frames_present == 2 and nerve.objects_per_frame["max"] == 2
    assert nerve.area_px["max"] == 200 and nerve.extent_px["max"] == 40
    assert nerve.mean_grey == pytest.approx(150) and fp.intensity["p99_5"] == 150


def test_object_stats_thickness_is_twice_the_inscribed_radius():
    mask = np.zeros((60, 80), np.uint8)
    mask[10:20, 5:45] = 1          # a 10-px band
    cv2.circle(mask, (60, 40), 8, 1, -1)
    areas, extents, thick = object_stats(mask)
    assert list(areas) == [400, int(mask[25:, 50:].sum())]
    assert list(extents) == [40, 17]
    assert thick[0] == pytest.approx(10, abs=0.5) and thick[1] == pytest.approx(17, abs=1.5)


def test_empty_mask_has_no_objects():
    areas, extents, thick = object_stats(np.zeros((5, 5), np.uint8))
    assert areas.size == extents.size == thick.size == 0


def test_png_depth_reads_the_header(tmp_path):
    cv2.imwrite(str(tmp_path / "g16.png"), np.zeros((4, 4), np.uint16))
    cv2.imwrite(str(tmp_path / "rgb.png"), np.zeros((4, 4, 3), np.uint8))
    (tmp_path / "x.png").write_bytes(b"not a png at all, really not")
    assert png_depth(tmp_path / "g16.png") == (16, 1)
    assert png_depth(tmp_path / "rgb.png") == (8, 3)
    assert png_depth(tmp_path / "x.png") is None


def test_fingerprint_json_round_trip(folder, tmp_path):
    fp = measure(folder, spacing_mm=0.1)
    write_fingerprint(tmp_path / "fp.json", fp)
    back = read_fingerprint(tmp_path / "fp.json")
    assert back == fp and back.spacing_source == "given"
    data = json.loads((tmp_path / "fp.json").read_text())
    data.pop("class_stats")
    with pytest.raises(ValueError, match="not a usseg fingerprint"):
        Fingerprint.from_dict(data)


def test_bad_spacing_and_empty_splits_are_named(folder):
    with pytest.raises(ValueError, match="spacing -1"):
        measure(folder, spacing_mm=-1)
    with pytest.raises(ValueError, match=r"no frames in the splits \[\] to measure"):
        measure(folder, splits=())
