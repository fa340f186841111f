"""cv2.createCLAHE(clip, (n, n)).apply on 8-bit grey: one block per row of tiles builds their
LUTs (one warp per tile), then one thread per pixel blends the four nearest tiles' LUTs; each of
the two launches serves the N frames of a batch ([N, h, w] arrays, the frame the grid's last axis).

OpenCV's arithmetic (CLAHE_CalcLut_Body, CLAHE_Interpolation_Body): the image is extended
(reflect-101) at the bottom and right to a multiple of the grid; each tile's 256-bin histogram is
clipped at ``int(clip * area / 256)`` (at least 1), the clipped count dealt out evenly and its
remainder one by one from bin 0 in steps of ``max(256 // remainder, 1)``; the LUT is the running
sum times float32(255 / area), rounded to even. The blend uses per-row and per-column float32
weights (``tables.ClaheTables``) in OpenCV's order: (upper-left x (1 - xa) + upper-right x xa) x
(1 - ya) + (lower-left x (1 - xa) + lower-right x xa) x ya, each product and sum rounded alone.
"""

from __future__ import annotations

from functools import lru_cache
from types import SimpleNamespace

import numpy as np

from .device import grid_frames, target

# numba.cuda, bound when the first kernel is built; a module global because the simulator
# swaps the module global of that name for its own while a kernel runs
cuda = None

LANES = 32  # threads per tile; each owns BINS consecutive histogram bins
BINS = 256 // LANES
BLOCK = (32, 8)


@lru_cache(maxsize=8)
def lut_kernel(tiles: int, tile_h: int, tile_w: int, clip: int, lut_scale: float):
    """The LUT kernel for one layout: block (``b``, ``f``) builds the LUTs of tile row ``b`` of
    frame ``f``, thread (lane, column) works on tile (b, column)."""
    dev = target()
    global cuda
    cuda, reflect101, mul_rn, rint = dev.cuda, dev.reflect101, dev.mul_rn, dev.rint
    area = tile_h * tile_w
    scale = np.float32(lut_scale)

    @cuda.jit
    def clahe_lut(src, lut):
        height, width = src.shape[1], src.shape[2]
        hist = cuda.shared.array((tiles, 256), np.int32)
        partial = cuda.shared.array((tiles, LANES), np.int32)
        clipped = cuda.shared.array(tiles, np.int32)
        lane, tx = cuda.threadIdx.x, cuda.threadIdx.y
        ty, f = cuda.blockIdx.x, cuda.blockIdx.y
        first = lane * BINS
        for b in range(BINS):
            hist[tx, first + b] = 0
        if lane == 0:
            clipped[tx] = 0
        cuda.syncthreads()

        for i in range(lane, area, LANES):
            r = i // tile_w
            c = i - r * tile_w
            v = src[f, reflect101(ty * tile_h + r, height), reflect101(tx * tile_w + c, width)]
            cuda.atomic.add(hist, (tx, np.int32(v)), 1)
        cuda.syncthreads()

        over = np.int32(0)
        for b in range(BINS):
            count = hist[tx, first + b]
            if count > clip:
                over = np.int32(over + count - clip)
                hist[tx, first + b] = clip
        cuda.atomic.add(clipped, tx, over)
        cuda.syncthreads()

        excess = clipped[tx]
        batch = excess // 256
        residual = excess - batch * 256
        step = max(256 // residual, 1) if residual > 0 else 257
        own = np.int32(0)
        for b in range(BINS):
            i = first + b
            count = hist[tx, i] + batch
            if i % step == 0 and i // step < residual:
                count += 1
            hist[tx, i] = count
            own = np.int32(own + count)
        partial[tx, lane] = own
        cuda.syncthreads()

        running = np.int32(0)
        for k in range(lane):
            running = np.int32(running + partial[tx, k])
        for b in range(BINS):
            running = np.int32(running + hist[tx, first + b])
            lut[f, ty * tiles + tx, first + b] = np.uint8(min(np.int32(rint(mul_rn(np.float32(running), scale))), 255))

    return clahe_lut


@lru_cache(maxsize=1)
def kernels() -> SimpleNamespace:
    dev = target()
    global cuda
    cuda, add_rn, mul_rn, to_u8 = dev.cuda, dev.add_rn, dev.mul_rn, dev.to_u8

    @cuda.jit
    def clahe_apply(src, dst, lut, tiles, rows, row_w, cols, col_w):
        x, y, f = cuda.grid(3)
        if y < dst.shape[1] and x < dst.shape[2]:
            v = np.int32(src[f, y, x])
            upper, lower = rows[y, 0] * tiles, rows[y, 1] * tiles
            left, right = cols[x, 0], cols[x, 1]
            xa1, xa = col_w[x, 0], col_w[x, 1]
            top = add_rn(mul_rn(np.float32(lut[f, upper + left, v]), xa1),
                         mul_rn(np.float32(lut[f, upper + right, v]), xa))
            bottom = add_rn(mul_rn(np.float32(lut[f, lower + left, v]), xa1),
                            mul_rn(np.float32(lut[f, lower + right, v]), xa))
            dst[f, y, x] = to_u8(add_rn(mul_rn(top, row_w[y, 0]), mul_rn(bottom, row_w[y, 1])))

    return SimpleNamespace(clahe_apply=clahe_apply)


def launch(src, dst, luts, layout, rows, row_w, cols, col_w, stream) -> None:
    """CLAHE of the frames ``src`` (uint8 [N, h, w]) into ``dst``; ``luts`` is a uint8
    [N, tiles^2, 256] device scratch buffer and ``layout`` the ``tables.ClaheTables`` whose row /
    column tables are on the device. Two launches whatever N."""
    n = layout.tiles
    build = lut_kernel(n, layout.tile_h, layout.tile_w, layout.clip, float(layout.lut_scale))
    build[(n, src.shape[0]), (LANES, n), stream](src, luts)
    kernels().clahe_apply[grid_frames(*src.shape, BLOCK), BLOCK, stream](src, dst, luts, n, rows, row_w, cols, col_w)
