"""Seed-format shapes from the geometry that drew the frame, kept only where the structure is inside
the field of view."""

from __future__ import annotations

import math

import cv2
import numpy as np

from .config import PhantomConfig, Shape
from .draw import fill
from .geometry import Beams, Pose


def _line_in_view(p: np.ndarray, q: np.ndarray, view: np.ndarray, min_fraction: float) -> list | None:
    """Integer end points of the longest run of segment p-q inside the field of view, or None when
    less than `min_fraction` of it is seen (a structure cut by the sector edge is not annotated)."""
    h, w = view.shape
    t = np.linspace(0.0, 1.0, 97)
    pts = p[None, :] + t[:, None] * (q - p)[None, :]
    xi, yi = np.round(pts[:, 0]).astype(int), np.round(pts[:, 1]).astype(int)
    ok = (xi >= 0) & (xi < w) & (yi >= 0) & (yi < h)
    ok[ok] = view[yi[ok], xi[ok]] > 0
    best, start = (0, 0), None
    for i, inside in enumerate(np.append(ok, False)):
        if inside and start is None:
            start = i
        elif not inside and start is not None:
            if i - start > best[1] - best[0]:
                best = (start, i)
            start = None
    n = best[1] - best[0]
    if n / len(t) < min_fraction or n < 2:
        return None
    a, b = pts[best[0]], pts[best[1] - 1]
    return [[int(round(a[0])), int(round(a[1]))], [int(round(b[0])), int(round(b[1]))]]


def annotate(cfg: PhantomConfig, pose: Pose, beams: Beams, geo: dict) -> list[Shape]:
    """Seed-format shapes for the structures that are drawn and inside the field of view."""
    h, w = cfg.height, cfg.width
    view = cv2.erode(beams.fov, np.ones((5, 5), np.uint8), borderType=cv2.BORDER_CONSTANT, borderValue=0)
    if "MID" not in geo:
        return []
    p, q = (pose.px(x) for x in geo["MID"])
    mid = _line_in_view(p, q, view, 0.5)
    if mid is None or math.dist(*mid) < 0.25 * h:
        return []  # the seed's anatomical rule: no midline, no VTB or EPI either
    shapes: list[Shape] = [["MID", "line", mid]]
    if "VTB" in geo:
        corners = pose.px(geo["VTB"])
        full = np.zeros((h + 2 * h, w + 2 * w), np.uint8)  # big canvas: the unclipped area
        fill(full, corners + np.array([w, h]), 1)
        seen = full[h:2 * h, w:2 * w] & view
        if full.sum() and seen.sum() >= 0.6 * full.sum():
            x, y, bw, bh = cv2.boundingRect(seen)
            shapes.append(["VTB", "rect", [[x, y], [x + bw - 1, y + bh - 1]]])
    if "EPI" in geo:
        p, q = (pose.px(x) for x in geo["EPI"])
        epi = _line_in_view(p, q, view, 0.7)
        if epi is not None:
            shapes.append(["EPI", "line", epi])
    return shapes
