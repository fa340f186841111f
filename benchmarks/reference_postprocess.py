"""The seed's rule-based spine post-processing written plainly (OpenCV + scikit-image).

This is the yardstick for ``usseg.runtime.postprocess``: full-frame calls in the seed's order,
nothing clever. It also builds the synthetic label maps that the tests and the benchmark share.
"""

from __future__ import annotations

import cv2
import numpy as np
from skimage.morphology import skeletonize

from usseg.runtime.contract import PostprocessSpec
from usseg.runtime.postprocess import (
    HOUGH_RHO,
    HOUGH_THETA,
    LABEL_EPI,
    LABEL_MID,
    LABEL_VTB,
    MORPH_KERNEL,
    SpineGeometry,
    validate_labels,
)


def reference_postprocess(labels: np.ndarray, spec: PostprocessSpec = PostprocessSpec()) -> SpineGeometry:
    """The seed's rules on one label map, step by step on whole frames."""
    labels = validate_labels(labels)
    if labels.max() > LABEL_EPI:
        raise ValueError(f"labels: value {labels.max()} is not a spine class (0 background, 1 MID, 2 VTB, 3 EPI)")
    mid, vtb, epi = ((labels == value).astype(np.uint8) for value in (LABEL_MID, LABEL_VTB, LABEL_EPI))
    mid_fixed = fix_gaps(mid, epi, spec)
    vtb_fixed = fix_gaps(vtb, mid, spec)
    masks = np.stack([mid_fixed, vtb_fixed, epi])
    mid_line = find_line(mid_fixed, spec)
    if mid_line is None:
        return SpineGeometry(np.zeros_like(masks), None, None, None)
    return SpineGeometry(masks, mid_line, find_box(vtb_fixed, spec.min_box_area),
                         find_line(epi, spec))


def fix_gaps(mask: np.ndarray, overlapping: np.ndarray, spec: PostprocessSpec) -> np.ndarray:
    """Pixels of the overlapping class inside the dilated mask join the mask."""
    kernel = np.ones((spec.gap_kernel, spec.gap_kernel), np.uint8)
    dilated = cv2.dilate(mask, kernel, iterations=spec.gap_iterations)
    fixed = mask.copy()
    fixed[(dilated > 0) & (overlapping > 0)] = 1
    return fixed


def largest_contour(mask: np.ndarray, passes) -> np.ndarray | None:
    contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    kept = [c for c in contours if passes(cv2.contourArea(c))]
    return max(kept, key=cv2.contourArea) if kept else None


def find_line(mask: np.ndarray, spec: PostprocessSpec) -> np.ndarray | None:
    """End points [[x1, y1], [x2, y2]] of the longest Hough segment of the largest blob's skeleton."""
    min_area = spec.min_line_area
    cleaned = mask
    if spec.morph_iterations:
        cleaned = cv2.morphologyEx(mask, cv2.MORPH_OPEN, MORPH_KERNEL, iterations=spec.morph_iterations)
        cleaned = cv2.morphologyEx(cleaned, cv2.MORPH_CLOSE, MORPH_KERNEL, iterations=spec.morph_iterations)
    contour = largest_contour(cleaned, lambda area: area > min_area)
    if contour is None:
        return None
    filled = np.zeros_like(cleaned)
    cv2.drawContours(filled, [contour], -1, 1, cv2.FILLED)
    skeleton = skeletonize(filled > 0).astype(np.uint8) * 255
    segments = cv2.HoughLinesP(skeleton, HOUGH_RHO, HOUGH_THETA, spec.hough_threshold,
                               minLineLength=spec.hough_min_length, maxLineGap=spec.hough_max_gap)
    if segments is None or len(segments) == 0:
        return None
    segments = segments.reshape(-1, 4).astype(np.float64)
    lengths = np.hypot(segments[:, 2] - segments[:, 0], segments[:, 3] - segments[:, 1])
    return segments[int(np.argmax(lengths))].reshape(2, 2)


def find_box(mask: np.ndarray, min_area: int) -> np.ndarray | None:
    """The four corners (x, y) of the min-area rect around the largest blob."""
    contour = largest_contour(mask, lambda area: area >= min_area)
    if contour is None:
        return None
    return cv2.boxPoints(cv2.minAreaRect(contour)).astype(np.float64)


# ---------------------------------------------------------------------------------------------
# Synthetic label maps shared by the tests and the benchmark
# ---------------------------------------------------------------------------------------------


def _draw_line(labels: np.ndarray, value: int, centre, length: float, angle: float, thickness: int) -> None:
    dx, dy = 0.5 * length * np.cos(angle), 0.5 * length * np.sin(angle)
    p = (int(round(centre[0] - dx)), int(round(centre[1] - dy)))
    q = (int(round(centre[0] + dx)), int(round(centre[1] + dy)))
    cv2.line(labels, p, q, value, thickness)


def _roughen_boundaries(labels: np.ndarray, rng: np.random.Generator, fraction: float) -> None:
    """Copy a neighbour's label onto a random share of boundary pixels (argmax ragged edges)."""
    height, width = labels.shape
    padded = np.pad(labels, 1, mode="edge")
    shifts = [(0, 1), (2, 1), (1, 0), (1, 2)]
    neighbours = np.stack([padded[r:r + height, c:c + width] for r, c in shifts])
    boundary = (neighbours != labels).any(axis=0)
    ys, xs = np.nonzero(boundary & (rng.random(labels.shape) < fraction))
    pick = rng.integers(0, 4, size=ys.size)
    labels[ys, xs] = neighbours[pick, ys, xs]


def synthetic_spine_labels(rng: np.random.Generator, height: int = 480, width: int = 640,
                           mid: bool = True, vtb: bool = True, epi: bool = True) -> np.ndarray:
    """A plausible model output: a long near-vertical MID line, a short near-horizontal EPI line
    crossing or touching it, a tilted VTB rect, plus noise blobs, holes and ragged edges."""
    labels = np.zeros((height, width), np.uint8)
    scale = min(height / 480, width / 640)
    mid_x = rng.uniform(0.3, 0.7) * width
    layers = []
    if vtb:
        centre = (rng.uniform(0.25, 0.75) * width, rng.uniform(0.3, 0.7) * height)
        size = (rng.uniform(60, 170) * scale, rng.uniform(40, 110) * scale)
        corners = cv2.boxPoints((centre, size, rng.uniform(-25, 25))).round().astype(np.int32)
        layers.append(lambda: cv2.fillPoly(labels, [corners], LABEL_VTB))
    if mid:
        length = rng.uniform(0.35, 0.85) * height
        centre = (mid_x, rng.uniform(0.5 * length, height - 0.4 * length))
        angle = np.pi / 2 + np.deg2rad(rng.uniform(-12, 12))
        thickness = int(rng.integers(7, 14))
        layers.append(lambda: _draw_line(labels, LABEL_MID, centre, length, angle, thickness))
    if epi:
        centre_e = (mid_x + rng.uniform(-70, 70) * scale, rng.uniform(0.2, 0.8) * height)
        length_e = rng.uniform(50, 170) * scale
        angle_e = np.deg2rad(rng.uniform(-15, 15))
        thickness_e = int(rng.integers(6, 13))
        layers.append(lambda: _draw_line(labels, LABEL_EPI, centre_e, length_e, angle_e, thickness_e))
    for k in rng.permutation(len(layers)):
        layers[k]()
    for _ in range(int(rng.integers(0, 7))):  # stray blobs of any class
        centre = (int(rng.integers(0, width)), int(rng.integers(0, height)))
        cv2.circle(labels, centre, int(rng.integers(2, 9)), int(rng.integers(1, 4)), -1)
    ys, xs = np.nonzero(labels)
    for _ in range(int(rng.integers(0, 4))):  # holes inside the shapes
        if ys.size:
            k = int(rng.integers(0, ys.size))
            cv2.circle(labels, (int(xs[k]), int(ys[k])), int(rng.integers(1, 4)), 0, -1)
    _roughen_boundaries(labels, rng, rng.uniform(0.0, 0.3))
    return labels
