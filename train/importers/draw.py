"""Shapes to pixels, one rule for every tool: areas (polygons, boxes, circles, ellipses) and run-
length masks through pycocotools, the COCO reference that CVAT's own mask export also uses;
lines and polylines as the seed draws its lines (cv2, ``--line-width`` pixels). Coordinates are
continuous, pixel edges at integers (a box from 0 to W covers every column), as COCO, CVAT and
LabelMe store them. Callers check points first (``base.points_array``)."""

from __future__ import annotations

import cv2
import numpy as np
from pycocotools import mask as coco_mask

from ..problems import EntryError

SUBPIXEL_BITS = 4  # cv2's fixed-point shift: lines are drawn at 1/16 pixel


def polygon_region(pts: np.ndarray, height: int, width: int) -> np.ndarray:
    """Boolean [H, W]: the inside of a closed polygon of at least 3 points."""
    rle = coco_mask.frPyObjects([pts.astype(np.float64).ravel().tolist()], height, width)
    return coco_mask.decode(coco_mask.merge(rle)).astype(bool)


def line_region(pts: np.ndarray, height: int, width: int, line_width: int) -> np.ndarray:
    """Boolean [H, W]: an open polyline of ``line_width`` pixels through the points."""
    canvas = np.zeros((height, width), np.uint8)
    centres = np.round((pts - 0.5) * (1 << SUBPIXEL_BITS)).astype(np.int32)  # edges -> cv2's pixel centres
    cv2.polylines(canvas, [centres.reshape(-1, 1, 2)], isClosed=False, color=1, thickness=line_width,
                  shift=SUBPIXEL_BITS)
    return canvas.astype(bool)


def ellipse_points(cx: float, cy: float, rx: float, ry: float, angle_deg: float, height: int,
                   width: int) -> np.ndarray:
    """The outline of an ellipse as a polygon (about one vertex per pixel of its perimeter),
    kept inside the image."""
    n = int(np.clip(2 * np.pi * max(rx, ry), 16, 720))
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    a = np.deg2rad(angle_deg)
    x, y = rx * np.cos(t), ry * np.sin(t)
    pts = np.stack([cx + x * np.cos(a) - y * np.sin(a), cy + x * np.sin(a) + y * np.cos(a)], axis=1)
    return np.clip(pts, 0, [width, height])


def rotated_box_points(x0: float, y0: float, x1: float, y1: float, angle_deg: float, height: int,
                       width: int) -> np.ndarray:
    """The corners of a box turned by ``angle_deg`` (clockwise, as CVAT turns it) about its centre."""
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    corners = np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], np.float64) - [cx, cy]
    a = np.deg2rad(angle_deg)
    turn = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    return np.clip(corners @ turn.T + [cx, cy], 0, [width, height])


def checked_counts(counts: object, total: int, where: str) -> list[int]:
    """Run lengths that cover exactly ``total`` pixels: non-negative integers. The decoders
    (pycocotools, the mask fill below) write as many pixels as the counts say, so the sum is
    checked before anything is decoded."""
    if not isinstance(counts, list) or not all(isinstance(c, int) and not isinstance(c, bool) for c in counts):
        raise EntryError(f"{where}: run lengths must be a list of integers", "mask")
    if any(c < 0 for c in counts):
        raise EntryError(f"{where}: a run length is negative", "mask")
    if sum(counts) != total:
        raise EntryError(f"{where}: run lengths cover {sum(counts)} pixels, the mask has {total}", "mask")
    return counts


def rle_region(counts: list[int], height: int, width: int) -> np.ndarray:
    """Boolean [H, W] from COCO's uncompressed RLE (column-major runs, background first), decoded by
    pycocotools; ``counts`` must have passed :func:`checked_counts`."""
    rle = coco_mask.frPyObjects({"counts": counts, "size": [height, width]}, height, width)
    return coco_mask.decode(rle).astype(bool)


def row_runs_region(counts: list[int], height: int, width: int) -> np.ndarray:
    """Boolean [H, W] from row-major runs, background first (CVAT's mask ``rle``); ``counts`` must
    have passed :func:`checked_counts`."""
    values = np.zeros(len(counts), bool)
    values[1::2] = True
    return np.repeat(values, counts).reshape(height, width)


def coco_string_counts(text: str, where: str) -> list[int]:
    """The run lengths of COCO's compressed RLE string (pycocotools' ``rleFrString``: 5 bits a
    character from '0', a continuation bit, sign extension, each count from the second on coded
    as the difference to the one two before). Read here so that they can be checked before
    pycocotools decodes them: its decoder trusts them."""
    counts: list[int] = []
    i, n = 0, len(text)
    while i < n:
        value, shift, more = 0, 0, True
        while more:
            if i >= n or shift > 60:
                raise EntryError(f"{where}: compressed RLE string is cut off or malformed", "mask")
            c = ord(text[i]) - 48
            if not 0 <= c < 64:
                raise EntryError(f"{where}: compressed RLE string has a character outside COCO's alphabet", "mask")
            value |= (c & 0x1F) << shift
            more = bool(c & 0x20)
            i += 1
            shift += 5
            if not more and (c & 0x10):
                value |= -1 << shift
        if len(counts) > 2:
            value += counts[-2]
        counts.append(value)
    return counts


def paint(mask: np.ndarray, region: np.ndarray, value: int) -> None:
    """Later shapes over earlier ones, as the seed format draws them."""
    mask[region] = value
