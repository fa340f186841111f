"""The shapes every importer fixture in tests/data/importers holds, drawn here independently of
usseg (NumPy slices, scikit-image, a point-to-segment distance), to compare each importer with.

Four 48x32 frames, classes nerve and vessel; coordinates are pixel edges (a box from x 4 to 20
covers columns 4..19), as COCO, CVAT and LabelMe store them:
    a  nerve box (4,4)-(20,16) as a polygon; vessel triangle (24,4) (44,4) (34,28); nerve box
       (30,8)-(38,14) drawn after the triangle, over it
    b  vessel ring: the square (14,6)-(34,26) less the square (20,12)-(28,20) (a hole); nerve line
       (2,28)-(46,28), 10 px wide (COCO, which has no lines: the box (2,26)-(46,31))
    c  nothing: an empty frame
    d  vessel disc, centre (12,16), radius 8; nerve box (28,6)-(44,26); a point (drawn by none)
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from skimage.draw import disk, polygon

DATA = Path(__file__).resolve().parent / "data" / "importers"
H, W = 32, 48
NERVE, VESSEL = 1, 2
FRAMES = ("a", "b", "c", "d")
TRIANGLE = [(24, 4), (44, 4), (34, 28)]


def _box(mask, x0, y0, x1, y1, value):
    mask[y0:y1, x0:x1] = value


def _segment_distance(p, q):
    yy, xx = np.mgrid[0:H, 0:W] + 0.5  # pixel centres, in edge coordinates
    (x1, y1), (x2, y2) = p, q
    dx, dy = x2 - x1, y2 - y1
    t = np.clip(((xx - x1) * dx + (yy - y1) * dy) / (dx * dx + dy * dy), 0, 1)
    return np.hypot(xx - (x1 + t * dx), yy - (y1 + t * dy))


def expected(frame: str, lines: bool = True) -> np.ndarray:
    """The class-index mask of one frame; ``lines=False``: frame b's line as COCO's box."""
    mask = np.zeros((H, W), np.uint8)
    if frame == "a":
        _box(mask, 4, 4, 20, 16, NERVE)
        rr, cc = polygon([y - 0.5 for _, y in TRIANGLE], [x - 0.5 for x, _ in TRIANGLE], (H, W))
        mask[rr, cc] = VESSEL
        _box(mask, 30, 8, 38, 14, NERVE)
    elif frame == "b":
        _box(mask, 14, 6, 34, 26, VESSEL)
        _box(mask, 20, 12, 28, 20, 0)
        if lines:
            mask[_segment_distance((2, 28), (46, 28)) <= 5] = NERVE
        else:
            _box(mask, 2, 26, 46, 31, NERVE)
    elif frame == "d":
        rr, cc = disk((16 - 0.5, 12 - 0.5), 8, shape=(H, W))
        mask[rr, cc] = VESSEL
        _box(mask, 28, 6, 44, 26, NERVE)
    return mask


def agree(got: np.ndarray, want: np.ndarray) -> None:
    """Equal but for the odd pixel on a slanted or round edge: >= 97 % of pixels equal and each
    class's IoU >= 0.85 (rasterisers differ on edge pixels)."""
    assert got.shape == want.shape and got.dtype == np.uint8
    assert (got == want).mean() >= 0.97, (got == want).mean()
    for value in (NERVE, VESSEL):
        a, b = got == value, want == value
        if b.any():
            assert (a & b).sum() / (a | b).sum() >= 0.85, value
        else:
            assert not a.any(), value
