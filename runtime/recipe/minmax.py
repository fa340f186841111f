"""The last stage of every recipe: per-image min-max scaling of 8-bit grey to float32 [0, 1]."""

from __future__ import annotations

from typing import TYPE_CHECKING

import cv2
import numpy as np

if TYPE_CHECKING:
    from .graph import GraphBuilder


def minmax(img: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """Per-image min-max scaling to float32 [0, 1] (a flat image becomes all zeros)."""
    lo, hi = cv2.minMaxLoc(img)[:2]
    if out is None:
        out = np.empty(img.shape, np.float32)
    span = hi - lo
    if span <= 0:
        out[...] = 0.0
    else:
        np.subtract(img, lo, out=out, dtype=np.float32)
        out *= 1.0 / span
    return out


def minmax_graph(g: GraphBuilder, x: str) -> str:
    """:func:`minmax` per image of an [N, 1, H, W] batch, as ONNX operators (same float32 values)."""
    axes = g.ints(2, 3)
    lo = g.op("ReduceMin", x, axes, keepdims=1)
    span = g.op("Sub", g.op("ReduceMax", x, axes, keepdims=1), lo)
    scaled = g.op("Mul", g.op("Sub", x, lo), g.op("Reciprocal", g.op("Max", span, g.const(1.0))))
    return g.op("Where", g.op("Greater", span, g.const(0.0)), scaled, g.const(0.0))
