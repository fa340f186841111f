"""Clinical readouts from the post-processed spine geometry: depths, and the midline's angle and offset.

Pure functions of the geometry a Result carries (MID and EPI end points, the VTB box corners, in
frame pixels), the frame's size and the pixel spacing. Image coordinates: x to the right, y down
(deeper). The skin line is the top of the field of view, ``y = skin_y`` (0: the top row of the
frame, where ultrasound systems put the transducer face).

    epidural_depth        skin line -> midpoint of the EPI line, straight down         mm (px)
    vertebral_body_depth  skin line -> midpoint of the VTB box's upper side             mm (px)
    midline_angle         MID line against the vertical; + when its deeper end lies     deg
                          to the right of its shallower end
    midline_offset        midpoint of the MID line -> image centre column (W - 1) / 2;  mm (px)
                          + to the right of the centre

Lengths are in mm when the spacing is known, in pixels otherwise, and each readout names its unit.
A readout whose structure was not found has the value None.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

MM, PX, DEG = "mm", "px", "deg"

# name -> short label for overlays and the live page, in display order.
LABELS: dict[str, str] = {
    "epidural_depth": "EPI depth",
    "vertebral_body_depth": "VTB depth",
    "midline_angle": "MID angle",
    "midline_offset": "MID offset",
}


@dataclass(frozen=True)
class Readout:
    value: float | None
    unit: str  # "mm", "px" or "deg"

    def to_dict(self) -> dict[str, Any]:
        return {"value": None if self.value is None else round(float(self.value), 2), "unit": self.unit}

    def number_text(self) -> str:
        """``12.3``, as displayed (one decimal); ``-`` when the structure was not found."""
        return "-" if self.value is None else f"{self.value:.1f}"

    def text(self) -> str:
        """``12.3 mm``; ``-`` when the structure was not found."""
        return "-" if self.value is None else f"{self.number_text()} {self.unit}"


def row_col_spacing(spacing_mm: float | tuple[float, float] | None) -> tuple[float, float] | None:
    """(mm per row, mm per column) from one isotropic spacing or a (row, column) pair; checked > 0."""
    if spacing_mm is None:
        return None
    pair = (spacing_mm, spacing_mm) if np.isscalar(spacing_mm) else tuple(spacing_mm)
    if len(pair) != 2 or not all(isinstance(v, (int, float, np.floating, np.integer)) for v in pair):
        raise ValueError(f"spacing {spacing_mm!r}: expected mm per pixel, or (row, column) mm")
    row, col = float(pair[0]), float(pair[1])
    if not (math.isfinite(row) and math.isfinite(col) and row > 0 and col > 0):
        raise ValueError(f"spacing {spacing_mm!r}: must be finite and > 0 mm per pixel")
    return row, col


def _points(value: Any, n: int, name: str) -> np.ndarray | None:
    if value is None:
        return None
    pts = np.asarray(value, np.float64)
    if pts.shape != (n, 2) or not np.isfinite(pts).all():
        raise ValueError(f"{name}: expected {n} finite (x, y) points, got shape {pts.shape}")
    return pts


def line_midpoint(line: np.ndarray) -> np.ndarray:
    return line.mean(axis=0)


def box_top_midpoint(box: np.ndarray) -> np.ndarray:
    """Midpoint of the box's upper side: of its four sides, the one whose midpoint is shallowest."""
    mids = (box + np.roll(box, -1, axis=0)) / 2
    return mids[int(np.argmin(mids[:, 1]))]


def depth_px(point: np.ndarray, skin_y: float) -> float:
    return float(point[1] - skin_y)


def angle_from_vertical(line: np.ndarray, spacing: tuple[float, float] | None = None) -> float:
    """Degrees in (-90, 90]; + when the deeper end lies to the right. With an anisotropic spacing
    the angle is taken in physical units."""
    top, bottom = line[np.argsort(line[:, 1], kind="stable")]
    dx, dy = bottom[0] - top[0], bottom[1] - top[1]
    if spacing is not None:
        dx, dy = dx * spacing[1], dy * spacing[0]
    if dx == 0 and dy == 0:
        return 0.0
    angle = math.degrees(math.atan2(dx, dy))
    return 90.0 if angle == -90.0 else angle


def offset_px(line: np.ndarray, width: int) -> float:
    return float(line_midpoint(line)[0] - (width - 1) / 2)


def measure(lines: Mapping[str, Any], box: Any, shape: tuple[int, ...], spacing_mm: float | tuple | None = None,
            skin_y: float = 0.0) -> dict[str, Readout]:
    """Every readout of one frame's geometry, in :data:`LABELS` order.

    ``lines``: "MID"/"EPI" -> [2, 2] end points or None; ``box``: [4, 2] VTB corners or None;
    ``shape``: the frame's (H, W, ...); ``spacing_mm``: mm per pixel, a (row, column) pair, or None
    (lengths in px).
    """
    if len(shape) < 2 or shape[0] < 1 or shape[1] < 1:
        raise ValueError(f"frame shape {tuple(shape)}: expected (H, W, ...)")
    spacing = row_col_spacing(spacing_mm)
    row_mm, col_mm = spacing if spacing is not None else (1.0, 1.0)
    unit = MM if spacing is not None else PX
    mid, epi = _points(lines.get("MID"), 2, "MID"), _points(lines.get("EPI"), 2, "EPI")
    vtb = _points(box, 4, "VTB")

    def scaled(px: float | None, factor: float) -> float | None:
        return None if px is None else px * factor

    return {
        "epidural_depth": Readout(scaled(None if epi is None else depth_px(line_midpoint(epi), skin_y), row_mm), unit),
        "vertebral_body_depth": Readout(scaled(None if vtb is None else depth_px(box_top_midpoint(vtb), skin_y),
                                               row_mm), unit),
        "midline_angle": Readout(None if mid is None else angle_from_vertical(mid, spacing), DEG),
        "midline_offset": Readout(scaled(None if mid is None else offset_px(mid, int(shape[1])), col_mm), unit),
    }


def readouts_to_dict(readouts: Mapping[str, Readout]) -> dict[str, dict[str, Any]]:
    return {name: r.to_dict() for name, r in readouts.items()}
