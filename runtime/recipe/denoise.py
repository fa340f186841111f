"""Denoising steps: non-local means (the seed's), bilateral and median.

Ranges: every window admits the recipes in RECIPES and any sensible choice while keeping OpenCV's
time and memory bounded (a 100001-wide NLM search window crashes the process). Only NLM has an
exact in-graph form.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import cv2
import numpy as np

from .fields import Integer, Real, param
from .step import Denoiser, GraphRecipeError

if TYPE_CHECKING:
    from .graph import GraphBuilder


def nlm_weight_table(h: float, template: int, search: int) -> tuple[np.ndarray, int]:
    """OpenCV's fixed-point weight for each "almost average" patch distance, and the shift that
    turns a patch's sum of squared differences into that distance."""
    squares = template * template
    shift = (squares - 1).bit_length()  # the power of two at or above the patch size
    to_distance = (1 << shift) / squares
    scale = min((2 ** 31 - 1) // (search * search * 255), 2 ** 31 - 1)
    size = int(255 * 255 / to_distance + 1)
    dist = np.arange(size, dtype=np.float64) * to_distance
    weight = np.floor(np.exp(-dist / (h * h)) * scale + 0.5)
    weight[weight < 0.001 * scale] = 0
    return weight.astype(np.int32), shift


@dataclass(frozen=True)
class NlmDenoise(Denoiser):
    """cv2.fastNlMeansDenoising; in the graph, every offset of the search window is one channel."""

    title = "non-local means"
    denoise = "nlm"
    nlm_h: float = param(Real(0.0, 255.0, above=True))
    nlm_template: int = param(Integer(1, 21, odd=True))
    nlm_search: int = param(Integer(1, 35, odd=True))

    def host(self, img: np.ndarray) -> np.ndarray:
        return cv2.fastNlMeansDenoising(img, None, h=self.nlm_h, templateWindowSize=self.nlm_template,
                                        searchWindowSize=self.nlm_search)

    def graph(self, g: GraphBuilder, x: str, height: int, width: int) -> str:
        t, s = self.nlm_template // 2, self.nlm_search // 2
        border = t + s
        if min(height, width) <= border:
            raise GraphRecipeError(f"non-local means needs content larger than {border} px, got {height}x{width}")
        table, shift = nlm_weight_table(self.nlm_h, self.nlm_template, self.nlm_search)
        n, k = self.nlm_search, self.nlm_template
        ext_h, ext_w = height + 2 * t, width + 2 * t  # where patch sums are needed
        pad = g.op("Pad", x, g.ints(0, 0, border, border, 0, 0, border, border), mode="reflect")
        rows = [g.slice(pad, [dy], [dy + ext_h], [2]) for dy in range(n)]
        stack_rows = g.op("Concat", *rows, axis=1)  # [N, n, ext_h, W + 2 * border]
        cols = [g.op("Unsqueeze", g.slice(stack_rows, [dx], [dx + ext_w], [3]), g.ints(2)) for dx in range(n)]
        shifted = g.op("Concat", *cols, axis=2)  # [N, n(dy), n(dx), ext_h, ext_w]
        shifted = g.op("Reshape", shifted, g.ints(0, n * n, ext_h, ext_w))
        centre = g.slice(pad, [s, s], [s + ext_h, s + ext_w], [2, 3])
        diff = g.op("Sub", shifted, centre)
        squares = g.op("Mul", diff, diff)
        # Patch sums of squared differences: a depthwise Conv with a kernel of ones adds integers
        # below 2**24, exact in float32 (without TF32 and unless cuDNN picks an FFT or Winograd algorithm).
        ones = g.const(np.ones((n * n, 1, k, k), np.float32), hint="patch")
        ssd = g.op("Conv", squares, ones, group=n * n)
        # floor(S / 2**shift): a division by a power of two is exact, the cast truncates.
        index = g.cast(g.op("Div", ssd, g.const(float(1 << shift))), np.int32)
        # The weighted sums reach 2.1e9: float64 keeps them exact on every provider.
        weight = g.op("Gather", g.const(table, np.float64, "nlm_weights"), index, axis=0)  # [N, n*n, H, W]
        values = g.cast(g.slice(shifted, [t, t], [t + height, t + width], [2, 3]), np.float64)
        axis = g.ints(1)
        estimate = g.op("ReduceSum", g.op("Mul", weight, values), axis, keepdims=1)
        total = g.op("ReduceSum", weight, axis, keepdims=1)
        half = g.op("Floor", g.op("Div", total, g.const(2.0, np.float64)))
        out = g.op("Floor", g.op("Div", g.op("Add", estimate, half), total))  # OpenCV's integer division
        return g.cast(out, np.float32)


@dataclass(frozen=True)
class BilateralDenoise(Denoiser):
    """cv2.bilateralFilter with one sigma for colour and space (no exact in-graph form)."""

    title = "bilateral filter"
    denoise = "bilateral"
    in_graph = False
    bilateral_d: int = param(Integer(1, 25))
    bilateral_sigma: float = param(Real(0.0, 1000.0, above=True))

    def host(self, img: np.ndarray) -> np.ndarray:
        return cv2.bilateralFilter(img, self.bilateral_d, self.bilateral_sigma, self.bilateral_sigma)


@dataclass(frozen=True)
class MedianDenoise(Denoiser):
    """cv2.medianBlur (no exact in-graph form)."""

    title = "median filter"
    denoise = "median"
    in_graph = False
    median_ksize: int = param(Integer(1, 31, odd=True))

    def host(self, img: np.ndarray) -> np.ndarray:
        return cv2.medianBlur(img, self.median_ksize)
