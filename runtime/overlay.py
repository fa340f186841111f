"""Overlay drawing: the frame with masks tinted, lines and box drawn, and a legend."""

from __future__ import annotations

import cv2
import numpy as np

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
    return canvas


def draw_legend(canvas: np.ndarray, names: list[str]) -> None:
    scale = max(0.35, canvas.shape[0] / 1200)
    step = int(22 * scale / 0.4)
    for i, name in enumerate(names, start=1):
        y = 6 + (i - 1) * step
        cv2.rectangle(canvas, (6, y), (6 + step - 6, y + step - 6), class_colour(name, i), cv2.FILLED)
        cv2.putText(canvas, name, (6 + step, y + step - 8), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), 1,
                    cv2.LINE_AA)
