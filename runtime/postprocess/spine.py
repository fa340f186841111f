"""The seed's spine rules on one label map, region by region, with per-thread scratch buffers.

Each step works on a region around its class (its bounding box, less stray blobs too small to
matter) instead of the whole frame. Morphology, contours and the min-area rect are OpenCV's own
calls on those regions; the skeleton and the Hough transform are the Numba kernels of
``thinning`` and ``hough``, so the output equals the seed's exactly.
"""

from __future__ import annotations

import math
import threading

import cv2
import numpy as np

from ..contract import PostprocessSpec
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
from .regions import TILE, _relevant_region
from .split import Bounds, _add_overlap, _is_empty, _split_classes
from .thinning import THINNING_TABLE, _thin_in_place

MORPH_KERNEL = np.ones((3, 3), np.uint8)
MORPH_ITERATIONS = 2

# Open then close (3x3, twice each) can grow a shape by at most this much, and only towards the
# frame's edge; a region grown by _LINE_MARGIN around the shapes gives the full-frame result.


class _Scratch:
    """Buffers reused frame after frame for one frame size (one set per thread)."""

    def __init__(self, height: int, width: int) -> None:
        area = (height + 2) * (width + 2)
        self.image = np.empty(area, np.uint8)
        self.border = np.empty(area, np.uint32)
        self.removed = np.empty(area, np.uint32)
        self.queue = np.empty((area, 2), np.int32)
        self.segments = np.empty((area, 4), np.int32)
        self.accum = np.zeros(HOUGH_COS.shape[0] * hough_rho_bins(height, width), np.int32)
        self.cells = np.empty(HOUGH_COS.shape[0], np.uint32)
        self.column_bits = np.empty(width, np.uint8)
        self.row_bits = np.empty(height, np.uint8)
        self.bounds = np.zeros((3, 4), np.int64)
        tiles = ((height + TILE - 1) // TILE, (width + TILE - 1) // TILE)
        self.tile_label = np.zeros(tiles, np.int32)
        self.stack = np.empty((tiles[0] * tiles[1], 2), np.int64)
        self.cluster_bounds = np.empty((tiles[0] * tiles[1] + 1, 4), np.int64)
        self.keep = np.empty(tiles[0] * tiles[1] + 1, np.bool_)
        self.tile_columns = np.empty(tiles[1] * TILE, np.uint8)  # TILE = 16: two words per tile
        self.region = np.empty(4, np.int64)

    def relevant_region(self, mask: np.ndarray, bounds: Bounds, spread: int, min_area: float,
                        margin: int) -> Bounds | None:
        """See _relevant_region; None when no cluster can matter."""
        if _is_empty(bounds):
            return None
        if not _relevant_region(mask, *bounds, spread, math.ceil(min_area), margin, self.tile_label,
                                self.stack, self.cluster_bounds, self.keep, self.tile_columns,
                                self.region):
            return None
        return tuple(int(v) for v in self.region)

    def canvas(self, height: int, width: int) -> np.ndarray:
        """A zeroed C-contiguous height x width view of the shared image buffer."""
        view = self.image[: height * width].reshape(height, width)
        view[:] = 0
        return view


_local = threading.local()


def _scratch_for(height: int, width: int) -> _Scratch:
    cache = getattr(_local, "scratch", None)
    if cache is None:
        cache = _local.scratch = {}
    scratch = cache.get((height, width))
    if scratch is None:
        scratch = cache[(height, width)] = _Scratch(height, width)
    return scratch


def _largest_contour(region: np.ndarray, offset: tuple[int, int], passes) -> np.ndarray | None:
    """The seed's choice: the largest external contour whose area ``passes``, else None.

    Contours come in frame coordinates (``offset`` is the region's top-left corner (x, y)); the
    first of equal areas wins, as Python's ``max`` picks it in the seed.
    """
    contours, _ = cv2.findContours(region, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE, offset=offset)
    best, best_area = None, -1.0
    for contour in contours:
        area = cv2.contourArea(contour)
        if passes(area) and area > best_area:
            best, best_area = contour, area
    return best


def _line_of(mask: np.ndarray, bounds: Bounds, spec: PostprocessSpec, scratch: _Scratch) -> np.ndarray | None:
    """The seed's line for one class: end points of the longest Hough segment of the skeleton."""
    min_area = spec.min_line_area
    # A contour must exceed min_area; the bound on a contour's area is a whole number.
    spread = spec.morph_iterations * (MORPH_KERNEL.shape[0] // 2)  # how far the clean-up moves pixels
    found = scratch.relevant_region(mask, bounds, spread, math.floor(min_area) + 1, 2 * spread + 2)
    if found is None:
        return None
    height, width = mask.shape
    top, bottom, left, right = found
    region = mask[top:bottom, left:right]
    if spec.morph_iterations:
        region = cv2.morphologyEx(region, cv2.MORPH_OPEN, MORPH_KERNEL, iterations=spec.morph_iterations)
        region = cv2.morphologyEx(region, cv2.MORPH_CLOSE, MORPH_KERNEL, iterations=spec.morph_iterations)
    best = _largest_contour(region, (left, top), lambda area: area > min_area)
    if best is None:
        return None
    x, y, w, h = cv2.boundingRect(best)
    filled = scratch.canvas(h + 2, w + 2)  # one empty pixel all round, as skimage pads
    cv2.drawContours(filled, [best], -1, 1, cv2.FILLED, offset=(1 - x, 1 - y))
    _thin_in_place(filled, THINNING_TABLE, scratch.border, scratch.removed)
    found = _hough_segments(filled, y - 1, x - 1, height, width, HOUGH_COS, HOUGH_SIN, scratch.accum,
                            spec.hough_threshold, spec.hough_min_length, spec.hough_max_gap,
                            scratch.queue, scratch.cells, scratch.segments)
    if found == 0:
        return None
    segments = scratch.segments[:found]
    squared = (segments[:, 2] - segments[:, 0]) ** 2 + (segments[:, 3] - segments[:, 1]) ** 2
    return segments[int(np.argmax(squared))].reshape(2, 2).astype(np.float64)


def _box_of(mask: np.ndarray, bounds: Bounds, min_area: float, scratch: _Scratch) -> np.ndarray | None:
    """The seed's box: min-area rect corners of the largest external contour."""
    found = scratch.relevant_region(mask, bounds, 0, min_area, 1)
    if found is None:
        return None
    top, bottom, left, right = found
    best = _largest_contour(mask[top:bottom, left:right], (left, top), lambda area: area >= min_area)
    if best is None:
        return None
    return cv2.boxPoints(cv2.minAreaRect(best)).astype(np.float64)


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
    highest = _split_classes(labels, masks, scratch.bounds, scratch.column_bits, scratch.row_bits)
    if highest > LABEL_EPI:
        raise ValueError(f"labels: value {highest} is not a spine class (0 background, 1 MID, 2 VTB, 3 EPI)")
    bounds = [tuple(int(v) for v in row) for row in scratch.bounds]
    kernel = np.ones((spec.gap_kernel, spec.gap_kernel), np.uint8)
    # Both fixes read the other class from the labels, i.e. from the original masks.
    bounds[VTB] = _add_overlap(masks[VTB], bounds[VTB], labels, LABEL_MID, bounds[MID], kernel, spec.gap_iterations)
    bounds[MID] = _add_overlap(masks[MID], bounds[MID], labels, LABEL_EPI, bounds[EPI], kernel, spec.gap_iterations)

    mid = _line_of(masks[MID], bounds[MID], spec, scratch)
    if mid is None:
        for plane, b in enumerate(bounds):
            if not _is_empty(b):
                masks[plane, b[0]:b[1], b[2]:b[3]] = 0
        return SpineGeometry(masks, None, None, None)
    epi = _line_of(masks[EPI], bounds[EPI], spec, scratch)
    vtb = _box_of(masks[VTB], bounds[VTB], spec.min_box_area, scratch)
    return SpineGeometry(masks, mid, vtb, epi)


def _nonzero_bounds(image: np.ndarray) -> Bounds | None:
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
