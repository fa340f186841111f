"""The letterbox: where a frame sits inside the model input, its resize and padding, and the way
back for labels and points. ``graph_resize`` / ``graph_place`` are the ONNX forms of
``resize_image`` / ``place``, bit-exact with OpenCV for the shrinks they accept."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import cv2
import numpy as np

from .step import GraphRecipeError

if TYPE_CHECKING:
    from .graph import GraphBuilder


def axis_weights(src: int, dst: int) -> np.ndarray:
    """[dst, src] matrix of OpenCV's INTER_AREA weights along one axis (an identity image resized)."""
    return cv2.resize(np.eye(src, dtype=np.float64), (src, dst), interpolation=cv2.INTER_AREA).astype(np.float32)


def area_taps(weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per output index, its source indices and weights in ascending source order, padded with
    zero weights: [taps, dst] each."""
    count = int((weights > 0).sum(axis=1).max())
    index = np.zeros((count, weights.shape[0]), np.int64)
    alpha = np.zeros((count, weights.shape[0]), np.float32)
    for d, row in enumerate(weights):
        src = np.flatnonzero(row > 0)
        index[:len(src), d], alpha[:len(src), d] = src, row[src]
    return index, alpha


def weighted_taps(g: GraphBuilder, x: str, weights: np.ndarray, axis: int) -> str:
    """Sum of weight x source along ``axis``, added tap by tap in OpenCV's order (float32)."""
    index, alpha = area_taps(weights)
    shape = [1, 1, 1, -1] if axis == 3 else [1, 1, -1, 1]
    total = None
    for idx, a in zip(index, alpha):
        term = g.op("Mul", g.op("Gather", x, g.const(idx, np.int64, "taps"), axis=axis),
                    g.const(a.reshape(shape), hint="alpha"))
        total = term if total is None else g.op("Add", total, term)
    return total


@dataclass(frozen=True)
class Letterbox:
    """Where a frame of ``src`` size sits inside the model input of ``dst`` size."""

    src_h: int
    src_w: int
    dst_h: int
    dst_w: int
    new_h: int
    new_w: int
    top: int
    left: int

    @classmethod
    def fit(cls, src_h: int, src_w: int, dst_h: int, dst_w: int) -> Letterbox:
        scale = min(dst_h / src_h, dst_w / src_w)
        new_h = max(1, min(dst_h, round(src_h * scale)))
        new_w = max(1, min(dst_w, round(src_w * scale)))
        return cls(src_h, src_w, dst_h, dst_w, new_h, new_w, (dst_h - new_h) // 2, (dst_w - new_w) // 2)

    @property
    def scale_y(self) -> float:
        return self.new_h / self.src_h

    @property
    def scale_x(self) -> float:
        return self.new_w / self.src_w

    def resize_image(self, img: np.ndarray) -> np.ndarray:
        """Resize ``img`` to the content size (no padding yet)."""
        if (img.shape[0], img.shape[1]) == (self.new_h, self.new_w):
            return img
        shrink = self.new_h < self.src_h
        interp = cv2.INTER_AREA if shrink else cv2.INTER_LINEAR
        return cv2.resize(img, (self.new_w, self.new_h), interpolation=interp)

    def place(self, content: np.ndarray, fill: float = 0) -> np.ndarray:
        out = np.full((self.dst_h, self.dst_w) + content.shape[2:], fill, content.dtype)
        out[self.top:self.top + self.new_h, self.left:self.left + self.new_w] = content
        return out

    def apply_mask(self, mask: np.ndarray) -> np.ndarray:
        """Letterbox a label mask with nearest-neighbour resizing (labels never blend)."""
        small = cv2.resize(mask, (self.new_w, self.new_h), interpolation=cv2.INTER_NEAREST)
        return self.place(small, 0)

    def invert_labels(self, labels: np.ndarray) -> np.ndarray:
        """Map a model-size label map back onto the source frame (nearest neighbour)."""
        crop = labels[self.top:self.top + self.new_h, self.left:self.left + self.new_w]
        return cv2.resize(np.ascontiguousarray(crop), (self.src_w, self.src_h), interpolation=cv2.INTER_NEAREST)

    def to_frame(self, points: np.ndarray) -> np.ndarray:
        """Model-input (x, y) pixel coordinates -> source-frame (x, y) coordinates."""
        pts = np.asarray(points, dtype=np.float64)
        out = np.empty_like(pts)
        out[..., 0] = (pts[..., 0] - self.left + 0.5) / self.scale_x - 0.5
        out[..., 1] = (pts[..., 1] - self.top + 0.5) / self.scale_y - 0.5
        return out

    def to_model(self, points: np.ndarray) -> np.ndarray:
        """Source-frame (x, y) coordinates -> model-input coordinates."""
        pts = np.asarray(points, dtype=np.float64)
        out = np.empty_like(pts)
        out[..., 0] = (pts[..., 0] + 0.5) * self.scale_x - 0.5 + self.left
        out[..., 1] = (pts[..., 1] + 0.5) * self.scale_y - 0.5 + self.top
        return out

    def graph_resize(self, g: GraphBuilder, x: str) -> str:
        """cv2.resize INTER_AREA shrink. Enlarging (OpenCV's fixed-point bilinear path, whose
        vectorised rounding is not reproduced here) is refused, and so is a shrink of the width
        alone, which the host path does bilinearly too."""
        if (self.new_h, self.new_w) == (self.src_h, self.src_w):
            return x
        if self.new_h >= self.src_h or self.new_w > self.src_w:
            raise GraphRecipeError(f"frame {self.src_h}x{self.src_w} -> content {self.new_h}x{self.new_w}: in-graph "
                                   f"preprocessing only shrinks both sides (OpenCV's INTER_AREA); export for the "
                                   f"probe's frame size or use host preprocessing")
        fy, fx = self.src_h / self.new_h, self.src_w / self.new_w
        rows, cols = axis_weights(self.src_h, self.new_h), axis_weights(self.src_w, self.new_w)
        if fy == fx == int(fy):
            # Integer factor k: OpenCV sums the k x k block as integers (exact here as a product of
            # 0/1 matrices), then rounds half up for k = 2 and rounds sum * float(1 / k^2) to even otherwise.
            k = int(fy)
            ones_rows, ones_cols = (rows > 0).astype(np.float32), (cols > 0).astype(np.float32)
            total = g.op("MatMul", g.const(ones_rows, hint="block_rows"),
                         g.op("MatMul", x, g.const(ones_cols.T, hint="block_cols")))
            if k == 2:
                y = g.op("Floor", g.op("Div", g.op("Add", total, g.const(2.0)), g.const(4.0)))
            else:
                y = g.op("Round", g.op("Mul", total, g.const(np.float32(1) / np.float32(k * k))))
        else:
            # General case: float32 sums along each row first, then down, rounded to nearest even.
            y = g.op("Round", weighted_taps(g, weighted_taps(g, x, cols, axis=3), rows, axis=2))
        return g.clip8(y)

    def graph_place(self, g: GraphBuilder, y: str) -> str:
        """:meth:`place` with fill 0 as ONNX operators, on an [N, 1, new_h, new_w] batch."""
        pads = [0, 0, self.top, self.left, 0, 0, self.dst_h - self.top - self.new_h, self.dst_w - self.left - self.new_w]
        return g.op("Pad", y, g.ints(*pads), mode="constant") if any(pads) else y
