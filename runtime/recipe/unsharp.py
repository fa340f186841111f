"""The unsharp mask: img x amount + GaussianBlur(img, sigma) x (1 - amount), OpenCV's and its
exact ONNX twin (OpenCV's 8-bit blur is fixed point, its taps are read back from cv2 itself)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import cv2
import numpy as np

from .fields import Real, param
from .step import GraphRecipeError, Step

if TYPE_CHECKING:
    from .graph import GraphBuilder


def gaussian_fixed_point(sigma: float) -> np.ndarray:
    """OpenCV's 8-bit GaussianBlur kernel for ``sigma`` (ksize from sigma): integer taps in units
    of 1/256, read back from cv2 itself by blurring a line of 255s."""
    size = round(sigma * 3 * 2 + 1) | 1
    probe = np.zeros((3 * size, 3 * size), np.uint8)
    probe[:, 3 * size // 2] = 255
    row = cv2.GaussianBlur(probe, (0, 0), sigma)[3 * size // 2].astype(np.int64)
    taps = row[3 * size // 2 - size // 2: 3 * size // 2 + size // 2 + 1]
    # round(255 * m / 256) half up is m for m <= 128 and m - 1 above: invert that.
    taps = np.where(taps >= 128, taps + 1, taps)
    if taps.sum() != 256:
        raise GraphRecipeError(f"cannot read OpenCV's fixed-point Gaussian kernel for sigma {sigma}")
    return taps


@dataclass(frozen=True)
class Unsharp(Step):
    """addWeighted(img, amount, GaussianBlur(img, sigma), 1 - amount, 0). An amount of 1 leaves the
    image as it is, below 1 it blurs; sigma sets the kernel (6 sigma + 1 wide, 151 at most)."""

    title = "the unsharp mask"
    unsharp_amount: float = param(Real(0.0, 10.0))
    unsharp_sigma: float = param(Real(0.0, 25.0, above=True))

    @classmethod
    def enabled(cls, recipe) -> bool:
        return recipe.unsharp

    def host(self, img: np.ndarray) -> np.ndarray:
        blur = cv2.GaussianBlur(img, (0, 0), self.unsharp_sigma)
        return cv2.addWeighted(img, self.unsharp_amount, blur, 1.0 - self.unsharp_amount, 0)

    def graph(self, g: GraphBuilder, x: str, height: int, width: int) -> str:
        taps = gaussian_fixed_point(self.unsharp_sigma).astype(np.float32)
        r = len(taps) // 2
        if min(height, width) <= r:
            raise GraphRecipeError(f"the unsharp mask needs content larger than {r} px, got {height}x{width}")
        pad = g.op("Pad", x, g.ints(0, 0, r, r, 0, 0, r, r), mode="reflect")
        across = g.op("Conv", pad, g.const(taps.reshape(1, 1, 1, -1), hint="gauss_x"))
        down = g.op("Conv", across, g.const(taps.reshape(1, 1, -1, 1), hint="gauss_y"))
        blur = g.op("Floor", g.op("Div", g.op("Add", down, g.const(32768.0)), g.const(65536.0)))
        a = np.float32(self.unsharp_amount)
        mixed = g.op("Add", g.op("Mul", x, g.const(a)), g.op("Mul", blur, g.const(np.float32(1.0) - a)))
        return g.clip8(g.op("Round", mixed))
