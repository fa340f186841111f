"""One plane per class, and the seed's gap fixing between overlapping classes."""

from __future__ import annotations

import cv2
import numpy as np

from ..jit import kernel
from .labelmap import EPI, LABEL_EPI, LABEL_MID, LABEL_VTB, MID, VTB

# A region of the frame: top, bottom, left, right (exclusive), in frame pixels; not to be confused
# with a letterbox or with the VTB box of the geometry
Bounds = tuple[int, int, int, int]


@kernel
def _split_classes(labels, masks, bounds, column_bits, row_bits):
    """One 0/1 plane per class and each class's bounding box [top, bottom, left, right).

    Returns the largest label value seen, so that the caller can refuse unknown classes. An
    absent class gets empty bounds (all zeros). The plane writes and the bounds bits are separate
    loops so that each vectorises.
    """
    height, width = labels.shape
    column_bits[:] = 0
    highest = np.uint8(0)
    for i in range(height):
        row = labels[i]
        mid = masks[MID, i]
        vtb = masks[VTB, i]
        epi = masks[EPI, i]
        row_max = np.uint8(0)
        for j in range(width):
            v = row[j]
            mid[j] = v == LABEL_MID
            vtb[j] = v == LABEL_VTB
            epi[j] = v == LABEL_EPI
            row_max = max(row_max, v)
        highest = max(highest, row_max)
        bits = np.uint8(0)
        if row_max:
            for j in range(width):
                here = np.uint8(mid[j] | (vtb[j] + vtb[j]) | (epi[j] * np.uint8(4)))
                column_bits[j] |= here
                bits |= here
        row_bits[i] = bits
    bounds[:] = 0
    for c in range(3):
        bit = np.uint8(1 << c)
        for i in range(height):
            if row_bits[i] & bit:
                bounds[c, 0] = i
                break
        for i in range(height - 1, -1, -1):
            if row_bits[i] & bit:
                bounds[c, 1] = i + 1
                break
        for j in range(width):
            if column_bits[j] & bit:
                bounds[c, 2] = j
                break
        for j in range(width - 1, -1, -1):
            if column_bits[j] & bit:
                bounds[c, 3] = j + 1
                break
    return highest


@kernel
def _take_overlap(mask, labels, other_label, grown, top, bottom, left, right, grown_top, grown_left):
    """Seed gap fixing on rows top:bottom, columns left:right: pixels of ``other_label`` where the
    dilated mask (``grown``, whose pixel (0, 0) is frame pixel (grown_top, grown_left)) is set join
    the mask."""
    for i in range(top, bottom):
        mask_row = mask[i, left:right]
        label_row = labels[i, left:right]
        grown_row = grown[i - grown_top, left - grown_left:right - grown_left]
        for k in range(mask_row.shape[0]):
            if label_row[k] == other_label and grown_row[k]:
                mask_row[k] = 1


def _grow(bounds: Bounds, margin: int, height: int, width: int) -> Bounds:
    top, bottom, left, right = bounds
    return max(top - margin, 0), min(bottom + margin, height), max(left - margin, 0), min(right + margin, width)


def _intersect(a: Bounds, b: Bounds) -> Bounds | None:
    top, bottom, left, right = max(a[0], b[0]), min(a[1], b[1]), max(a[2], b[2]), min(a[3], b[3])
    return (top, bottom, left, right) if top < bottom and left < right else None


def _union(a: Bounds, b: Bounds) -> Bounds:
    return min(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), max(a[3], b[3])


def _is_empty(bounds: Bounds) -> bool:
    return bounds[0] >= bounds[1] or bounds[2] >= bounds[3]


def _add_overlap(mask: np.ndarray, mask_bounds: Bounds, labels: np.ndarray, other_label: int,
                 other_bounds: Bounds, kernel: np.ndarray, iterations: int) -> Bounds:
    """Seed gap fixing for one class, dilating only the part of the mask that can reach the other
    class. Returns the mask's new bounds (a superset)."""
    if _is_empty(mask_bounds) or _is_empty(other_bounds):
        return mask_bounds
    height, width = mask.shape
    reach = (max(kernel.shape) - 1) * iterations  # at least the dilation's reach on every side
    target = _intersect(_grow(mask_bounds, reach, height, width), other_bounds)
    if target is None:
        return mask_bounds
    source = _grow(target, reach, height, width)
    grown = cv2.dilate(mask[source[0]:source[1], source[2]:source[3]], kernel, iterations=iterations)
    _take_overlap(mask, labels, other_label, grown, *target, source[0], source[2])
    return _union(mask_bounds, target)
