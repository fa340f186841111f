"""One plane per class, and the seed's gap fixing between overlapping classes."""

from __future__ import annotations

import cv2
import numpy as np

from ..jit import kernel
from .labelmap import EPI, LABEL_EPI, LABEL_MID, LABEL_VTB, MID, VTB

Box = tuple[int, int, int, int]  # top, bottom, left, right (exclusive), in frame pixels


@kernel
def _split_classes(labels, masks, boxes, column_bits, row_bits):
    """One 0/1 plane per class and each class's bounding box [top, bottom, left, right).

    Returns the largest label value seen, so that the caller can refuse unknown classes. An
    absent class gets an empty box (all zeros). The plane writes and the box bits are separate
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
    boxes[:] = 0
    for c in range(3):
        bit = np.uint8(1 << c)
        for i in range(height):
            if row_bits[i] & bit:
                boxes[c, 0] = i
                break
        for i in range(height - 1, -1, -1):
            if row_bits[i] & bit:
                boxes[c, 1] = i + 1
                break
        for j in range(width):
            if column_bits[j] & bit:
                boxes[c, 2] = j
                break
        for j in range(width - 1, -1, -1):
            if column_bits[j] & bit:
                boxes[c, 3] = j + 1
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


def _grow(box: Box, margin: int, height: int, width: int) -> Box:
    top, bottom, left, right = box
    return max(top - margin, 0), min(bottom + margin, height), max(left - margin, 0), min(right + margin, width)


def _intersect(a: Box, b: Box) -> Box | None:
    top, bottom, left, right = max(a[0], b[0]), min(a[1], b[1]), max(a[2], b[2]), min(a[3], b[3])
    return (top, bottom, left, right) if top < bottom and left < right else None


def _union(a: Box, b: Box) -> Box:
    return min(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), max(a[3], b[3])


def _is_empty(box: Box) -> bool:
    return box[0] >= box[1] or box[2] >= box[3]


def _add_overlap(mask: np.ndarray, mask_box: Box, labels: np.ndarray, other_label: int,
                 other_box: Box, kernel: np.ndarray, iterations: int) -> Box:
    """Seed gap fixing for one class, dilating only the part of the mask that can reach the other
    class. Returns the mask's new bounding box (a superset)."""
    if _is_empty(mask_box) or _is_empty(other_box):
        return mask_box
    height, width = mask.shape
    reach = (max(kernel.shape) - 1) * iterations  # at least the dilation's reach on every side
    target = _intersect(_grow(mask_box, reach, height, width), other_box)
    if target is None:
        return mask_box
    source = _grow(target, reach, height, width)
    grown = cv2.dilate(mask[source[0]:source[1], source[2]:source[3]], kernel, iterations=iterations)
    _take_overlap(mask, labels, other_label, grown, *target, source[0], source[2])
    return _union(mask_box, target)
