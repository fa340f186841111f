"""Overlay drawing: the frame with masks tinted, lines and box drawn, a legend, and the readouts
(depths, midline angle and offset) with the points they are measured at."""

from __future__ import annotations

import cv2
import numpy as np

from .measurements import LABELS, Readout, box_top_midpoint, line_midpoint
from .preprocess import to_grey8
from .result import Result

# BGR colours per class name; other class sets cycle through PALETTE.
COLOURS = {"MID": (60, 60, 255), "VTB": (255, 160, 40), "EPI": (60, 220, 60)}
PALETTE = [(60, 60, 255), (60, 220, 60), (255, 160, 40), (0, 200, 255), (255, 0, 200), (200, 255, 0)]


def class_colour(name: str, index: int) -> tuple[int, int, int]:
    return COLOURS.get(name, PALETTE[(index - 1) % len(PALETTE)])


def draw_overlay(frame: np.ndarray, result: Result, alpha: float = 0.3, thickness: int = 2) -> np.ndarray:
    """A BGR uint8 image of the frame with the result drawn on it."""
    canvas = cv2.cvtColor(to_grey8(frame), cv2.COLOR_GRAY2BGR)
    tint = canvas.copy()
    for index, (name, mask) in enumerate(result.masks.items(), start=1):
        tint[mask] = class_colour(name, index)
    cv2.addWeighted(tint, alpha, canvas, 1 - alpha, 0, dst=canvas)
    for name, pts in result.lines.items():
        if pts is None:
            continue
        p1, p2 = (tuple(int(round(v)) for v in p) for p in pts)
        cv2.line(canvas, p1, p2, class_colour(name, 0), thickness, cv2.LINE_AA)
    if result.box is not None:
        cv2.polylines(canvas, [np.round(result.box).astype(np.int32)], True, COLOURS["VTB"], thickness, cv2.LINE_AA)
    draw_legend(canvas, list(result.masks))
    readouts = result.measurements
    if readouts:
        draw_measured_points(canvas, result, thickness)
        draw_readouts(canvas, readouts)
    return canvas


def draw_measured_points(canvas: np.ndarray, result: Result, thickness: int = 2) -> None:
    """A ring where each depth is taken: the EPI line's midpoint and the VTB box's upper side."""
    radius = max(3, canvas.shape[0] // 100)
    points = []
    if result.lines.get("EPI") is not None:
        points.append((line_midpoint(np.asarray(result.lines["EPI"], np.float64)), COLOURS["EPI"]))
    if result.box is not None:
        points.append((box_top_midpoint(np.asarray(result.box, np.float64)), COLOURS["VTB"]))
    for point, colour in points:
        centre = (round(float(point[0])), round(float(point[1])))
        cv2.circle(canvas, centre, radius, (255, 255, 255), thickness + 1, cv2.LINE_AA)
        cv2.circle(canvas, centre, radius, colour, thickness, cv2.LINE_AA)


def readout_lines(readouts: dict[str, Readout]) -> list[str]:
    """``EPI depth 16.0 mm`` per readout, in display order; ``-`` for a structure not found."""
    return [f"{LABELS.get(name, name)} {r.text()}" for name, r in readouts.items()]


def draw_readouts(canvas: np.ndarray, readouts: dict[str, Readout]) -> None:
    """The readouts as text in the lower left corner, on a dark band so they read on bright tissue."""
    lines = readout_lines(readouts)
    scale = max(0.35, canvas.shape[0] / 1200)
    step = int(22 * scale / 0.4)
    width = max(cv2.getTextSize(t, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)[0][0] for t in lines) + 12
    top = max(0, canvas.shape[0] - 6 - step * len(lines))
    band = canvas[top:, :min(width, canvas.shape[1])]
    band //= 2
    for i, text in enumerate(lines):
        y = top + (i + 1) * step - max(2, step // 4)
        cv2.putText(canvas, text, (6, y), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), 1, cv2.LINE_AA)


def draw_legend(canvas: np.ndarray, names: list[str]) -> None:
    scale = max(0.35, canvas.shape[0] / 1200)
    step = int(22 * scale / 0.4)
    for i, name in enumerate(names, start=1):
        y = 6 + (i - 1) * step
        cv2.rectangle(canvas, (6, y), (6 + step - 6, y + step - 6), class_colour(name, i), cv2.FILLED)
        cv2.putText(canvas, name, (6 + step, y + step - 8), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), 1,
                    cv2.LINE_AA)
