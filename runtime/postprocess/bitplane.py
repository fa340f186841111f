"""Class planes packed 64 pixels to a word, and the seed's morphology on them.

A packed region holds rows [top, top + rows) of a frame and its 64-pixel words [w0, w0 + words):
bit b of word k of row i is frame pixel (top + i, 64 * (w0 + k) + b); bits past the frame's right
edge are 0. One word op does 64 pixels, so a dilation or an erosion by a square costs a few word
ops per word, where OpenCV's call costs microseconds before it touches a pixel.

Dilation and erosion by a (2r + 1)-pixel square follow OpenCV's border rule: outside the frame
counts as 0 for a dilation and as 1 for an erosion, so the frame's edge neither grows nor eats a
shape. Pixels of the frame outside the region count as 0, so a region with enough empty margin
round a class gives the full frame's result.
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba.core import types
from numba.core.extending import intrinsic

from ..jit import kernel

WORD_BITS = 64
ALL_SET = np.uint64(0xFFFFFFFFFFFFFFFF)


def words_for(width: int) -> int:
    """64-pixel words in a row of ``width`` pixels."""
    return (width + WORD_BITS - 1) // WORD_BITS


@kernel
def _last_word_bits(width):
    """The bits of a row's last word that lie inside a ``width``-pixel frame."""
    tail = width & 63
    return ALL_SET if tail == 0 else (np.uint64(1) << np.uint64(tail)) - np.uint64(1)


@kernel
def _morph_pass(src, src_spans, dst, dst_spans, top, rows, w0, words, r, erode,
                top_edge, bottom_edge, left_edge, right_edge, last_bits, column):
    """dst = src eroded (AND) or dilated (OR) by a (2r + 1)-pixel square, 0 < r < 64, over the
    region's rows [top, top + rows) and words [w0, w0 + words), in frame coordinates.

    ``*_spans[0, i]`` / ``[1, i]``: the first and one past the last word of row i that may be
    non-zero (the other words of the region are 0); only those words, and the ones a dilation
    spills into, are worked on. Each word is first combined with the words above and below it
    (``column``), then with its neighbours' bits shifted in. The ``*_edge`` flags say where the
    region touches the frame's edge, outside which an erosion reads 1s; elsewhere the outside is 0.
    """
    left = ALL_SET if erode and left_edge else np.uint64(0)
    right = ALL_SET if erode and right_edge else np.uint64(0)
    first_word, end_word = w0, w0 + words
    bottom = top + rows
    for i in range(top, bottom):
        lo, hi = max(i - r, top), min(i + r + 1, bottom)
        if erode:  # the result lies within the row's own words; an empty row of the frame empties it
            span_lo, span_hi = src_spans[0, i], src_spans[1, i]
            if (i - r < top and not top_edge) or (i + r >= bottom and not bottom_edge):
                span_hi = span_lo
        else:
            span_lo, span_hi = end_word, first_word
            for j in range(lo, hi):
                if src_spans[0, j] < src_spans[1, j]:
                    span_lo = min(span_lo, src_spans[0, j])
                    span_hi = max(span_hi, src_spans[1, j])
        out = dst[i]
        out[first_word:end_word] = 0
        dst_spans[0, i], dst_spans[1, i] = first_word, first_word
        if span_lo >= span_hi:
            continue
        for k in range(span_lo, span_hi):
            acc = src[lo, k]
            for j in range(lo + 1, hi):
                acc = acc & src[j, k] if erode else acc | src[j, k]
            column[k] = acc
        if span_hi == end_word:
            column[end_word - 1] = (column[end_word - 1] & last_bits) | (right & ~last_bits)
        out_lo = span_lo if erode else max(span_lo - 1, first_word)
        out_hi = span_hi if erode else min(span_hi + 1, end_word)
        found_lo, found_hi = end_word, first_word
        for k in range(out_lo, out_hi):
            here = column[k] if span_lo <= k < span_hi else np.uint64(0)
            if k == first_word:
                previous = left
            else:
                previous = column[k - 1] if span_lo <= k - 1 < span_hi else np.uint64(0)
            if k + 1 == end_word:
                following = right
            else:
                following = column[k + 1] if span_lo <= k + 1 < span_hi else np.uint64(0)
            acc = here
            for t in range(1, r + 1):
                up = np.uint64(t)
                down = np.uint64(64 - t)
                towards = (here >> up) | (following << down)  # bit j takes bit j + t
                back = (here << up) | (previous >> down)  # bit j takes bit j - t
                acc = acc & towards & back if erode else acc | towards | back
            if k == end_word - 1:
                acc &= last_bits
            out[k] = acc
            if acc:
                found_lo = min(found_lo, k)
                found_hi = k + 1
        if found_lo < found_hi:
            dst_spans[0, i], dst_spans[1, i] = found_lo, found_hi


@kernel
def _morph(src, src_spans, dst, dst_spans, spare, spare_spans, top, rows, w0, words, height, width, r, erode,
           column):
    """dst = src eroded or dilated by a (2r + 1)-pixel square (r > 0) with OpenCV's borders, over
    the region, in passes of up to 63 pixels (which give the same result; ``spare`` takes the
    ones between). ``src`` is only read."""
    top_edge, bottom_edge = top == 0, top + rows == height
    right_edge = (w0 + words) * WORD_BITS >= width
    last_bits = _last_word_bits(width) if right_edge else ALL_SET
    to_dst = ((r + 62) // 63) % 2 == 1  # an odd number of passes starts into dst and ends there
    while r > 0:
        step = min(r, 63)
        if to_dst:
            _morph_pass(src, src_spans, dst, dst_spans, top, rows, w0, words, step, erode,
                        top_edge, bottom_edge, w0 == 0, right_edge, last_bits, column)
            src, src_spans = dst, dst_spans
        else:
            _morph_pass(src, src_spans, spare, spare_spans, top, rows, w0, words, step, erode,
                        top_edge, bottom_edge, w0 == 0, right_edge, last_bits, column)
            src, src_spans = spare, spare_spans
        to_dst = not to_dst
        r -= step


@kernel
def _open_close(plane, spans, work, work_spans, top, rows, w0, words, height, width, r, column):
    """The seed's clean-up of ``plane``: open then close by a (2r + 1)-pixel square (3x3, r times
    each; the close's dilation follows the open's, and two dilations by r are one by 2r). The
    result is in work[0] (spans in work_spans[0]); work[1] and work[2] are scratch."""
    _morph(plane, spans, work[1], work_spans[1], work[2], work_spans[2], top, rows, w0, words, height, width,
           r, True, column)
    _morph(work[1], work_spans[1], work[2], work_spans[2], work[0], work_spans[0], top, rows, w0, words,
           height, width, 2 * r, False, column)
    _morph(work[2], work_spans[2], work[0], work_spans[0], work[1], work_spans[1], top, rows, w0, words,
           height, width, r, True, column)


@intrinsic
def _trailing_zeros(typingctx, word):
    """Count of zero bits below the lowest set bit of a uint64 (64 for 0): LLVM's cttz."""

    def codegen(context, builder, signature, args):
        return builder.cttz(args[0], ir.Constant(ir.IntType(1), 0))

    return types.uint64(types.uint64), codegen


@intrinsic
def _leading_zeros(typingctx, word):
    """Count of zero bits above the highest set bit of a uint64 (64 for 0): LLVM's ctlz."""

    def codegen(context, builder, signature, args):
        return builder.ctlz(args[0], ir.Constant(ir.IntType(1), 0))

    return types.uint64(types.uint64), codegen
