"""The seed's spine rules on one label map, with per-thread scratch buffers.

Four kernel calls a frame: the split into byte and packed class planes, the gap fixing, and each
line (``shapes``); the box is a kernel call and ``cv2.minAreaRect`` on the contour it finds.
"""

from __future__ import annotations

import math
import threading

import cv2
import numpy as np

from ..contract import PostprocessSpec
from .bitplane import words_for
from .hough import (
    HOUGH_COS,
    HOUGH_MAX_LINE_GAP,
    HOUGH_MIN_LINE_LENGTH,
    HOUGH_SIN,
    HOUGH_THRESHOLD,
    _hough_segments,
    hough_rho_bins,
)
from .labelmap import EPI, LABEL_EPI, LABEL_MID, LABEL_VTB, MID, VTB, SpineGeometry, validate_labels
from .shapes import _box_contour, _line_of
from .split import _fix_gaps, _split_classes
from .thinning import THINNING_TABLE, _thin_in_place

MORPH_KERNEL = np.ones((3, 3), np.uint8)
MORPH_ITERATIONS = 2


class _Scratch:
    """Buffers reused frame after frame for one frame size (one set per thread).

    Every buffer is as large as the worst label map of this size needs (the kernels do not
    check bounds); ``np.empty`` leaves the pages untouched until a frame needs them.
    """

    def __init__(self, height: int, width: int) -> None:
        self.height, self.width = height, width
        words = words_for(width)
        area = (height + 2) * (width + 2)
        runs = height * (width // 2 + 1) + 1  # a run and a gap take two pixels of a row
        self.bounds = np.zeros((3, 4), np.int64)
        self.columns = np.empty((3, words), np.uint64)
        self.planes = np.empty((3, height, words), np.uint64)
        self.spans = np.empty((3, 2, height), np.int32)
        self.work = np.empty((3, height, words), np.uint64)
        self.work_spans = np.empty((3, 2, height), np.int32)
        self.runs = np.empty((4, runs), np.int32)
        self.parent = np.empty(runs, np.int32)
        self.gaps = np.empty((4, runs), np.int32)
        self.canvas = np.empty(area, np.uint8)
        self.filled_box = np.empty(4, np.int64)
        self.border = np.empty(area, np.uint32)
        self.removed = np.empty(area, np.uint32)
        self.queue = np.empty((area, 2), np.int32)
        self.segments = np.empty((area, 4), np.int32)
        self.accum = np.zeros(HOUGH_COS.shape[0] * hough_rho_bins(height, width), np.int32)
        self.cells = np.empty(HOUGH_COS.shape[0], np.uint32)
        self.points = np.empty((4 * height * width + 1, 2), np.int32)  # a border visits a pixel 4 times at most
        self.end_points = np.empty(4, np.int32)
        self.column = np.empty(words, np.uint64)

    def line(self, plane: int, spec: PostprocessSpec) -> np.ndarray | None:
        """See shapes._line_of; the end points as float64 [[x1, y1], [x2, y2]], or None."""
        if not _line_of(self.planes[plane], self.spans[plane], self.bounds[plane], self.height,
                        self.width, spec.morph_iterations, math.floor(2 * spec.min_line_area),
                        spec.hough_threshold, spec.hough_min_length, spec.hough_max_gap,
                        self.work, self.work_spans, self.column, self.runs, self.parent, self.gaps, self.canvas, self.filled_box,
                        self.border, self.removed, THINNING_TABLE, HOUGH_COS, HOUGH_SIN, self.accum,
                        self.queue, self.cells, self.segments, self.end_points):
            return None
        return self.end_points.reshape(2, 2).astype(np.float64)

    def box(self, min_area: float) -> np.ndarray | None:
        """The seed's box: corners of the min-area rect of VTB's largest external contour, or None."""
        count = _box_contour(self.planes[VTB], self.spans[VTB], self.bounds[VTB], self.height,
                             self.width, math.ceil(2 * min_area), self.runs, self.parent,
                             self.points)
        if count == 0:
            return None
        return cv2.boxPoints(cv2.minAreaRect(self.points[:count])).astype(np.float64)


_local = threading.local()


def _scratch_for(height: int, width: int) -> _Scratch:
    cache = getattr(_local, "scratch", None)
    if cache is None:
        cache = _local.scratch = {}
    scratch = cache.get((height, width))
    if scratch is None:
        scratch = cache[(height, width)] = _Scratch(height, width)
    return scratch


def _output_masks(shape: tuple[int, int], out: np.ndarray | None) -> np.ndarray:
    if out is None:
        return np.empty((3,) + shape, np.uint8)
    if not isinstance(out, np.ndarray) or out.dtype != np.uint8 or out.shape != (3,) + shape \
            or not out.flags.c_contiguous:
        raise ValueError(f"out must be a C-contiguous uint8 array of shape {(3,) + shape}")
    return out


def postprocess_spine(labels: np.ndarray, spec: PostprocessSpec = PostprocessSpec(),
                      out: np.ndarray | None = None) -> SpineGeometry:
    """The seed's rules on one label map (uint8 HxW: 0 background, 1 MID, 2 VTB, 3 EPI).

    ``out`` (uint8 [3, H, W], C-contiguous) receives the masks instead of a new array, so that a
    live loop allocates nothing large per frame.
    """
    labels = validate_labels(labels)
    height, width = labels.shape
    masks = _output_masks((height, width), out)
    scratch = _scratch_for(height, width)
    highest = _split_classes(labels, masks, scratch.planes, scratch.spans, scratch.bounds, scratch.columns)
    if highest > LABEL_EPI:
        raise ValueError(f"labels: value {highest} is not a spine class (0 background, 1 MID, 2 VTB, 3 EPI)")
    gap_reach = (spec.gap_kernel - 1) // 2 * spec.gap_iterations  # the dilation's square, merged as OpenCV does
    _fix_gaps(masks, scratch.planes, scratch.spans, scratch.bounds, gap_reach, scratch.work, scratch.work_spans,
              scratch.column)
    mid = scratch.line(MID, spec)
    if mid is None:
        for plane, (top, bottom, left, right) in enumerate(scratch.bounds):
            masks[plane, top:bottom, left:right] = 0
        return SpineGeometry(masks, None, None, None)
    epi = scratch.line(EPI, spec)
    vtb = scratch.box(spec.min_box_area)
    return SpineGeometry(masks, mid, vtb, epi)


def _nonzero_bounds(image: np.ndarray) -> tuple[int, int, int, int] | None:
    x, y, w, h = cv2.boundingRect(image)
    return None if w == 0 else (y, y + h, x, x + w)


def skeletonize(mask: np.ndarray) -> np.ndarray:
    """scikit-image's ``skeletonize`` (Zhang-Suen) of a 2-D uint8 mask (non-zero = set), as 0/1."""
    mask = validate_labels(mask, "mask")
    height, width = mask.shape
    skeleton = np.zeros((height, width), np.uint8)
    bounds = _nonzero_bounds(mask)
    if bounds is None:
        return skeleton
    top, bottom, left, right = bounds
    padded = np.zeros((bottom - top + 2, right - left + 2), np.uint8)
    padded[1:-1, 1:-1] = mask[top:bottom, left:right] != 0
    scratch = _scratch_for(height, width)
    _thin_in_place(padded, THINNING_TABLE, scratch.border, scratch.removed)
    skeleton[top:bottom, left:right] = padded[1:-1, 1:-1]
    return skeleton


def probabilistic_hough(image: np.ndarray, threshold: int = HOUGH_THRESHOLD,
                        min_line_length: int = HOUGH_MIN_LINE_LENGTH,
                        max_line_gap: int = HOUGH_MAX_LINE_GAP) -> np.ndarray:
    """``cv2.HoughLinesP(image, HOUGH_RHO, HOUGH_THETA, ...)`` as an int32 (N, 4) array of
    x1, y1, x2, y2, same segments in the same order; image is 2-D uint8, non-zero = set."""
    image = validate_labels(image, "image")
    height, width = image.shape
    bounds = _nonzero_bounds(image)
    if bounds is None:
        return np.zeros((0, 4), np.int32)
    top, bottom, left, right = bounds
    points = np.ascontiguousarray(image[top:bottom, left:right])
    points = (points != 0).astype(np.uint8)
    scratch = _scratch_for(height, width)
    found = _hough_segments(points, top, left, height, width, HOUGH_COS, HOUGH_SIN, scratch.accum,
                            threshold, min_line_length, max_line_gap,
                            scratch.queue, scratch.cells, scratch.segments)
    return scratch.segments[:found].copy()


def _warmup_scene(height: int, width: int) -> np.ndarray:
    """A MID line crossed by EPI next to a VTB rect: every step of the pipeline runs on it."""
    labels = np.zeros((height, width), np.uint8)
    cx = width // 2
    cv2.rectangle(labels, (cx - width // 3, height // 6), (cx - 8, height // 3), LABEL_VTB, -1)
    cv2.line(labels, (cx, height // 16), (cx + 2, height - height // 16), LABEL_MID, 8)
    cv2.line(labels, (cx - width // 4, height // 2), (cx + width // 4, height // 2 + 4), LABEL_EPI, 6)
    return labels


def warmup() -> None:
    """Compile (or load from the on-disk cache) every kernel, so a live loop's first frame is fast."""
    postprocess_spine(_warmup_scene(64, 96), PostprocessSpec(min_line_area=50, min_box_area=50))
