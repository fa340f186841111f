"""The seed's line and box of one class, each in one kernel call from the class's mask.

A line (MID, EPI): the class's region packed 64 pixels to a word, opened then closed, the largest
external contour with area > the threshold, filled, skeletonised, the probabilistic Hough
transform, the longest segment. A box (VTB): the largest external contour with area >= the
threshold, written as OpenCV's contour points for ``cv2.minAreaRect``. Each works on the class's
bounding box and the margin its morphology needs, and only the chosen contour is drawn.
"""

from __future__ import annotations

from ..jit import kernel
from .bitplane import _open_close
from .contours import _components, _fill, _largest, _runs, _trace
from .hough import _hough_segments
from .thinning import _thin_in_place


@kernel
def _region(bounds, margin, height, width):
    """Rows [top, bottom) and words [w0, w1) of a class's bounds grown by ``margin`` pixels."""
    return (max(bounds[0] - margin, 0), min(bounds[1] + margin, height),
            max(bounds[2] - margin, 0) >> 6, ((min(bounds[3] + margin, width) - 1) >> 6) + 1)


@kernel
def _line_of(plane, spans, bounds, height, width, morph_reach, min_twice_area, threshold, min_length, max_gap,
             work, work_spans, column, runs, parent, gaps, canvas, box, border, removed, table,
             cos_table, sin_table, accum, queue, cells, segments, line):
    """The seed's line for one class (``plane``: packed, ``spans``: its words per row, ``bounds``:
    its box): writes x1, y1, x2, y2 of the longest Hough segment of the skeleton of its largest
    cleaned-up contour to ``line`` and returns True, or returns False.

    A contour counts when twice its area exceeds ``min_twice_area``. ``work``: three packed
    planes with their spans; ``runs``: 4 rows of run scratch (row, start, end, first run of each
    row); ``gaps``: 4 rows of gap scratch.
    """
    if bounds[0] >= bounds[1]:
        return False
    top, bottom, w0, w1 = _region(bounds, 2 * morph_reach, height, width)  # open + close move pixels 2r at most
    rows, words = bottom - top, w1 - w0
    if morph_reach:
        _open_close(plane, spans, work, work_spans, top, rows, w0, words, height, width, morph_reach, column)
        plane, spans = work[0], work_spans[0]
    count = _runs(plane, spans, top, rows, w0, words, runs[0], runs[1], runs[2], runs[3])
    _components(runs[1], runs[2], runs[3], rows, parent)
    best = _largest(plane, top, rows, w0, words, runs[0], runs[1], parent, count, min_twice_area, True,
                    segments)
    if best < 0:
        return False
    image = _fill(runs[0], runs[1], runs[2], runs[3], top, parent, best, count,
                  gaps[0], gaps[1], gaps[2], gaps[3], canvas, box)
    _thin_in_place(image, table, border, removed)
    found = _hough_segments(image, box[0] - 1, box[1] - 1, height, width, cos_table, sin_table, accum,
                            threshold, min_length, max_gap, queue, cells, segments)
    if found == 0:
        return False
    longest, pick = -1, 0
    for k in range(found):  # the first of equal lengths, as numpy's argmax
        dx = segments[k, 2] - segments[k, 0]
        dy = segments[k, 3] - segments[k, 1]
        if dx * dx + dy * dy > longest:
            longest, pick = dx * dx + dy * dy, k
    for c in range(4):
        line[c] = segments[pick, c]
    return True


@kernel
def _box_contour(plane, spans, bounds, height, width, min_twice_area, runs, parent, points):
    """The seed's VTB contour: writes the largest external contour with twice its area >=
    ``min_twice_area`` to ``points`` (x, y, CHAIN_APPROX_SIMPLE) and returns its length, or 0."""
    if bounds[0] >= bounds[1]:
        return 0
    top, bottom, w0, w1 = _region(bounds, 0, height, width)
    rows, words = bottom - top, w1 - w0
    count = _runs(plane, spans, top, rows, w0, words, runs[0], runs[1], runs[2], runs[3])
    _components(runs[1], runs[2], runs[3], rows, parent)
    best = _largest(plane, top, rows, w0, words, runs[0], runs[1], parent, count, min_twice_area, False, points)
    if best < 0:
        return 0
    _, length = _trace(plane, top, rows, w0, words, runs[0][best], runs[1][best], points, True)
    return length
