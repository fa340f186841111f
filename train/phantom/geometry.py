"""Where things land in the image: the probe pose (anatomy units -> pixels) and the beam grid of a
linear or sector probe with its scan conversion."""

from __future__ import annotations

import math

import cv2
import numpy as np

from .config import PhantomConfig, Scene


class Pose:
    """Maps anatomy (u, v) in depth units to image pixels: scale, lateral shift, tilt."""

    def __init__(self, cfg: PhantomConfig, sc: Scene):
        self.scale = cfg.height / sc.depth
        self.cx = (cfg.width - 1) / 2.0
        self.pivot = 0.35  # the probe rocks about a point a third of the way down
        self.c, self.s = math.cos(sc.tilt), math.sin(sc.tilt)
        self.shift = sc.shift

    def px(self, pts: np.ndarray) -> np.ndarray:
        """Anatomy points (..., 2) -> image pixel coordinates (..., 2) as float."""
        pts = np.asarray(pts, np.float64)
        u = pts[..., 0] + self.shift
        v = pts[..., 1] - self.pivot
        x = self.cx + self.scale * (self.c * u - self.s * v)
        y = self.scale * (self.pivot + self.s * u + self.c * v)
        return np.stack([x, y], axis=-1)

    def matrix(self) -> np.ndarray:
        """The same map as a 2x3 affine matrix, for warping fields laid out in anatomy units."""
        o = self.px(np.array([0.0, 0.0]))
        ex = self.px(np.array([1.0, 0.0])) - o
        ey = self.px(np.array([0.0, 1.0])) - o
        return np.array([[ex[0], ey[0], o[0]], [ex[1], ey[1], o[1]]])


class Beams:
    """The probe's beam grid (rows = depth samples, cols = beams) and the scan conversion."""

    def __init__(self, cfg: PhantomConfig, sc: Scene):
        h, w = cfg.height, cfg.width
        self.h, self.w, self.sector = h, w, sc.sector
        self.cx = (w - 1) / 2.0
        self.scale = h / sc.depth
        if not sc.sector:
            self.fov = np.ones((h, w), np.uint8)
            self.col_px = np.ones(1, np.float32)  # lateral pixels per beam, per row
            return
        r0, a = sc.apex_radius, sc.half_angle
        self.r0, self.dtheta, self.theta0 = r0, 2 * a / (w - 1), -a
        radius = r0 + np.arange(h, dtype=np.float32)
        theta = (self.theta0 + self.dtheta * np.arange(w)).astype(np.float32)
        self.fwd_x = (self.cx + radius[:, None] * np.sin(theta)[None, :]).astype(np.float32)
        self.fwd_y = (radius[:, None] * np.cos(theta)[None, :] - r0).astype(np.float32)
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        dx, dy = xx - self.cx, yy + r0
        self.inv_x = ((np.arctan2(dx, dy) - self.theta0) / self.dtheta).astype(np.float32)
        self.inv_y = (np.hypot(dx, dy) - r0).astype(np.float32)
        inside = (self.inv_x >= 0) & (self.inv_x <= w - 1) & (self.inv_y >= 0) & (self.inv_y <= h - 1)
        self.fov = inside.astype(np.uint8)
        self.col_px = (radius * self.dtheta).astype(np.float32)

    def to_beams(self, image: np.ndarray) -> np.ndarray:
        """Sample a Cartesian map along the beams (identity for a linear probe)."""
        if not self.sector:
            return image
        return cv2.remap(image, self.fwd_x, self.fwd_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)

    def to_image(self, beams: np.ndarray) -> np.ndarray:
        """Scan-convert beam data to the display grid; black outside the field of view."""
        if not self.sector:
            return beams
        out = cv2.remap(beams, self.inv_x, self.inv_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
        return out * self.fov

    def lateral_of_cols(self, shift: float) -> np.ndarray:
        """Tissue lateral coordinate (depth units) under each beam at the skin, for the skin layers."""
        cols = np.arange(self.w, dtype=np.float64)
        if not self.sector:
            return (cols - self.cx) / self.scale - shift
        return self.r0 * (self.theta0 + self.dtheta * cols) / self.scale - shift

    def col_of_lateral(self, u: np.ndarray, shift: float) -> np.ndarray:
        """Inverse of lateral_of_cols."""
        if not self.sector:
            return self.cx + (u + shift) * self.scale
        return ((u + shift) * self.scale / self.r0 - self.theta0) / self.dtheta
