"""Per-pixel argmax over class scores into a reused uint8 label map (no int64 temporary)."""

from __future__ import annotations

import numpy as np

from .jit import kernel


@kernel
def _argmax(scores, out):
    classes, height, width = scores.shape
    for y in range(height):
        for x in range(width):
            best = scores[0, y, x]
            index = 0
            for c in range(1, classes):
                v = scores[c, y, x]
                if v > best:
                    best = v
                    index = c
            out[y, x] = index


def argmax_labels(scores: np.ndarray, out: np.ndarray) -> np.ndarray:
    """[C, H, W] scores -> ``out`` [H, W] uint8; ties go to the lower class, as numpy's argmax."""
    _argmax(scores, out)
    return out
