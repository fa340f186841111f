import json

import cv2
import numpy as np
import pytest
from usseg.train.io import DataError
from usseg.train.problems import ProblemLog
from usseg.train.seedformat import draw_mask, iter_seed_dataset, parse_shapes


def segment_distance(h, w, p1, p2):
    """Distance of every pixel centre to the segment p1-p2 (an independent line raster)."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    (x1, y1), (x2, y2) = p1, p2
    dx, dy = x2 - x1, y2 - y1
    t = np.clip(((xx - x1) * dx + (yy - y1) * dy) / max(dx * dx + dy * dy, 1e-9), 0, 1)
    return np.hypot(xx - (x1 + t * dx), yy - (y1 + t * dy))


def independent_mask(entries, h, w):
    mask = np.zeros((h, w), np.uint8)
    values = {"MID": 1, "VTB": 2, "EPI": 3}
    for label, kind, (p1, p2) in entries:
        if kind == "rect":
            (xa, ya), (xb, yb) = p1, p2
            mask[min(ya, yb):max(ya, yb) + 1, min(xa, xb):max(xa, xb) + 1] = values[label]
        else:
            mask[segment_distance(h, w, p1, p2) <= 5.0] = values[label]
    return mask


def test_sample_mask_matches_an_independent_drawing(seed_sample):
    entries, (h, w) = seed_sample.entries, seed_sample.size
    items = list(iter_seed_dataset(seed_sample.annotations, seed_sample.images))
    assert len(items) == 1
    item = items[0]
    # The canvas is the image's own (625x443 RGBA read as grey), not the seed's fixed 480x640.
    assert item.key == seed_sample.key and item.image.shape == item.mask.shape == (h, w)
    expected = independent_mask(entries, h, w)
    assert (item.mask == expected).mean() > 0.998
    for value in (1, 2, 3):
        a, b = item.mask == value, expected == value
        assert (a & b).sum() / (a | b).sum() > 0.9, value
    # The rectangle's interior is exact where nothing is drawn over it (rows below the MID line's
    # end and beside its 10-px band).
    (xa, ya), (xb, yb) = next(points for label, _, points in entries if label == "VTB")
    mid = next(points for label, _, points in entries if label == "MID")
    rows = slice(max(min(ya, yb), max(p[1] for p in mid) + 6), max(ya, yb) + 1)
    assert rows.start < rows.stop
    assert (item.mask[rows, min(xa, xb):max(xa, xb) + 1] == 2).all()


def test_later_shapes_draw_over_earlier_ones():
    shapes = parse_shapes([["VTB", "rect", [[0, 0], [19, 19]]], ["MID", "line", [[10, 0], [10, 19]]]], "t")
    mask = draw_mask(shapes, 20, 20)
    assert mask[10, 10] == 1 and mask[10, 1] == 2
    mask = draw_mask(shapes[::-1], 20, 20)
    assert mask[10, 10] == 2


@pytest.mark.parametrize("dtype,channels", [(np.uint8, 1), (np.uint8, 3), (np.uint8, 4), (np.uint16, 1), (np.uint16, 3)])
def test_reads_grey_rgb_rgba_8_and_16_bit(tmp_path, dtype, channels):
    images = tmp_path / "images"
    images.mkdir()
    top = 255 if dtype == np.uint8 else 65535
    grey = np.linspace(0, top, 40 * 50).reshape(40, 50).astype(dtype)
    img = grey if channels == 1 else np.dstack([grey] * 3 + ([np.full_like(grey, top)] if channels == 4 else []))
    cv2.imwrite(str(images / "f.png"), img)
    (tmp_path / "a.json").write_text(json.dumps({"f": [["MID", "line", [[25, 0], [25, 39]]]]}))
    [item] = iter_seed_dataset(tmp_path / "a.json", images)
    assert item.image.dtype == np.uint8 and item.image.shape == (40, 50)
    assert abs(int(item.image[-1, -1]) - 255) <= 1 and item.image[0, 0] == 0
    assert item.mask[20, 25] == 1


BAD_ENTRIES = [
    # (entry for key "a", words the message must contain)
    ([["XYZ", "line", [[1, 1], [5, 5]]]], "unknown label 'XYZ'"),
    ([["MID", "circle", [[1, 1], [5, 5]]]], "unknown shape 'circle'"),
    ([["MID", "line", [[1, 1], [5, 5], [6, 6]]]], "exactly 2 points, got 3"),
    ([["MID", "line", [[1, 1]]]], "exactly 2 points, got 1"),
    ([["MID", "line", [[1, 1], [500, 5]]]], "outside the 80x60 image"),
    ([["MID", "line", [[1, 1], [5, -1]]]], "outside the 80x60 image"),
    ([["MID", "line", [[1.5, 1], [5, 5]]]], "integers"),
    ("not a list", "expected a list"),
    ([["MID", "line"]], "expected [label, shape"),
]


@pytest.mark.parametrize("entry,words", BAD_ENTRIES)
def test_bad_entries_name_file_and_key(tiny_seed_dataset, entry, words):
    path, images = tiny_seed_dataset
    data = json.loads(path.read_text())
    data["a"] = entry
    path.write_text(json.dumps(data))
    with pytest.raises(DataError) as err:
        list(iter_seed_dataset(path, images))
    assert words in str(err.value) and "'a'" in str(err.value) and str(path) in str(err.value)
    problems = ProblemLog()
    items = list(iter_seed_dataset(path, images, problems=problems))
    assert [i.key for i in items] == ["b", "c"]
    assert problems.total == 1 and words in problems.shown[0]


def test_missing_and_unreadable_images(tiny_seed_dataset):
    path, images = tiny_seed_dataset
    (images / "a.png").unlink()
    (images / "b.png").write_bytes(b"not a png")
    problems = ProblemLog()
    items = list(iter_seed_dataset(path, images, problems=problems))
    assert [i.key for i in items] == ["c"]
    assert "no image for key 'a'" in problems.shown[0]
    assert "b.png: not a readable image" in problems.shown[1]
    assert problems.counts == {"image": 2}
    with pytest.raises(DataError, match="no image for key 'a'"):
        list(iter_seed_dataset(path, images))


@pytest.mark.parametrize("text,words", [("{not json", "malformed JSON"), ("[1, 2]", "expected a JSON object")])
def test_malformed_json(tmp_path, text, words):
    path = tmp_path / "annotations.json"
    path.write_text(text)
    with pytest.raises(DataError, match=words):
        list(iter_seed_dataset(path, tmp_path))
