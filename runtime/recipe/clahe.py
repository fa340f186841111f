"""Contrast-limited adaptive histogram equalisation (CLAHE), OpenCV's and its exact ONNX twin."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import cv2
import numpy as np

from .fields import Integer, Real, param
from .step import GraphRecipeError, Step

if TYPE_CHECKING:
    from .graph import GraphBuilder


@dataclass(frozen=True)
class ClaheLayout:
    """OpenCV's tiling of an image for CLAHE: the image is extended (reflect-101) to a multiple of
    the grid, each tile gets a clipped histogram, and each pixel blends its four nearest tiles."""

    tiles: int
    tile_h: int
    tile_w: int
    pad_bottom: int
    pad_right: int
    clip: int
    lut_scale: np.float32

    @classmethod
    def of(cls, height: int, width: int, tiles: int, clip_limit: float) -> ClaheLayout:
        pad_b = 0 if height % tiles == 0 and width % tiles == 0 else tiles - height % tiles
        pad_r = 0 if height % tiles == 0 and width % tiles == 0 else tiles - width % tiles
        tile_h, tile_w = (height + pad_b) // tiles, (width + pad_r) // tiles
        area = tile_h * tile_w
        clip = max(int(clip_limit * area / 256), 1) if clip_limit > 0 else area
        return cls(tiles, tile_h, tile_w, pad_b, pad_r, clip, np.float32(255.0) / np.float32(area))

    def blend(self, height: int, width: int) -> tuple[np.ndarray, tuple[np.ndarray, ...]]:
        """Per pixel: the LUT offsets of its four tiles [4, H*W] (top-left, top-right,
        bottom-left, bottom-right) and the weights (left, right, top, bottom), each [H*W]."""
        def axis(size: int, tile: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
            pos = np.arange(size, dtype=np.float32) * (np.float32(1) / np.float32(tile)) - np.float32(0.5)
            lo = np.floor(pos)
            frac = (pos - lo).astype(np.float32)
            lo = lo.astype(np.int64)
            return np.maximum(lo, 0), np.minimum(lo + 1, self.tiles - 1), frac

        y1, y2, ya = axis(height, self.tile_h)
        x1, x2, xa = axis(width, self.tile_w)
        offsets = [((ty[:, None] * self.tiles + tx[None, :]) * 256).ravel()
                   for ty in (y1, y2) for tx in (x1, x2)]
        grid = np.ones((height, width), np.float32)
        left, right = (grid * (np.float32(1) - xa)[None, :]).ravel(), (grid * xa[None, :]).ravel()
        top, bottom = (grid * (np.float32(1) - ya)[:, None]).ravel(), (grid * ya[:, None]).ravel()
        return np.stack(offsets), (left, right, top, bottom)


@dataclass(frozen=True)
class Clahe(Step):
    """cv2.createCLAHE(clahe_clip, (clahe_tile, clahe_tile)).apply on 8-bit grey. A clip limit of
    256 or more clips nothing; 0 means no limit, as in OpenCV."""

    title = "CLAHE"
    clahe_clip: float = param(Real(0.0, 256.0))
    clahe_tile: int = param(Integer(1, 64))

    @classmethod
    def enabled(cls, recipe) -> bool:
        return recipe.clahe

    def host(self, img: np.ndarray) -> np.ndarray:
        return cv2.createCLAHE(clipLimit=self.clahe_clip, tileGridSize=(self.clahe_tile, self.clahe_tile)).apply(img)

    def graph(self, g: GraphBuilder, x: str, height: int, width: int) -> str:
        n = self.clahe_tile
        layout = ClaheLayout.of(height, width, n, self.clahe_clip)
        if layout.tile_h < 1 or layout.tile_w < 1 or height <= layout.pad_bottom or width <= layout.pad_right:
            raise GraphRecipeError(f"content {height}x{width} is too small for {n}x{n} CLAHE tiles")
        ext = x
        if layout.pad_bottom or layout.pad_right:
            ext = g.op("Pad", x, g.ints(0, 0, 0, 0, 0, 0, layout.pad_bottom, layout.pad_right), mode="reflect")
        area = layout.tile_h * layout.tile_w
        tiles = g.op("Reshape", ext, g.ints(-1, n, layout.tile_h, n, layout.tile_w))
        tiles = g.op("Transpose", tiles, perm=[0, 1, 3, 2, 4])
        tiles = g.op("Reshape", tiles, g.ints(-1, n * n, area, 1))
        # Histogram of v = 16 hi + lo as a matrix product of two 16-wide one-hot codes (16x less
        # memory than a 256-wide one): hist[hi, lo] = sum over pixels of onehot(hi) x onehot(lo).
        sixteen = g.const(16.0)
        high = g.op("Floor", g.op("Div", tiles, sixteen))
        low = g.op("Sub", tiles, g.op("Mul", high, sixteen))
        codes = g.const(np.arange(16, dtype=np.float32).reshape(1, 1, 1, 16), hint="codes")
        high = g.cast(g.op("Equal", high, codes), np.float32)  # [N, n*n, area, 16]
        low = g.cast(g.op("Equal", low, codes), np.float32)
        hist = g.op("MatMul", g.op("Transpose", high, perm=[0, 1, 3, 2]), low)  # [N, n*n, 16, 16]
        hist = g.op("Reshape", hist, g.ints(-1, n * n, 256))
        # Clip, then deal the excess out evenly and the remainder one by one from bin 0 in steps.
        limit = g.const(float(layout.clip))
        excess = g.op("ReduceSum", g.op("Relu", g.op("Sub", hist, limit)), g.ints(2), keepdims=1)
        hist = g.op("Min", hist, limit)
        c256 = g.const(256.0)
        batch = g.op("Floor", g.op("Div", excess, c256))
        residual = g.op("Sub", excess, g.op("Mul", batch, c256))
        step = g.op("Max", g.op("Floor", g.op("Div", c256, g.op("Max", residual, g.const(1.0)))), g.const(1.0))
        bins = g.const(np.arange(256, dtype=np.float32), hint="bins")
        k = g.op("Floor", g.op("Div", bins, step))
        on_step = g.op("Equal", g.op("Mul", k, step), bins)
        extra = g.cast(g.op("And", on_step, g.op("Less", k, residual)), np.float32)
        hist = g.op("Add", g.op("Add", hist, batch), extra)
        cdf = g.op("CumSum", hist, g.const(2, np.int64))
        lut = g.clip8(g.op("Round", g.op("Mul", cdf, g.const(layout.lut_scale))))
        lut = g.op("Reshape", lut, g.ints(-1, n * n * 256))
        # Blend the four nearest tiles' LUTs per pixel, in OpenCV's order of operations.
        offsets, weights = layout.blend(height, width)
        value = g.cast(g.op("Reshape", x, g.ints(-1, height * width)), np.int64)
        picked = [g.op("GatherElements", lut, g.op("Add", value, g.const(off[None], np.int64, "tile")), axis=1)
                  for off in offsets]
        left, right, top, bottom = (g.const(w[None], hint="clahe_w") for w in weights)
        upper = g.op("Add", g.op("Mul", picked[0], left), g.op("Mul", picked[1], right))
        lower = g.op("Add", g.op("Mul", picked[2], left), g.op("Mul", picked[3], right))
        out = g.op("Add", g.op("Mul", upper, top), g.op("Mul", lower, bottom))
        out = g.clip8(g.op("Round", out))
        return g.op("Reshape", out, g.ints(-1, 1, height, width))
