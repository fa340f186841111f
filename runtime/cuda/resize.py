"""The letterbox shrink as cv2.resize(INTER_AREA) computes it, one thread per output pixel of
each of the N frames of a batch ([N, h, w] arrays; the grid's z is the frame).

Integer factors: OpenCV sums the block as integers and rounds the mean half up for a 2x2 block
(its vector path) and ``sum * float32(1 / area)`` to even otherwise. Any other shrink: per output
pixel, float32 sums of source x weight along each source row (ascending columns), then
weight x row sum down the rows, each product and sum rounded on its own as OpenCV's loops do.
"""

from __future__ import annotations

from functools import lru_cache
from types import SimpleNamespace

import numpy as np

from .device import grid_frames, target

# numba.cuda, bound when the first kernel is built; a module global because the simulator
# swaps the module global of that name for its own while a kernel runs
cuda = None

BLOCK = (32, 8)


@lru_cache(maxsize=1)
def kernels() -> SimpleNamespace:
    dev = target()
    global cuda
    cuda, add_rn, mul_rn, to_u8 = dev.cuda, dev.add_rn, dev.mul_rn, dev.to_u8

    @cuda.jit
    def area_block(src, dst, fy, fx, half_up, scale):
        """dst[f, y, x] = the mean of the fy x fx block of src[f] at (y * fy, x * fx)."""
        x, y, f = cuda.grid(3)
        if y < dst.shape[1] and x < dst.shape[2]:
            total = np.int32(0)
            for i in range(fy):
                for j in range(fx):
                    total = np.int32(total + np.int32(src[f, y * fy + i, x * fx + j]))
            if half_up:
                dst[f, y, x] = np.uint8(min((total + 2) >> 2, 255))
            else:
                dst[f, y, x] = to_u8(mul_rn(np.float32(total), scale))

    @cuda.jit
    def area_taps(src, dst, row_index, row_weight, col_index, col_weight):
        """dst[f, y, x] = sum_j row_weight[y, j] * sum_k col_weight[x, k] * src[f, row_index[y, j], col_index[x, k]];
        padded taps have weight 0 and add nothing."""
        x, y, f = cuda.grid(3)
        if y < dst.shape[1] and x < dst.shape[2]:
            total = np.float32(0)
            for j in range(row_index.shape[1]):
                sy = row_index[y, j]
                row = np.float32(0)
                for k in range(col_index.shape[1]):
                    row = add_rn(row, mul_rn(np.float32(src[f, sy, col_index[x, k]]), col_weight[x, k]))
                term = mul_rn(row_weight[y, j], row)
                total = term if j == 0 else add_rn(total, term)
            dst[f, y, x] = to_u8(total)

    return SimpleNamespace(area_block=area_block, area_taps=area_taps)


def launch_block(src, dst, fy: int, fx: int, half_up: bool, stream) -> None:
    """Shrink the frames ``src`` (uint8 [N, H, W]) by whole factors into ``dst`` [N, h, w], one launch."""
    scale = np.float32(1) / np.float32(fy * fx)
    kernels().area_block[grid_frames(*dst.shape, BLOCK), BLOCK, stream](src, dst, fy, fx, half_up, scale)


def launch_taps(src, dst, rows, row_w, cols, col_w, stream) -> None:
    """Shrink the frames ``src`` (uint8 [N, H, W]) by the area taps into ``dst`` [N, h, w], one launch."""
    kernels().area_taps[grid_frames(*dst.shape, BLOCK), BLOCK, stream](src, dst, rows, row_w, cols, col_w)
