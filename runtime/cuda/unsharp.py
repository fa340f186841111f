"""addWeighted(img, a, GaussianBlur(img, sigma), 1 - a, 0) on 8-bit grey, one tile per block.

OpenCV blurs 8-bit images in fixed point: integer taps in units of 1/256 (``tables.gaussian_taps``),
a horizontal pass whose sums fit 16 bits exactly, a vertical pass in 1/65,536 units, rounded half
up (reflect-101 borders). A block copies its tile plus the blur radius into shared memory, runs the
horizontal pass into shared memory and the vertical pass per pixel, all in int32. The blend is
OpenCV's float32 ``fma(img, a, blur * (1 - a))`` (its vector path), rounded to even and clipped.
One launch serves the N frames of a batch ([N, h, w] arrays): the grid's z is the frame.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from .device import grid_frames, target

# numba.cuda, bound when the first kernel is built; a module global because the simulator
# swaps the module global of that name for its own while a kernel runs
cuda = None

TILE_W, TILE_H = 32, 8


@lru_cache(maxsize=8)
def unsharp_kernel(ksize: int, amount: float, beta: float):
    dev = target()
    global cuda
    cuda, reflect101, fma_rn, mul_rn, to_u8 = dev.cuda, dev.reflect101, dev.fma_rn, dev.mul_rn, dev.to_u8
    r = ksize // 2
    win_h, win_w = TILE_H + 2 * r, TILE_W + 2 * r
    win_size, across_size = win_h * win_w, win_h * TILE_W
    threads = TILE_W * TILE_H
    a, b = np.float32(amount), np.float32(beta)

    @cuda.jit
    def unsharp(src, dst, taps):
        height, width = src.shape[1], src.shape[2]
        f = cuda.blockIdx.z
        win = cuda.shared.array((win_h, win_w), np.int32)
        across = cuda.shared.array((win_h, TILE_W), np.int32)
        k = cuda.shared.array(ksize, np.int32)
        tx, ty = cuda.threadIdx.x, cuda.threadIdx.y
        lane = ty * TILE_W + tx
        x0, y0 = cuda.blockIdx.x * TILE_W, cuda.blockIdx.y * TILE_H
        for i in range(lane, win_size, threads):
            wy = i // win_w
            wx = i - wy * win_w
            win[wy, wx] = np.int32(src[f, reflect101(y0 + wy - r, height), reflect101(x0 + wx - r, width)])
        for i in range(lane, ksize, threads):
            k[i] = taps[i]
        cuda.syncthreads()

        for i in range(lane, across_size, threads):
            wy = i // TILE_W
            wx = i - wy * TILE_W
            acc = np.int32(0)
            for j in range(ksize):
                acc = np.int32(acc + k[j] * win[wy, wx + j])
            across[wy, wx] = acc
        cuda.syncthreads()

        x, y = x0 + tx, y0 + ty
        if y < height and x < width:
            acc = np.int32(0)
            for i in range(ksize):
                acc = np.int32(acc + k[i] * across[ty + i, tx])
            blur = (acc + 32768) >> 16
            dst[f, y, x] = to_u8(fma_rn(np.float32(win[ty + r, tx + r]), a, mul_rn(np.float32(blur), b)))

    return unsharp


def launch(src, dst, taps, amount: float, stream) -> None:
    """Unsharp-mask the frames ``src`` (uint8 [N, h, w]) into ``dst`` with the fixed-point Gaussian
    ``taps`` (int32 device array), one launch."""
    # addWeighted gets beta = 1 - amount in double and computes in float32
    kernel = unsharp_kernel(int(taps.shape[0]), float(amount), float(1.0 - amount))
    kernel[grid_frames(*src.shape, (TILE_W, TILE_H)), (TILE_W, TILE_H), stream](src, dst, taps)
