"""Drawing primitives shared by the anatomy and the annotations: sub-pixel cv2 polylines and
polygons, ellipse arcs, dB levels and smooth tissue-inhomogeneity fields."""

from __future__ import annotations

import math

import cv2
import numpy as np

_FIX = 4  # fractional bits for cv2 drawing: sub-pixel accurate geometry
_ONE = float(1 << _FIX)


def from_db(x: float) -> float:
    """Intensity ratio of a level given in dB relative to muscle."""
    return 10.0 ** (x / 10.0)


def _fix(pts_px: np.ndarray) -> np.ndarray:
    """Pixel coordinates as cv2 fixed-point integers (keeps sub-pixel geometry at any image size)."""
    return np.round(np.asarray(pts_px) * _ONE).astype(np.int32)


def polyline(img: np.ndarray, pts_px: np.ndarray, value: float, thickness: float, closed: bool = False) -> None:
    """Set the pixels of a thick polyline to `value` (at least one pixel thick, so small frames keep it)."""
    cv2.polylines(img, [_fix(pts_px)], closed, float(value), max(1, int(round(thickness))), cv2.LINE_8, _FIX)


def fill(img: np.ndarray, pts_px: np.ndarray, value: float) -> None:
    """Set the pixels inside a polygon to `value`."""
    cv2.fillPoly(img, [_fix(pts_px)], float(value), cv2.LINE_8, _FIX)


def ellipse(center: tuple[float, float], a: float, b: float, angle: float = 0.0,
            start: float = 0.0, stop: float = 2 * math.pi, n: int = 48) -> np.ndarray:
    """Points of an ellipse (arc) in anatomy units."""
    t = np.linspace(start, stop, n)
    x, y = a * np.cos(t), b * np.sin(t)
    c, s = math.cos(angle), math.sin(angle)
    return np.stack([center[0] + c * x - s * y, center[1] + s * x + c * y], axis=-1)


def smooth_field(rng: np.random.Generator, shape: tuple[int, int], sigma: float, db: float) -> np.ndarray:
    """Low-frequency multiplicative variation (tissue inhomogeneity), +-db roughly."""
    f = cv2.GaussianBlur(rng.standard_normal(shape).astype(np.float32), (0, 0), sigma)
    f /= f.std() + 1e-6
    return (10.0 ** (db * f / 10.0)).astype(np.float32)
