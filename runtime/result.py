"""What one segmented frame gives back: labels, masks and geometry in the frame's own pixels, and
the clinical readouts computed from that geometry (``usseg.runtime.measurements``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .measurements import Readout, measure, readouts_to_dict


@dataclass
class Result:
    labels: np.ndarray                       # uint8 [H, W] class index per pixel, frame size
    masks: dict[str, np.ndarray]             # class name -> bool [H, W] (after post-processing)
    lines: dict[str, np.ndarray | None]      # "MID"/"EPI" -> float [2, 2] end points (x, y) or None
    box: np.ndarray | None                   # VTB rotated box corners float [4, 2] (x, y), or None
    timings: dict[str, float] = field(default_factory=dict)  # milliseconds per stage
    spacing_mm: float | None = None          # millimetres per pixel, when known
    skin_y: float = 0.0                      # row of the skin line (top of the field of view)

    @property
    def lines_mm(self) -> dict[str, np.ndarray] | None:
        if self.spacing_mm is None:
            return None
        return {k: None if v is None else v * self.spacing_mm for k, v in self.lines.items()}

    @property
    def box_mm(self) -> np.ndarray | None:
        return None if self.spacing_mm is None or self.box is None else self.box * self.spacing_mm

    @property
    def measurements(self) -> dict[str, Readout]:
        """Depths, midline angle and offset from the current geometry (so smoothing the geometry
        smooths them); empty for models without the spine post-processing."""
        if "MID" not in self.lines:
            return {}
        return measure(self.lines, self.box, self.labels.shape, self.spacing_mm, self.skin_y)

    def geometry(self) -> dict[str, Any]:
        """JSON-ready geometry (frame pixels, plus mm when the pixel spacing is known)."""
        out: dict[str, Any] = {name: _round(pts) for name, pts in self.lines.items()}
        out["VTB"] = None if self.box is None else _round(self.box)
        if self.spacing_mm is not None:
            out["mm"] = {name: _round(None if pts is None else pts * self.spacing_mm) for name, pts in self.lines.items()}
            out["mm"]["VTB"] = None if self.box is None else _round(self.box * self.spacing_mm)
            out["mm"]["spacing"] = self.spacing_mm
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"geometry": self.geometry(),
                "measurements": readouts_to_dict(self.measurements),
                "pixels": {name: int(m.sum()) for name, m in self.masks.items()},
                "timings_ms": {k: round(v, 3) for k, v in self.timings.items()}}


def _round(points: np.ndarray | None) -> list | None:
    return None if points is None else np.round(np.asarray(points, np.float64), 2).tolist()
