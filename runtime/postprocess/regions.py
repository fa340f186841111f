"""Stray blobs: which part of a class can matter.

A stray blob far from the line widens the class's bounding box, and with it the cost of every
region-wide call. Pixels are grouped into clusters of 8-connected occupied TILE x TILE tiles:
two clusters are at least TILE + 1 pixels apart, and open-then-close (erode 2, dilate 4,
erode 2) treats shapes 10 or more pixels apart independently, so each cluster's result is its
own. A cluster too small to yield a contour above the area threshold is left out of the
region, unless the region would cut through it.
"""

from __future__ import annotations

import numpy as np

from ..jit import kernel

TILE = 16
_TILE_SHIFT = 4


@kernel
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


@kernel
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


@kernel
def _cluster_bounds(mask, top, bottom, left, right, tile_label, t0, t1, l0, l1, n, bounds, columns):
    """Exact pixel bounds [top, bottom, left, right) of every cluster, from its tiles' pixels."""
    for c in range(1, n + 1):
        bounds[c, 0] = bottom
        bounds[c, 1] = top
        bounds[c, 2] = right
        bounds[c, 3] = left
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
                    bounds[c, 0] = min(bounds[c, 0], i)
                    bounds[c, 1] = max(bounds[c, 1], i + 1)
            for k in range(j1 - j0):
                if tile_columns[k]:
                    bounds[c, 2] = min(bounds[c, 2], j0 + k)
                    break
            for k in range(j1 - j0 - 1, -1, -1):
                if tile_columns[k]:
                    bounds[c, 3] = max(bounds[c, 3], j0 + k + 1)
                    break


@kernel
def _relevant_region(mask, top, bottom, left, right, spread, min_area, margin,
                     tile_label, stack, bounds, keep, columns, region):
    """The part of the region [top, bottom) x [left, right) of ``mask`` whose contours can matter.

    A cluster whose bounds, widened by ``spread`` pixels (how far the caller's morphology can grow a
    shape), cannot hold a contour of area ``min_area`` or more is dropped, unless it lies within
    ``margin`` pixels of a kept one. Writes the kept clusters' bounds grown by ``margin`` (clipped to
    the frame) into ``region``; returns False when nothing is kept.
    """
    height, width = mask.shape
    t0, t1, l0, l1 = _mark_tiles(mask, top, bottom, left, right, tile_label, columns)
    n = _label_clusters(tile_label, t0, t1, l0, l1, stack)
    _cluster_bounds(mask, top, bottom, left, right, tile_label, t0, t1, l0, l1, n, bounds, columns)
    region[0] = height
    region[1] = 0
    region[2] = width
    region[3] = 0
    found = False
    for c in range(1, n + 1):
        # A contour through pixel centres inside a w x h box has area at most (w - 1)(h - 1).
        w = bounds[c, 3] - bounds[c, 2] + 2 * spread
        h = bounds[c, 1] - bounds[c, 0] + 2 * spread
        keep[c] = (w - 1) * (h - 1) >= min_area
        if keep[c]:
            found = True
            region[0] = min(region[0], bounds[c, 0])
            region[1] = max(region[1], bounds[c, 1])
            region[2] = min(region[2], bounds[c, 2])
            region[3] = max(region[3], bounds[c, 3])
    if not found:
        return False
    grown = True
    while grown:
        grown = False
        g0, g1 = max(region[0] - margin, 0), min(region[1] + margin, height)
        g2, g3 = max(region[2] - margin, 0), min(region[3] + margin, width)
        for c in range(1, n + 1):
            if not keep[c] and bounds[c, 0] < g1 and bounds[c, 1] > g0 and bounds[c, 2] < g3 and bounds[c, 3] > g2:
                keep[c] = True
                grown = True
                region[0] = min(region[0], bounds[c, 0])
                region[1] = max(region[1], bounds[c, 1])
                region[2] = min(region[2], bounds[c, 2])
                region[3] = max(region[3], bounds[c, 3])
    region[0] = max(region[0] - margin, 0)
    region[1] = min(region[1] + margin, height)
    region[2] = max(region[2] - margin, 0)
    region[3] = min(region[3] + margin, width)
    return True
