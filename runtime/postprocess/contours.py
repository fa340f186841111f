"""The largest external contour of a packed plane, as cv2.findContours and cv2.contourArea see it.

The seed keeps a class's largest external contour (``RETR_EXTERNAL``, by ``cv2.contourArea``) and
fills it (``cv2.drawContours``, ``FILLED``). Here the plane's 8-connected components come from its
runs of set pixels (union-find, each rooted at its first run in raster order); each component's
outer border is followed from its first pixel by OpenCV's own border-following rule (same start,
same turn order, same stop test), and the area is the shoelace sum of that closed path, which is
what ``cv2.contourArea`` returns for it. OpenCV lists contours last-found first, so of equal areas
the component that starts last in raster order wins. A component inside another's hole is no
external contour, but it never matters: its area is smaller than its host's.

Filling the contour covers the component and its holes, the pieces of background that are
4-connected to nothing outside it; ``_fill`` finds them from the gaps between the component's
runs. ``_trace`` also writes the contour's points as ``CHAIN_APPROX_SIMPLE`` does (for the VTB
box, which ``cv2.minAreaRect`` fits to them).
"""

from __future__ import annotations

import numpy as np

from ..jit import kernel
from .bitplane import WORD_BITS, _trailing_zeros

# OpenCV's chain code: direction s steps (dy, dx); s + 1 turns counter-clockwise on screen
_STEP_Y = np.array([0, -1, -1, -1, 0, 1, 1, 1], np.int64)
_STEP_X = np.array([1, 1, 0, -1, -1, -1, 0, 1], np.int64)


@kernel
def _runs(plane, spans, top, rows, w0, words, run_row, run_start, run_end, row_first):
    """List the runs of set pixels of the packed region, row by row, left to right.

    ``spans`` [2, H]: each row's first and one past its last word that may be non-zero. A run is
    frame row ``run_row``, columns [run_start, run_end). ``row_first[i]`` is the first run of
    region row i (``row_first[rows]`` the count). Returns the number of runs.
    """
    one = np.uint64(1)
    n = 0
    for i in range(rows):
        row_first[i] = n
        y = top + i
        k0, k1 = max(spans[0, y], w0), min(spans[1, y], w0 + words)
        open_start = -1
        for k in range(k0, k1):
            x = plane[y, k]
            base = k * WORD_BITS
            if open_start >= 0:  # a run reaching the previous word's last bit
                end = np.int64(_trailing_zeros(~x))
                if end == WORD_BITS:
                    continue
                run_row[n], run_start[n], run_end[n] = y, open_start, base + end
                n += 1
                open_start = -1
                x &= ~((one << np.uint64(end)) - one)
            while x:
                start = _trailing_zeros(x)
                end = _trailing_zeros(~(x | ((one << start) - one)))
                if end == WORD_BITS:
                    open_start = base + np.int64(start)
                    break
                run_row[n], run_start[n], run_end[n] = y, base + np.int64(start), base + np.int64(end)
                n += 1
                x &= ~((one << end) - one)
        if open_start >= 0:
            run_row[n], run_start[n], run_end[n] = y, open_start, k1 * WORD_BITS
            n += 1
    row_first[rows] = n
    return n


@kernel
def _root(parent, k):
    while parent[k] != k:
        parent[k] = parent[parent[k]]
        k = parent[k]
    return k


@kernel
def _join(parent, a, b):
    """Union of the sets of a and b; the smaller index is the root."""
    a = _root(parent, a)
    b = _root(parent, b)
    if a < b:
        parent[b] = a
    elif b < a:
        parent[a] = b


@kernel
def _components(run_start, run_end, row_first, rows, parent):
    """Group runs into 8-connected components: afterwards parent[k] is the first run of k's
    component, and a run is its component's first exactly when parent[k] == k."""
    for k in range(row_first[rows]):
        parent[k] = k
    for i in range(1, rows):
        a, a_end = row_first[i], row_first[i + 1]
        b, b_end = row_first[i - 1], row_first[i]
        while a < a_end and b < b_end:  # runs touch (diagonals too) when their spans, widened by 1, overlap
            if run_start[a] <= run_end[b] and run_start[b] <= run_end[a]:
                _join(parent, a, b)
            if run_end[a] < run_end[b]:
                a += 1
            else:
                b += 1
    for k in range(row_first[rows]):
        parent[k] = _root(parent, k)


@kernel
def _is_set(plane, top, rows, w0, words, y, x):
    if y < top or y >= top + rows or x < 0:
        return False
    k = x >> 6
    if k < w0 or k >= w0 + words:
        return False
    return (plane[y, k] >> np.uint64(x & 63)) & np.uint64(1) != 0


@kernel
def _trace(plane, top, rows, w0, words, y0, x0, points, record):
    """Follow the outer border from its first pixel (y0, x0) as OpenCV's findContours does.

    Returns twice the enclosed area (the shoelace sum, >= 0) and, with ``record``, the number of
    points written to ``points`` ((n, 2) x, y: the CHAIN_APPROX_SIMPLE contour).
    """
    count = 0
    s = 4
    y1, x1 = y0, x0
    while True:  # the first neighbour clockwise from the west: OpenCV's start
        s = (s - 1) & 7
        y1, x1 = y0 + _STEP_Y[s], x0 + _STEP_X[s]
        if s == 4 or _is_set(plane, top, rows, w0, words, y1, x1):
            break
    if s == 4:  # back at the west neighbour, which is empty at a first pixel: a lone pixel
        if record:
            points[0, 0], points[0, 1] = x0, y0
            count = 1
        return 0, count
    y3, x3 = y0, x0
    previous = s ^ 4
    twice_area = 0
    while True:
        end = s
        y4, x4 = y3, x3
        while s < end + 8:  # turn counter-clockwise from the way back to the next set pixel
            s += 1
            y4, x4 = y3 + _STEP_Y[s & 7], x3 + _STEP_X[s & 7]
            if _is_set(plane, top, rows, w0, words, y4, x4):
                break
        s &= 7
        if record and s != previous:
            points[count, 0], points[count, 1] = x3, y3
            count += 1
        previous = s
        twice_area += x3 * y4 - x4 * y3
        if y4 == y0 and x4 == x0 and y3 == y1 and x3 == x1:
            break
        y3, x3 = y4, x4
        s = (s + 4) & 7
    return abs(twice_area), count


@kernel
def _largest(plane, top, rows, w0, words, run_row, run_start, parent, n, min_twice_area, strict, points):
    """The first run of the component whose outer contour the seed keeps, or -1.

    A contour passes when twice its area is > ``min_twice_area`` (``strict``) or >= it; of those
    the largest wins, and of equal areas the one that starts last (OpenCV's list is last-first).
    """
    best, best_area = -1, -1
    for k in range(n):
        if parent[k] != k:
            continue
        area, _ = _trace(plane, top, rows, w0, words, run_row[k], run_start[k], points, False)
        passes = area > min_twice_area if strict else area >= min_twice_area
        if passes and area >= best_area:
            best, best_area = k, area
    return best


@kernel
def _fill(run_row, run_start, run_end, row_first, top, parent, root, n,
          gap_start, gap_end, gap_parent, gap_row_first, canvas, box):
    """Draw the component of ``root`` and its holes, as cv2.drawContours fills its outer contour.

    ``box`` receives the component's bounding box (top, left, height, width); ``canvas`` (flat)
    becomes a (height + 2) x (width + 2) image of 0/1 with the box at (1, 1), returned. Holes are
    the gaps between the component's runs in a row that no chain of 4-connected gaps joins to
    the outside (the parts of rows left of its first run or right of its last one).
    """
    y_top = run_row[root]
    y_bottom, x_left, x_right = y_top, run_start[root], run_end[root]
    for k in range(root, n):
        if parent[k] == root:
            y_bottom = run_row[k]
            x_left = min(x_left, run_start[k])
            x_right = max(x_right, run_end[k])
    gaps = 1  # gap 0 stands for the outside
    gap_parent[0] = 0
    previous_first, previous_last = 0, 0
    for y in range(y_top, y_bottom + 1):
        gap_row_first[y - y_top] = gaps
        first, last = -1, -1
        end = -1
        for k in range(row_first[y - top], row_first[y - top + 1]):
            if parent[k] != root:
                continue
            if end >= 0:
                gap_start[gaps], gap_end[gaps], gap_parent[gaps] = end, run_start[k], gaps
                gaps += 1
            else:
                first = run_start[k]
            end = last = run_end[k]
        g0, g1 = gap_row_first[y - y_top], gaps
        if y == y_top:
            for g in range(g0, g1):
                _join(gap_parent, g, 0)
        else:
            p0, p1 = gap_row_first[y - y_top - 1], g0
            for g in range(g0, g1):  # this row's gaps under the previous row's outside parts
                if gap_start[g] < previous_first or gap_end[g] > previous_last:
                    _join(gap_parent, g, 0)
            for p in range(p0, p1):  # the previous row's gaps over this row's outside parts
                if gap_start[p] < first or gap_end[p] > last:
                    _join(gap_parent, p, 0)
            g, p = g0, p0
            while g < g1 and p < p1:  # gaps above one another share a column
                if max(gap_start[g], gap_start[p]) < min(gap_end[g], gap_end[p]):
                    _join(gap_parent, g, p)
                if gap_end[g] < gap_end[p]:
                    g += 1
                else:
                    p += 1
        previous_first, previous_last = first, last
    for g in range(gap_row_first[y_bottom - y_top], gaps):
        _join(gap_parent, g, 0)
    height, width = y_bottom - y_top + 1, x_right - x_left
    stride = width + 2
    image = canvas[:(height + 2) * stride].reshape((height + 2, stride))
    image[:] = 0
    for y in range(y_top, y_bottom + 1):
        row = image[y - y_top + 1]
        for k in range(row_first[y - top], row_first[y - top + 1]):
            if parent[k] == root:
                row[run_start[k] - x_left + 1:run_end[k] - x_left + 1] = 1
        g1 = gap_row_first[y - y_top + 1] if y < y_bottom else gaps
        for g in range(gap_row_first[y - y_top], g1):
            if _root(gap_parent, g) != 0:
                row[gap_start[g] - x_left + 1:gap_end[g] - x_left + 1] = 1
    box[0], box[1], box[2], box[3] = y_top, x_left, height, width
    return image
