"""The seed's rule-based spine post-processing, fast enough for a live loop.

From a label map (0 background, 1 MID, 2 VTB, 3 EPI) it returns one mask per class after the
seed's gap fixing, the MID and EPI lines and the VTB box, following the seed step by step:

* gap fixing: MID takes the EPI pixels inside its dilation, VTB takes the MID pixels inside its
  dilation (both from the original masks); EPI is unchanged;
* a line (MID, EPI): open then close (3x3, twice each), the largest external contour with
  area > ``min_line_area``, filled, skeletonised, probabilistic Hough, the longest segment;
* the box (VTB): the largest external contour with area >= ``min_box_area``, its min-area rect;
* no MID line -> nothing at all (all geometry None, all masks empty).

Each step works on a region around its class (its bounding box, less stray blobs too small to
matter) instead of the whole frame. Morphology, contours and the min-area rect are OpenCV's own
calls on those regions; the skeleton and the Hough transform are Numba kernels that reproduce
scikit-image's ``skeletonize`` and OpenCV's ``HoughLinesP`` bit for bit, so the output equals the
seed's exactly. That matters: HoughLinesP visits points in a pseudo-random order and, on a tilted
skeleton, its walk along the 1-degree angle steps off the line after a few dozen pixels, so the
seed's end points depend on every skeleton pixel and on that order. A line fitted any other way
(principal axis, extreme projections) lands tens of pixels from the seed's end points on most
tilted lines.

Scratch buffers are kept per thread and frame size; ``out=`` takes the masks, so a live loop
allocates nothing large per frame. ``warmup()`` compiles or loads every kernel up front.

Imports numpy, cv2 and numba only (no torch, scikit-image or scipy).
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass

import cv2
import numpy as np
from numba import njit

from .contract import PostprocessSpec

LABEL_MID, LABEL_VTB, LABEL_EPI = 1, 2, 3
MID, VTB, EPI = 0, 1, 2  # plane index in SpineGeometry.masks

MORPH_KERNEL = np.ones((3, 3), np.uint8)
MORPH_ITERATIONS = 2
HOUGH_RHO = 1.0
HOUGH_THETA = np.pi / 180
HOUGH_THRESHOLD = 30
HOUGH_MIN_LINE_LENGTH = 5
HOUGH_MAX_LINE_GAP = 30

# Open then close (3x3, twice each) can grow a shape by at most this much, and only towards the
# frame's edge; a region grown by _LINE_MARGIN around the shapes gives the full-frame result.
_MORPH_SPREAD = MORPH_ITERATIONS * (MORPH_KERNEL.shape[0] // 2)
_LINE_MARGIN = 2 * _MORPH_SPREAD + 2
_HOUGH_SHIFT = 16  # fixed-point bits of the Hough walk


@dataclass(frozen=True, eq=False)  # arrays have no single truth value, so no __eq__
class SpineGeometry:
    """What post-processing found in one label map.

    masks: uint8 [3, H, W] of 0/1 (MID, VTB, EPI after gap fixing; all zero when no MID line).
    mid, epi: float64 (2, 2) [[x1, y1], [x2, y2]] or None. vtb: float64 (4, 2) corners or None.
    """

    masks: np.ndarray
    mid: np.ndarray | None
    vtb: np.ndarray | None
    epi: np.ndarray | None


def validate_labels(labels: object, what: str = "labels") -> np.ndarray:
    """The label map as a C-contiguous uint8 HxW array, or ValueError naming what is wrong."""
    if not isinstance(labels, np.ndarray):
        raise ValueError(f"{what} must be a numpy array, got {type(labels).__name__}")
    if labels.ndim != 2:
        raise ValueError(f"{what} must be 2-D (H, W), got shape {labels.shape}")
    if labels.dtype != np.uint8:
        raise ValueError(f"{what} must be uint8, got dtype {labels.dtype}")
    if labels.shape[0] < 1 or labels.shape[1] < 1:
        raise ValueError(f"{what} shape {labels.shape} is empty")
    return np.ascontiguousarray(labels)


# ---------------------------------------------------------------------------------------------
# Zhang-Suen thinning as scikit-image runs it
# ---------------------------------------------------------------------------------------------
# A pixel's 8 neighbours are coded NW=1, N=2, NE=4, E=8, SE=16, S=32, SW=64, W=128. The table
# says in which sub-iteration a set pixel with that neighbourhood is removed: bit 1 the first,
# bit 2 the second.


def _zhang_suen_removal(code: int) -> int:
    """The removal bits the paper's conditions give for one neighbourhood code."""
    p = [(code >> bit) & 1 for bit in (1, 2, 3, 4, 5, 6, 7, 0)]  # N, NE, E, SE, S, SW, W, NW
    north, east, south, west = p[0], p[2], p[4], p[6]
    neighbours = sum(p)
    transitions = sum(1 for k in range(8) if p[k] == 0 and p[(k + 1) % 8] == 1)
    if not (2 <= neighbours <= 6 and transitions == 1):
        return 0
    first = north * east * south == 0 and east * south * west == 0
    second = north * east * west == 0 and north * south * west == 0
    return (1 if first else 0) | (2 if second else 0)


# scikit-image's table departs from the paper's conditions on these neighbourhoods; the seed's
# skeletons come from that table, so parity needs the same values.
_SKIMAGE_TABLE_DEPARTURES = {
    3: 1, 6: 1, 10: 3, 11: 1, 12: 1, 14: 1, 24: 2, 26: 2, 40: 3, 48: 0, 56: 2, 96: 2, 104: 2,
    108: 2, 129: 0, 130: 3, 131: 1, 134: 1, 160: 3, 161: 1, 176: 2, 192: 2, 194: 1, 198: 1,
    224: 2,
}


def _thinning_table() -> np.ndarray:
    table = np.array([_zhang_suen_removal(code) for code in range(256)], np.uint8)
    for code, removal in _SKIMAGE_TABLE_DEPARTURES.items():
        table[code] = removal
    return table


THINNING_TABLE = _thinning_table()


_QUEUED = 3  # a set pixel (bit 1) that is on the border list (bit 2)

# Kernels index flat buffers with unsigned integers: Numba adds a negative-index fix-up to every
# access through a signed index, which costs more than the work itself in these loops.


@njit(cache=True, nogil=True)
def _neighbour_code(flat, idx, width):
    """Neighbourhood code of the pixel at unsigned flat index ``idx`` (never on the outer ring)."""
    one = np.uint64(1)
    up = idx - width
    down = idx + width
    return ((flat[up - one] & 1) | ((flat[up] & 1) << 1) | ((flat[up + one] & 1) << 2)
            | ((flat[idx + one] & 1) << 3) | ((flat[down + one] & 1) << 4) | ((flat[down] & 1) << 5)
            | ((flat[down - one] & 1) << 6) | ((flat[idx - one] & 1) << 7))


@njit(cache=True, nogil=True)
def _list_border(image, border):
    """Mark and list the set pixels that have an empty neighbour; returns how many."""
    height, width = image.shape
    size = 0
    for i in range(1, height - 1):
        above = image[i - 1]
        row = image[i]
        below = image[i + 1]
        for j in range(1, width - 1):
            if row[j] and not (above[j - 1] & above[j] & above[j + 1] & row[j - 1] & row[j + 1]
                               & below[j - 1] & below[j] & below[j + 1]):
                row[j] = _QUEUED
                border[size] = i * width + j
                size += 1
    return size


@njit(cache=True, nogil=True)
def _thin_in_place(image, table, border, removed):
    """Thin a 0/1 image whose outer rows and columns are 0 down to its skeleton, as skimage does.

    Each sub-iteration decides every removal from the image as it stood before it, then applies
    them all; sub-iterations alternate until a full round removes nothing. Only pixels with an
    empty neighbour can go (the table never removes a pixel with 8 set neighbours), so the kernel
    keeps a list of those instead of rescanning the region: the cost follows the shape's border,
    not its box. ``border`` and ``removed`` are unsigned scratch of the image's size.
    """
    flat = image.reshape(-1)
    width = np.uint64(image.shape[1])
    one = np.uint64(1)
    size = _list_border(image, border)
    changed = True
    while changed:
        changed = False
        for pass_bit in (1, 2):
            count = 0
            for k in range(size):
                if table[_neighbour_code(flat, np.uint64(border[k]), width)] & pass_bit:
                    removed[count] = border[k]
                    count += 1
            if count == 0:
                continue
            changed = True
            for k in range(count):
                flat[np.uint64(removed[k])] = 0
            kept = 0
            for k in range(size):
                if flat[np.uint64(border[k])]:
                    border[kept] = border[k]
                    kept += 1
            size = kept
            for k in range(count):  # neighbours of removed pixels now touch the background
                idx = np.uint64(removed[k])
                for nb in (idx - width - one, idx - width, idx - width + one, idx - one, idx + one,
                           idx + width - one, idx + width, idx + width + one):
                    if flat[nb] == 1:
                        flat[nb] = _QUEUED
                        border[size] = nb
                        size += 1
    for k in range(size):
        flat[np.uint64(border[k])] = 1


# ---------------------------------------------------------------------------------------------
# OpenCV's probabilistic Hough transform
# ---------------------------------------------------------------------------------------------


def _hough_trig(theta: float, rho: float) -> tuple[np.ndarray, np.ndarray]:
    """cos and sin per angle step over rho, rounded to float32 as OpenCV's table is."""
    theta32 = float(np.float32(theta))
    inv_rho = float(np.float32(1.0 / rho))
    steps = int(round(math.pi / theta32))
    cos_table = np.array([math.cos(n * theta32) * inv_rho for n in range(steps)], np.float32)
    sin_table = np.array([math.sin(n * theta32) * inv_rho for n in range(steps)], np.float32)
    return cos_table, sin_table


HOUGH_COS, HOUGH_SIN = _hough_trig(HOUGH_THETA, HOUGH_RHO)


def hough_rho_bins(height: int, width: int) -> int:
    """Distance bins of OpenCV's accumulator for a height x width image (rho = 1)."""
    return int(round(((width + height) * 2 + 1) / HOUGH_RHO))


@njit(cache=True, nogil=True)
def _vote_cells(i, j, cos_table, sin_table, bins, centre, cells):
    """Accumulator cell (angle-major, flat, unsigned) of pixel (i, j) for every angle, computed in
    float32 as OpenCV does."""
    fi = np.float32(i)
    fj = np.float32(j)
    for n in range(cos_table.shape[0]):
        cells[n] = n * bins + np.int32(np.rint(fj * cos_table[n] + fi * sin_table[n])) + centre


@njit(cache=True, nogil=True)
def _clear_accumulator(accum, cos_table, sin_table, bins, centre, top, left, height, width):
    """Zero the cells that pixels of this region can reach; the rest of the accumulator is unused."""
    for n in range(cos_table.shape[0]):
        lo = bins
        hi = 0
        for i in (top, top + height - 1):
            for j in (left, left + width - 1):
                r = np.int64(np.rint(np.float32(j) * cos_table[n] + np.float32(i) * sin_table[n])) + centre
                lo = min(lo, r)
                hi = max(hi, r)
        accum[n * bins + max(lo - 1, 0):n * bins + min(hi + 2, bins)] = 0


@njit(cache=True, nogil=True)
def _next_random(state):
    """OpenCV's cv::RNG step (multiply-with-carry); returns the new state and its 32-bit output."""
    state = (state & np.uint64(0xFFFFFFFF)) * np.uint64(4164903690) + (state >> np.uint64(32))
    return state, state & np.uint64(0xFFFFFFFF)


@njit(cache=True, nogil=True)
def _is_set(image, i, j):
    return 0 <= i < image.shape[0] and 0 <= j < image.shape[1] and image[i, j] != 0


@njit(cache=True, nogil=True)
def _walk_position(x, y, along_x):
    if along_x:
        return y >> _HOUGH_SHIFT, x
    return y, x >> _HOUGH_SHIFT


@njit(cache=True, nogil=True)
def _walk_end(points, top, left, frame_height, frame_width, i, j, x0, y0, dx, dy, along_x, max_gap):
    """Last set pixel before the walk leaves the frame or meets more than ``max_gap`` empty ones."""
    end_i, end_j = i, j
    x, y = x0, y0
    gap = 0
    while True:
        i1, j1 = _walk_position(x, y, along_x)
        if j1 < 0 or j1 >= frame_width or i1 < 0 or i1 >= frame_height:
            break
        if _is_set(points, i1 - top, j1 - left):
            gap = 0
            end_i, end_j = i1, j1
        else:
            gap += 1
            if gap > max_gap:
                break
        x += dx
        y += dy
    return end_i, end_j


@njit(cache=True, nogil=True)
def _walk_clear(points, top, left, x0, y0, dx, dy, along_x, end_i, end_j, unvote,
                accum, cos_table, sin_table, bins, centre, cells):
    """Remove the set pixels up to the segment's end; take back their votes for a kept segment."""
    x, y = x0, y0
    while True:
        i1, j1 = _walk_position(x, y, along_x)
        if _is_set(points, i1 - top, j1 - left):
            if unvote:
                _vote_cells(i1, j1, cos_table, sin_table, bins, centre, cells)
                for n in range(cos_table.shape[0]):
                    accum[cells[n]] -= 1
            points[i1 - top, j1 - left] = 0
        if i1 == end_i and j1 == end_j:
            break
        x += dx
        y += dy


@njit(cache=True, nogil=True)
def _hough_segments(points, top, left, frame_height, frame_width, cos_table, sin_table, accum,
                    threshold, min_length, max_gap, queue, cells, segments):
    """Segments of OpenCV's HoughLinesP (rho 1) on the non-zero pixels of ``points``.

    ``points`` is the region at (top, left) of a frame_height x frame_width image that is empty
    elsewhere. Coordinates, angle table and random order are the full frame's, so the segments
    (x1, y1, x2, y2 in frame pixels, in OpenCV's order) are those HoughLinesP returns for the
    whole frame. ``accum`` is flat, angle-major, hough_rho_bins() cells per angle. ``points`` is
    consumed. Returns the number of segments written.
    """
    height, width = points.shape
    bins = accum.shape[0] // cos_table.shape[0]
    centre = (bins - 1) // 2
    count = 0
    for i in range(height):
        for j in range(width):
            if points[i, j]:
                queue[count, 0] = i + top
                queue[count, 1] = j + left
                count += 1
    _clear_accumulator(accum, cos_table, sin_table, bins, centre, top, left, height, width)
    state = np.uint64(0xFFFFFFFFFFFFFFFF)
    found = 0
    while count > 0:
        state, value = _next_random(state)
        pick = np.int64(value % np.uint64(count))
        i = queue[pick, 0]
        j = queue[pick, 1]
        queue[pick, 0] = queue[count - 1, 0]
        queue[pick, 1] = queue[count - 1, 1]
        count -= 1
        if points[i - top, j - left] == 0:  # already taken by a segment
            continue
        _vote_cells(i, j, cos_table, sin_table, bins, centre, cells)
        best_votes = threshold - 1
        best_n = 0
        for n in range(cos_table.shape[0]):
            votes = accum[cells[n]] + 1
            accum[cells[n]] = votes
            if votes > best_votes:
                best_votes = votes
                best_n = n
        if best_votes < threshold:
            continue
        a = -sin_table[best_n]
        b = cos_table[best_n]
        x0 = np.int64(j)
        y0 = np.int64(i)
        along_x = abs(a) > abs(b)
        if along_x:
            dx0 = 1 if a > 0 else -1
            dy0 = np.int64(np.rint(b * np.float32(1 << _HOUGH_SHIFT) / abs(a)))
            y0 = (y0 << _HOUGH_SHIFT) + (1 << (_HOUGH_SHIFT - 1))
        else:
            dy0 = 1 if b > 0 else -1
            dx0 = np.int64(np.rint(a * np.float32(1 << _HOUGH_SHIFT) / abs(b)))
            x0 = (x0 << _HOUGH_SHIFT) + (1 << (_HOUGH_SHIFT - 1))
        i_a, j_a = _walk_end(points, top, left, frame_height, frame_width, i, j, x0, y0, dx0, dy0,
                             along_x, max_gap)
        i_b, j_b = _walk_end(points, top, left, frame_height, frame_width, i, j, x0, y0, -dx0, -dy0,
                             along_x, max_gap)
        good = abs(j_b - j_a) >= min_length or abs(i_b - i_a) >= min_length
        _walk_clear(points, top, left, x0, y0, dx0, dy0, along_x, i_a, j_a, good,
                    accum, cos_table, sin_table, bins, centre, cells)
        _walk_clear(points, top, left, x0, y0, -dx0, -dy0, along_x, i_b, j_b, good,
                    accum, cos_table, sin_table, bins, centre, cells)
        if good:
            segments[found, 0] = j_a
            segments[found, 1] = i_a
            segments[found, 2] = j_b
            segments[found, 3] = i_b
            found += 1
    return found


# ---------------------------------------------------------------------------------------------
# Class split
# ---------------------------------------------------------------------------------------------


@njit(cache=True, nogil=True)
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


@njit(cache=True, nogil=True)
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


# ---------------------------------------------------------------------------------------------
# Stray blobs: which part of a class can matter
# ---------------------------------------------------------------------------------------------
# A stray blob far from the line widens the class's bounding box, and with it the cost of every
# region-wide call. Pixels are grouped into clusters of 8-connected occupied TILE x TILE tiles:
# two clusters are at least TILE + 1 pixels apart, and open-then-close (erode 2, dilate 4,
# erode 2) treats shapes 10 or more pixels apart independently, so each cluster's result is its
# own. A cluster too small to yield a contour above the area threshold is left out of the
# region, unless the region would cut through it.

TILE = 16
_TILE_SHIFT = 4


@njit(cache=True, nogil=True)
def _mark_tiles(mask, top, bottom, left, right, tile_label, columns):
    """tile_label = -1 on tiles (of the region) holding a set pixel, 0 elsewhere.

    Each band of TILE rows is OR-ed into ``columns`` (TILE bytes per tile column), which is then
    read as two 64-bit words per tile. Loops run over slices from 0 so that Numba drops its
    negative-index handling and LLVM vectorises them (a loop from ``left`` runs ~30x slower).
    """
    t0, t1 = top >> _TILE_SHIFT, ((bottom - 1) >> _TILE_SHIFT) + 1
    l0, l1 = left >> _TILE_SHIFT, ((right - 1) >> _TILE_SHIFT) + 1
    words = columns.view(np.uint64)
    band = columns[left:right]
    for ti in range(t0, t1):
        columns[l0 << _TILE_SHIFT:l1 << _TILE_SHIFT] = 0
        rows = mask[max(ti << _TILE_SHIFT, top):min((ti + 1) << _TILE_SHIFT, bottom), left:right]
        for i in range(rows.shape[0]):
            for k in range(rows.shape[1]):
                band[k] |= rows[i, k]
        for tj in range(l0, l1):
            tile_label[ti, tj] = -1 if words[2 * tj] | words[2 * tj + 1] else 0
    return t0, t1, l0, l1


@njit(cache=True, nogil=True)
def _label_clusters(tile_label, t0, t1, l0, l1, stack):
    """Number the 8-connected groups of marked tiles 1..n in place; returns n."""
    n = 0
    for ti in range(t0, t1):
        for tj in range(l0, l1):
            if tile_label[ti, tj] != -1:
                continue
            n += 1
            tile_label[ti, tj] = n
            stack[0, 0] = ti
            stack[0, 1] = tj
            depth = 1
            while depth:
                depth -= 1
                ci, cj = stack[depth, 0], stack[depth, 1]
                for ni in range(max(ci - 1, t0), min(ci + 2, t1)):
                    for nj in range(max(cj - 1, l0), min(cj + 2, l1)):
                        if tile_label[ni, nj] == -1:
                            tile_label[ni, nj] = n
                            stack[depth, 0] = ni
                            stack[depth, 1] = nj
                            depth += 1
    return n


@njit(cache=True, nogil=True)
def _cluster_boxes(mask, top, bottom, left, right, tile_label, t0, t1, l0, l1, n, boxes, columns):
    """Exact pixel box [top, bottom, left, right) of every cluster, from its tiles' pixels."""
    for c in range(1, n + 1):
        boxes[c, 0] = bottom
        boxes[c, 1] = top
        boxes[c, 2] = right
        boxes[c, 3] = left
    for ti in range(t0, t1):
        i0, i1 = max(ti << _TILE_SHIFT, top), min((ti + 1) << _TILE_SHIFT, bottom)
        for tj in range(l0, l1):
            c = tile_label[ti, tj]
            if c <= 0:
                continue
            j0, j1 = max(tj << _TILE_SHIFT, left), min((tj + 1) << _TILE_SHIFT, right)
            tile_columns = columns[:j1 - j0]
            tile_columns[:] = 0
            for i in range(i0, i1):
                row = mask[i, j0:j1]
                hit = np.uint8(0)
                for k in range(row.shape[0]):
                    hit |= row[k]
                    tile_columns[k] |= row[k]
                if hit:
                    boxes[c, 0] = min(boxes[c, 0], i)
                    boxes[c, 1] = max(boxes[c, 1], i + 1)
            for k in range(j1 - j0):
                if tile_columns[k]:
                    boxes[c, 2] = min(boxes[c, 2], j0 + k)
                    break
            for k in range(j1 - j0 - 1, -1, -1):
                if tile_columns[k]:
                    boxes[c, 3] = max(boxes[c, 3], j0 + k + 1)
                    break


@njit(cache=True, nogil=True)
def _relevant_region(mask, top, bottom, left, right, spread, min_area, margin,
                     tile_label, stack, boxes, keep, columns, region):
    """The part of the region [top, bottom) x [left, right) of ``mask`` whose contours can matter.

    A cluster whose box, widened by ``spread`` pixels (how far the caller's morphology can grow a
    shape), cannot hold a contour of area ``min_area`` or more is dropped, unless it lies within
    ``margin`` pixels of a kept one. Writes the kept clusters' box grown by ``margin`` (clipped to
    the frame) into ``region``; returns False when nothing is kept.
    """
    height, width = mask.shape
    t0, t1, l0, l1 = _mark_tiles(mask, top, bottom, left, right, tile_label, columns)
    n = _label_clusters(tile_label, t0, t1, l0, l1, stack)
    _cluster_boxes(mask, top, bottom, left, right, tile_label, t0, t1, l0, l1, n, boxes, columns)
    region[0] = height
    region[1] = 0
    region[2] = width
    region[3] = 0
    found = False
    for c in range(1, n + 1):
        # A contour through pixel centres inside a w x h box has area at most (w - 1)(h - 1).
        w = boxes[c, 3] - boxes[c, 2] + 2 * spread
        h = boxes[c, 1] - boxes[c, 0] + 2 * spread
        keep[c] = (w - 1) * (h - 1) >= min_area
        if keep[c]:
            found = True
            region[0] = min(region[0], boxes[c, 0])
            region[1] = max(region[1], boxes[c, 1])
            region[2] = min(region[2], boxes[c, 2])
            region[3] = max(region[3], boxes[c, 3])
    if not found:
        return False
    grown = True
    while grown:
        grown = False
        g0, g1 = max(region[0] - margin, 0), min(region[1] + margin, height)
        g2, g3 = max(region[2] - margin, 0), min(region[3] + margin, width)
        for c in range(1, n + 1):
            if not keep[c] and boxes[c, 0] < g1 and boxes[c, 1] > g0 and boxes[c, 2] < g3 and boxes[c, 3] > g2:
                keep[c] = True
                grown = True
                region[0] = min(region[0], boxes[c, 0])
                region[1] = max(region[1], boxes[c, 1])
                region[2] = min(region[2], boxes[c, 2])
                region[3] = max(region[3], boxes[c, 3])
    region[0] = max(region[0] - margin, 0)
    region[1] = min(region[1] + margin, height)
    region[2] = max(region[2] - margin, 0)
    region[3] = min(region[3] + margin, width)
    return True


# ---------------------------------------------------------------------------------------------
# Per-frame steps
# ---------------------------------------------------------------------------------------------


Box = tuple[int, int, int, int]  # top, bottom, left, right (exclusive), in frame pixels


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
        self.boxes = np.zeros((3, 4), np.int64)
        tiles = ((height + TILE - 1) // TILE, (width + TILE - 1) // TILE)
        self.tile_label = np.zeros(tiles, np.int32)
        self.stack = np.empty((tiles[0] * tiles[1], 2), np.int64)
        self.cluster_boxes = np.empty((tiles[0] * tiles[1] + 1, 4), np.int64)
        self.keep = np.empty(tiles[0] * tiles[1] + 1, np.bool_)
        self.tile_columns = np.empty(tiles[1] * TILE, np.uint8)  # TILE = 16: two words per tile
        self.region = np.empty(4, np.int64)

    def relevant_region(self, mask: np.ndarray, box: Box, spread: int, min_area: float,
                        margin: int) -> Box | None:
        """See _relevant_region; None when no cluster can matter."""
        if _is_empty(box):
            return None
        if not _relevant_region(mask, *box, spread, math.ceil(min_area), margin, self.tile_label,
                                self.stack, self.cluster_boxes, self.keep, self.tile_columns,
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


def _line_of(mask: np.ndarray, box: Box, min_area: float, scratch: _Scratch) -> np.ndarray | None:
    """The seed's line for one class: end points of the longest Hough segment of the skeleton."""
    # A contour must exceed min_area; the bound on a contour's area is a whole number.
    found = scratch.relevant_region(mask, box, _MORPH_SPREAD, math.floor(min_area) + 1, _LINE_MARGIN)
    if found is None:
        return None
    height, width = mask.shape
    top, bottom, left, right = found
    region = mask[top:bottom, left:right]
    region = cv2.morphologyEx(region, cv2.MORPH_OPEN, MORPH_KERNEL, iterations=MORPH_ITERATIONS)
    region = cv2.morphologyEx(region, cv2.MORPH_CLOSE, MORPH_KERNEL, iterations=MORPH_ITERATIONS)
    best = _largest_contour(region, (left, top), lambda area: area > min_area)
    if best is None:
        return None
    x, y, w, h = cv2.boundingRect(best)
    filled = scratch.canvas(h + 2, w + 2)  # one empty pixel all round, as skimage pads
    cv2.drawContours(filled, [best], -1, 1, cv2.FILLED, offset=(1 - x, 1 - y))
    _thin_in_place(filled, THINNING_TABLE, scratch.border, scratch.removed)
    found = _hough_segments(filled, y - 1, x - 1, height, width, HOUGH_COS, HOUGH_SIN, scratch.accum,
                            HOUGH_THRESHOLD, HOUGH_MIN_LINE_LENGTH, HOUGH_MAX_LINE_GAP,
                            scratch.queue, scratch.cells, scratch.segments)
    if found == 0:
        return None
    segments = scratch.segments[:found]
    squared = (segments[:, 2] - segments[:, 0]) ** 2 + (segments[:, 3] - segments[:, 1]) ** 2
    return segments[int(np.argmax(squared))].reshape(2, 2).astype(np.float64)


def _box_of(mask: np.ndarray, box: Box, min_area: float, scratch: _Scratch) -> np.ndarray | None:
    """The seed's box: min-area rect corners of the largest external contour."""
    found = scratch.relevant_region(mask, box, 0, min_area, 1)
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
    highest = _split_classes(labels, masks, scratch.boxes, scratch.column_bits, scratch.row_bits)
    if highest > LABEL_EPI:
        raise ValueError(f"labels: value {highest} is not a spine class (0 background, 1 MID, 2 VTB, 3 EPI)")
    boxes = [tuple(int(v) for v in row) for row in scratch.boxes]
    kernel = np.ones((spec.gap_kernel, spec.gap_kernel), np.uint8)
    # Both fixes read the other class from the labels, i.e. from the original masks.
    boxes[VTB] = _add_overlap(masks[VTB], boxes[VTB], labels, LABEL_MID, boxes[MID], kernel, spec.gap_iterations)
    boxes[MID] = _add_overlap(masks[MID], boxes[MID], labels, LABEL_EPI, boxes[EPI], kernel, spec.gap_iterations)

    mid = _line_of(masks[MID], boxes[MID], spec.min_line_area, scratch)
    if mid is None:
        for plane, box in enumerate(boxes):
            if not _is_empty(box):
                masks[plane, box[0]:box[1], box[2]:box[3]] = 0
        return SpineGeometry(masks, None, None, None)
    epi = _line_of(masks[EPI], boxes[EPI], spec.min_line_area, scratch)
    vtb = _box_of(masks[VTB], boxes[VTB], spec.min_box_area, scratch)
    return SpineGeometry(masks, mid, vtb, epi)


def _nonzero_box(image: np.ndarray) -> Box | None:
    x, y, w, h = cv2.boundingRect(image)
    return None if w == 0 else (y, y + h, x, x + w)


def skeletonize(mask: np.ndarray) -> np.ndarray:
    """scikit-image's ``skeletonize`` (Zhang-Suen) of a 2-D uint8 mask (non-zero = set), as 0/1."""
    mask = validate_labels(mask, "mask")
    height, width = mask.shape
    skeleton = np.zeros((height, width), np.uint8)
    box = _nonzero_box(mask)
    if box is None:
        return skeleton
    top, bottom, left, right = box
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
    box = _nonzero_box(image)
    if box is None:
        return np.zeros((0, 4), np.int32)
    top, bottom, left, right = box
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
