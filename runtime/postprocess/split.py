"""One plane per class, and the seed's gap fixing between overlapping classes."""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba.core import cgutils, types
from numba.core.extending import intrinsic

from ..jit import kernel
from .bitplane import WORD_BITS, _leading_zeros, _morph, _trailing_zeros
from .labelmap import EPI, LABEL_EPI, LABEL_MID, LABEL_VTB, MID, VTB


@intrinsic
def _split_word(typingctx, labels, masks, i, start):
    """The 64 labels labels[i, start:start + 64] split into masks[c, i, start:start + 64] (1 where
    the label is c + 1, else 0) in a few vector instructions; returns the three planes' packed
    words and the word of labels above EPI. Both arrays C-contiguous; the 64 labels must exist."""
    result = types.UniTuple(types.uint64, 4)

    def codegen(context, builder, signature, args):
        labels_type, masks_type = signature.args[0], signature.args[1]
        vector = ir.VectorType(ir.IntType(8), WORD_BITS)
        row, column = args[2], args[3]
        source = cgutils.get_item_pointer(context, builder, labels_type,
                                          context.make_array(labels_type)(context, builder, args[0]), [row, column])
        values = builder.load(builder.bitcast(source, vector.as_pointer()), align=1)
        planes = context.make_array(masks_type)(context, builder, args[1])
        words = []
        for c in range(3):
            equal = builder.icmp_unsigned("==", values, ir.Constant(vector, [c + 1] * WORD_BITS))
            target = cgutils.get_item_pointer(context, builder, masks_type, planes,
                                              [ir.Constant(row.type, c), row, column])
            builder.store(builder.zext(equal, vector), builder.bitcast(target, vector.as_pointer()), align=1)
            words.append(builder.bitcast(equal, ir.IntType(WORD_BITS)))
        above = builder.icmp_unsigned(">", values, ir.Constant(vector, [LABEL_EPI] * WORD_BITS))
        words.append(builder.bitcast(above, ir.IntType(WORD_BITS)))
        return context.make_tuple(builder, result, words)

    return result(labels, masks, i, start), codegen


@kernel
def _split_classes(labels, masks, planes, spans, bounds, columns):
    """One 0/1 plane per class, the same packed 64 pixels to a word, and each class's bounding box.

    ``masks`` [3, H, W] gets the byte planes, ``planes`` [3, H, words] the packed ones, ``spans``
    [3, 2, H] each packed row's first and one past its last non-zero word, ``bounds`` [3, 4] each
    class's box [top, bottom, left, right) (all zeros for an absent class). Returns the largest
    label value if one is above EPI, so that the caller can refuse it, else 0. ``columns``
    [3, words]: scratch.
    """
    height, width = labels.shape
    whole = width >> 6  # words of 64 labels; the rest of a row, if any, label by label
    columns[:] = 0
    bounds[:] = 0
    above = np.uint64(0)
    for i in range(height):
        for c in range(3):
            spans[c, 0, i], spans[c, 1, i] = 0, 0
        for k in range(planes.shape[2]):
            if k < whole:
                mid, vtb, epi, bad = _split_word(labels, masks, i, k * WORD_BITS)
                above |= bad
            else:
                mid, vtb, epi = np.uint64(0), np.uint64(0), np.uint64(0)
                for j in range(k * WORD_BITS, width):
                    v = labels[i, j]
                    bit = np.uint64(1) << np.uint64(j - k * WORD_BITS)
                    masks[MID, i, j] = v == LABEL_MID
                    masks[VTB, i, j] = v == LABEL_VTB
                    masks[EPI, i, j] = v == LABEL_EPI
                    mid |= bit if v == LABEL_MID else np.uint64(0)
                    vtb |= bit if v == LABEL_VTB else np.uint64(0)
                    epi |= bit if v == LABEL_EPI else np.uint64(0)
                    above |= bit if v > LABEL_EPI else np.uint64(0)
            planes[MID, i, k], planes[VTB, i, k], planes[EPI, i, k] = mid, vtb, epi
            if mid | vtb | epi:
                for c in range(3):
                    if planes[c, i, k]:
                        columns[c, k] |= planes[c, i, k]
                        if spans[c, 0, i] == spans[c, 1, i]:
                            spans[c, 0, i] = k
                        spans[c, 1, i] = k + 1
    if above:
        return labels.max()
    for c in range(3):
        for i in range(height):
            if spans[c, 0, i] < spans[c, 1, i]:
                if bounds[c, 0] == bounds[c, 1]:
                    bounds[c, 0] = i
                bounds[c, 1] = i + 1
        if bounds[c, 0] == bounds[c, 1]:
            continue
        for k in range(planes.shape[2]):
            if columns[c, k]:
                bounds[c, 2] = k * WORD_BITS + np.int64(_trailing_zeros(columns[c, k]))
                break
        for k in range(planes.shape[2] - 1, -1, -1):
            if columns[c, k]:
                bounds[c, 3] = (k + 1) * WORD_BITS - np.int64(_leading_zeros(columns[c, k]))
                break
    return 0


@kernel
def _take_overlap(masks, planes, spans, bounds, plane_index, other_plane, reach, work, work_spans, column):
    """Seed gap fixing for one class: pixels of the other class (its original plane) within
    ``reach`` pixels (a square) of the class join it, in its byte mask, its packed plane, its
    spans and its bounds. Only the part of the class that can reach the other class's bounding
    box is dilated."""
    height, width = masks.shape[1], masks.shape[2]
    top, bottom = bounds[plane_index, 0], bounds[plane_index, 1]
    left, right = bounds[plane_index, 2], bounds[plane_index, 3]
    o_top, o_bottom = bounds[other_plane, 0], bounds[other_plane, 1]
    o_left, o_right = bounds[other_plane, 2], bounds[other_plane, 3]
    if top >= bottom or o_top >= o_bottom:
        return
    t_top, t_bottom = max(top - reach, o_top), min(bottom + reach, o_bottom)  # the other class in reach
    t_left, t_right = max(left - reach, o_left), min(right + reach, o_right)
    if t_top >= t_bottom or t_left >= t_right:
        return
    s_top, s_bottom = max(t_top - reach, 0), min(t_bottom + reach, height)  # what can dilate into it
    w0, w1 = max(t_left - reach, 0) >> 6, ((min(t_right + reach, width) - 1) >> 6) + 1
    _morph(planes[plane_index], spans[plane_index], work[0], work_spans[0], work[1], work_spans[1],
           s_top, s_bottom - s_top, w0, w1 - w0, height, width, reach, False, column)
    grown, other = work[0], planes[other_plane]
    plane, mask = planes[plane_index], masks[plane_index]
    one = np.uint64(1)
    for i in range(t_top, t_bottom):
        for k in range(t_left >> 6, ((t_right - 1) >> 6) + 1):
            hit = grown[i, k] & other[i, k]
            while hit:
                x = k * WORD_BITS + np.int64(_trailing_zeros(hit))
                hit &= hit - one
                if x < t_left or x >= t_right:
                    continue
                mask[i, x] = 1
                plane[i, k] |= one << np.uint64(x & 63)
                if spans[plane_index, 0, i] == spans[plane_index, 1, i]:
                    spans[plane_index, 0, i], spans[plane_index, 1, i] = k, k + 1
                spans[plane_index, 0, i] = min(spans[plane_index, 0, i], k)
                spans[plane_index, 1, i] = max(spans[plane_index, 1, i], k + 1)
                bounds[plane_index, 0] = min(bounds[plane_index, 0], i)
                bounds[plane_index, 1] = max(bounds[plane_index, 1], i + 1)
                bounds[plane_index, 2] = min(bounds[plane_index, 2], x)
                bounds[plane_index, 3] = max(bounds[plane_index, 3], x + 1)


@kernel
def _fix_gaps(masks, planes, spans, bounds, reach, work, work_spans, column):
    """The seed's gap fixing: VTB takes the MID pixels near it, MID the EPI pixels near it, both
    from the original masks (MID is fixed after VTB has read it); EPI is unchanged."""
    if reach == 0:
        return
    _take_overlap(masks, planes, spans, bounds, VTB, MID, reach, work, work_spans, column)
    _take_overlap(masks, planes, spans, bounds, MID, EPI, reach, work, work_spans, column)
