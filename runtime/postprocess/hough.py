"""OpenCV's probabilistic Hough transform (``HoughLinesP``, rho 1) reproduced bit for bit.

HoughLinesP visits points in a pseudo-random order (cv::RNG) and walks each candidate line in
fixed point; both are reproduced, so the segments and their order equal OpenCV's.
"""

from __future__ import annotations

import math

import numpy as np

from ..jit import kernel

HOUGH_RHO = 1.0
HOUGH_THETA = np.pi / 180
HOUGH_THRESHOLD = 30
HOUGH_MIN_LINE_LENGTH = 5
HOUGH_MAX_LINE_GAP = 30
_HOUGH_SHIFT = 16  # fixed-point bits of the Hough walk


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


@kernel
def _vote_cells(i, j, cos_table, sin_table, bins, centre, cells):
    """Accumulator cell (angle-major, flat, unsigned) of pixel (i, j) for every angle, computed in
    float32 as OpenCV does."""
    fi = np.float32(i)
    fj = np.float32(j)
    for n in range(cos_table.shape[0]):
        cells[n] = n * bins + np.int32(np.rint(fj * cos_table[n] + fi * sin_table[n])) + centre


@kernel
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


@kernel
def _next_random(state):
    """OpenCV's cv::RNG step (multiply-with-carry); returns the new state and its 32-bit output."""
    state = (state & np.uint64(0xFFFFFFFF)) * np.uint64(4164903690) + (state >> np.uint64(32))
    return state, state & np.uint64(0xFFFFFFFF)


@kernel
def _is_set(image, i, j):
    return 0 <= i < image.shape[0] and 0 <= j < image.shape[1] and image[i, j] != 0


@kernel
def _walk_position(x, y, along_x):
    if along_x:
        return y >> _HOUGH_SHIFT, x
    return y, x >> _HOUGH_SHIFT


@kernel
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


@kernel
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


@kernel
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
