"""cv2.fastNlMeansDenoising on 8-bit grey, tiled through shared memory, in int32 arithmetic.

OpenCV's arithmetic (FastNlMeansDenoisingInvoker): the image is extended by reflect-101 by
``search // 2 + template // 2``; for each pixel and each offset of the search window, the sum of
squared differences of the two ``template`` x ``template`` patches, shifted right so that it
indexes a table of fixed-point weights (``tables.nlm_weights``); the estimate is
sum(weight x pixel) and sum(weight), both int32 by the choice of OpenCV's fixed-point scale, and
the result their rounded quotient in unsigned arithmetic.

The tiling: a block owns a TILE_W x TILE_H tile of output pixels. It copies the tile's window
(the tile plus the border on each side, reflect-101 at the image edges) and the non-zero weights
into shared memory once; everything after that reads shared memory only. Each thread walks
``ROWS`` pixels down one column for one slice of the search offsets, so that a patch sum costs one
new row of ``template`` squared differences per pixel (the rows already summed are kept in a ring)
instead of ``template``^2; the slices' int32 partial sums meet in shared memory through atomic adds,
which are exact in any order.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from .device import target
from .tables import NLM_ROWS as ROWS
from .tables import NLM_SLICES as SLICES
from .tables import NLM_TILE_H as TILE_H
from .tables import NLM_TILE_W as TILE_W

# numba.cuda, bound when the first kernel is built; a module global because the simulator
# swaps the module global of that name for its own while a kernel runs
cuda = None

THREADS_Y = TILE_H // ROWS


@lru_cache(maxsize=8)
def nlm_kernel(template: int, search: int, table_len: int, shift: int):
    """The NLM kernel for one window geometry (its sizes are compile-time constants)."""
    dev = target()
    global cuda
    cuda, reflect101 = dev.cuda, dev.reflect101
    t, s = template // 2, search // 2
    border = t + s
    win_h, win_w = TILE_H + 2 * border, TILE_W + 2 * border
    win_size = win_h * win_w
    offsets = search * search
    threads = TILE_W * THREADS_Y * SLICES

    @dev.device
    def row_ssd(win, centre, other):
        """Sum over one patch row of squared differences; ``centre`` and ``other`` are the flat
        window indices of the two rows' first pixels, unsigned so that no negative-index
        handling is compiled in."""
        acc = np.int32(0)
        for j in range(template):
            d = np.int32(win[centre + j] - win[other + j])
            acc = np.int32(acc + d * d)
        return acc

    @cuda.jit
    def nlm(src, dst, table):
        height, width = src.shape[0], src.shape[1]
        win = cuda.shared.array(win_size, np.int32)  # flat: row * win_w + column
        weights = cuda.shared.array(table_len, np.int32)
        tile_est = cuda.shared.array((TILE_H, TILE_W), np.int32)
        tile_sum = cuda.shared.array((TILE_H, TILE_W), np.int32)
        tx, ty, tz = cuda.threadIdx.x, cuda.threadIdx.y, cuda.threadIdx.z
        lane = (tz * THREADS_Y + ty) * TILE_W + tx
        x0, y0 = cuda.blockIdx.x * TILE_W, cuda.blockIdx.y * TILE_H
        for i in range(lane, win_size, threads):
            wy = i // win_w
            wx = i - wy * win_w
            win[i] = np.int32(src[reflect101(y0 + wy - border, height), reflect101(x0 + wx - border, width)])
        for i in range(lane, table_len, threads):
            weights[i] = table[i]
        for i in range(lane, TILE_H * TILE_W, threads):
            tile_est[i // TILE_W, i % TILE_W] = 0
            tile_sum[i // TILE_W, i % TILE_W] = 0
        cuda.syncthreads()

        est = cuda.local.array(ROWS, np.int32)
        total_w = cuda.local.array(ROWS, np.int32)
        ring = cuda.local.array(template, np.int32)
        first = ty * ROWS  # tile row of this thread's first pixel
        # flat window index of the top-left corner of that pixel's patch
        corner = (first + border - t) * win_w + tx + border - t
        if x0 + tx < width and y0 + first < height:
            for r in range(ROWS):
                est[r] = 0
                total_w[r] = 0
            for o in range(tz, offsets, SLICES):
                dy = o // search
                offset = (dy - s) * win_w + o - dy * search - s  # the search offset, flat
                ssd = np.int32(0)
                for k in range(template - 1):  # the patch rows above the last, for the first pixel
                    row = corner + k * win_w
                    v = row_ssd(win, np.uint32(row), np.uint32(row + offset))
                    ring[k] = v
                    ssd = np.int32(ssd + v)
                for r in range(ROWS):
                    row = corner + (r + template - 1) * win_w
                    v = row_ssd(win, np.uint32(row), np.uint32(row + offset))
                    ring[(r + template - 1) % template] = v
                    ssd = np.int32(ssd + v)
                    index = ssd >> shift
                    if index < table_len:
                        w = weights[index]
                        total_w[r] += w
                        est[r] += w * win[corner + (r + t) * win_w + t + offset]
                    ssd = np.int32(ssd - ring[r % template])
            for r in range(ROWS):
                cuda.atomic.add(tile_est, (first + r, tx), est[r])
                cuda.atomic.add(tile_sum, (first + r, tx), total_w[r])
        cuda.syncthreads()

        if tz == 0:
            for r in range(ROWS):
                y, x = y0 + first + r, x0 + tx
                if y < height and x < width:
                    # OpenCV's rounded quotient, in unsigned 32-bit arithmetic as OpenCV's
                    w = np.uint32(tile_sum[first + r, tx])
                    dst[y, x] = np.uint8(np.uint32(np.uint32(tile_est[first + r, tx]) + (w >> np.uint32(1))) // w)

    return nlm


def launch(src, dst, table, template: int, search: int, shift: int, stream) -> None:
    """Denoise ``src`` (uint8 [H, W]) into ``dst`` with the weights ``table`` (int32 device array)."""
    kernel = nlm_kernel(template, search, int(table.shape[0]), shift)
    height, width = src.shape
    grid = ((width + TILE_W - 1) // TILE_W, (height + TILE_H - 1) // TILE_H)
    kernel[grid, (TILE_W, THREADS_Y, SLICES), stream](src, dst, table)


def device_times(frame: np.ndarray, h: float, template: int, search: int, rounds: int) -> tuple[list[float], np.ndarray]:
    """The kernel alone on one uint8 frame: milliseconds per launch from CUDA events (device time,
    no copies), and its output, for the GPU check."""
    from .tables import nlm_weights

    dev = target()
    table, shift = nlm_weights(h, template, search)
    src, table_dev = dev.cuda.to_device(np.ascontiguousarray(frame)), dev.cuda.to_device(table)
    dst = dev.cuda.device_array_like(src)
    stream = dev.cuda.stream()
    launch(src, dst, table_dev, template, search, shift, stream)  # compiles
    stream.synchronize()
    times = []
    for _ in range(rounds):
        start, end = dev.cuda.event(), dev.cuda.event()
        start.record(stream)
        launch(src, dst, table_dev, template, search, shift, stream)
        end.record(stream)
        end.synchronize()
        times.append(dev.cuda.event_elapsed_time(start, end))
    return times, dst.copy_to_host()
